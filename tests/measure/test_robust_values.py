"""Metrics never crash on finite input: subnormal, huge, constant, rank-1, zero rows, an eigensolver that
does not converge; NaN/Inf is one clear error; a metric that cannot be computed is null with its reason."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from prism_native.errors import FileFormatError
from prism_native.measure import eigen, spectral
from prism_native.measure.quant_error import measure_errors
from prism_native.measure.results import Analysis, ModelIdentity, TensorResult
from prism_native.measure.spectral import gram_scale, spectral_metrics
from prism_native.measure.values import F16_MAX, screen

RNG = np.random.default_rng(7)
W = (RNG.standard_normal((96, 64)) * 0.02).astype(np.float32)


def test_ordinary_weights_are_not_rescaled():
    assert gram_scale(float(np.square(W.astype(np.float64)).sum()), W.size) == 1.0


@pytest.mark.parametrize("factor", [2.0 ** -140, 2.0 ** 120])   # subnormal float32 / squares beyond float32
def test_scale_extremes_give_the_same_metrics(factor):
    """Scaled by a power of two internally, the metrics are those of the same values at a normal scale."""
    extreme = (W.astype(np.float64) * factor).astype(np.float32)          # subnormals lose low bits here
    normal = (extreme.astype(np.float64) / factor).astype(np.float32)     # exactly the same values
    ref, got = spectral_metrics(normal, "exact"), spectral_metrics(extreme, "exact")
    assert got.method == ref.method == "exact"
    assert got.alpha == pytest.approx(ref.alpha, rel=1e-6)
    assert got.dominance == pytest.approx(ref.dominance, rel=1e-6)
    assert got.spectral_norm / factor == pytest.approx(ref.spectral_norm, rel=1e-6)
    assert got.imbalance == pytest.approx(ref.imbalance, rel=1e-9)


def test_largest_float32_values_are_measured():
    w = np.where(W > 0, np.float32(3.4e38), np.float32(-3.4e38))
    m = spectral_metrics(w, "exact")
    assert math.isfinite(m.spectral_norm) and m.spectral_norm > 3.4e38 and 0 < m.dominance <= 1.0


def test_degenerate_matrices_give_nan_with_reasons():
    zero = spectral_metrics(np.zeros((96, 64), np.float32), "exact")
    assert math.isnan(zero.alpha) and math.isnan(zero.dominance) and zero.spectral_norm == 0.0
    assert dict(zero.undefined) == {"alpha": "zero matrix", "dominance": "zero matrix", "imbalance": "zero matrix"}
    const = spectral_metrics(np.full((96, 64), 0.03, np.float32), "exact")
    assert math.isnan(const.alpha) and dict(const.undefined) == {
        "alpha": "rank <= k = 10: the tail reaches the zero eigenvalues"}
    assert const.dominance == pytest.approx(1.0, rel=1e-6)
    assert const.spectral_norm == pytest.approx(0.03 * math.sqrt(96 * 64), rel=1e-6)
    assert const.imbalance == 0.0
    rows = W.copy()
    rows[::2] = 0
    half = spectral_metrics(rows, "exact")
    assert math.isfinite(half.alpha) and half.undefined == ()


def test_an_eigensolver_that_fails_falls_back(monkeypatch):
    real = eigen.exact_eigenvalues

    def float32_fails(g):
        if g.dtype == np.float32:
            raise np.linalg.LinAlgError("did not converge")
        return real(g)
    monkeypatch.setattr(spectral, "exact_eigenvalues", float32_fails)
    ref = spectral_metrics(W, "exact", config=spectral.SpectralConfig(precision="float64"))
    got = spectral_metrics(W, "exact")
    assert got.method == "exact+float64" and got.alpha == ref.alpha and got.spectral_norm == ref.spectral_norm

    def always_fails(g):
        raise np.linalg.LinAlgError("did not converge")
    monkeypatch.setattr(spectral, "exact_eigenvalues", always_fails)
    got = spectral_metrics(W, "exact")
    assert got.method == "line-norm-bound" and math.isnan(got.alpha)
    assert dict(got.undefined) == {"alpha": "the eigensolver did not converge (float32 nor float64)"}
    col = float(np.sqrt(np.square(W.astype(np.float64)).sum(axis=0).max()))
    row = float(np.sqrt(np.square(W.astype(np.float64)).sum(axis=1).max()))
    assert got.spectral_norm == pytest.approx(max(row, col), rel=1e-12)


def test_screen_refuses_nan_and_inf_and_knows_the_range():
    w = W.copy()
    w[5, 3] = np.inf
    with pytest.raises(FileFormatError) as e:
        screen(w, "m.gguf: tensor 'x'")
    assert str(e.value) == "m.gguf: tensor 'x' has NaN or Inf values (row 5 of 96); llama-quantize cannot quantize it"
    assert not screen(W, "x").beyond_f16
    w[5, 3] = -1e7
    s = screen(w, "x")
    assert s.beyond_f16 and s.max_abs == 1e7 and F16_MAX < 1e7


def test_types_whose_float16_scales_overflow_get_a_reason_not_an_error():
    x = (RNG.standard_normal((8, 256)) * 0.05).astype(np.float32)
    x[3, 17] = 1e6     # Q4_0's scale is max/8: beyond float16 from 524,032; Q8_0 (max/127) still fits
    m = measure_errors(x, False, where="x", n_mat=1, candidates=("Q8_0", "Q4_0"), weights=None, sample_values=0,
                       seed=0, delta=0.1, threads=1, max_abs=1e6)
    assert m.errors["Q4_0"] == {"type": "Q4_0", "rel_error": None, "overflow": True, "reason": (
        "Q4_0's float16 block scales overflow on values up to 1e+06; llama-quantize rejects the result")}
    assert m.errors["Q8_0"]["rel_error"] > 0


def test_results_file_is_valid_json_with_reasons(tmp_path):
    r = TensorResult("blk.0.attn_q.weight", "attn_q", 0, [256, 256], 65536, "F32",
                     {"Q4_0": {"type": "Q4_0", "rel_error": None, "reason": "overflow"},
                      "Q8_0": {"type": "Q8_0", "rel_error": math.inf}},
                     {"2": math.nan, "4": 1e-3}, math.nan, math.nan, math.nan, math.nan, 0.0, math.nan, "exact", 256,
                     False, 0.1, undefined={"alpha": "zero matrix"})
    a = Analysis(ModelIdentity.from_json({"path": "m"}), {}, None, tensors={r.name: r}, complete=True)
    p = tmp_path / "r.json"
    a.save(p)
    d = json.loads(p.read_text())["tensors"][r.name]
    assert d["alpha"] is None and d["osqe"]["2"] is None and d["errors"]["Q8_0"]["rel_error"] is None
    assert d["undefined"] == {"alpha": "zero matrix"}
    back = Analysis.load(p).tensors[r.name]
    assert math.isnan(back.rel_error("Q4_0")) and not back.writable("Q4_0") and math.isnan(back.osqe["2"])


def test_nan_in_a_copied_tensor_is_refused_before_measuring(tmp_path):
    """llama-quantize validates the tensors it copies too, so no plan could be carried out."""
    from prism_native.measure.analyze import Settings, analyze
    from prism_native.read.model import open_model
    from support import synth

    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=1, n_vocab=256))
    t = open_model(path).tensor("blk.0.ffn_norm.weight")
    data = bytearray(path.read_bytes())
    data[t.offset + 8:t.offset + 12] = np.float32(np.nan).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError) as e:
        analyze(open_model(path), Settings(threads=1))
    assert str(e.value) == f"{path}: tensor 'blk.0.ffn_norm.weight' has NaN or Inf values; llama-quantize refuses to copy it"
