"""analyze: every metric of every quantizable tensor, fallbacks, imatrix weighting, results file, resume."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from prism_native.cli import main
from prism_native.llama.quantizable import quantizable_tensors
from prism_native.measure import analyze as an
from prism_native.measure.quant_error import CANDIDATES
from prism_native.measure.results import Analysis
from prism_native.plan.score import Weights, score_analysis
from prism_native.quant import dequantize, quantize
from prism_native.read.imatrix import load_imatrix
from prism_native.read.model import open_model
from support import synth

SMALL = synth.Spec(n_layer=4, n_embd=256, n_ff=512, n_vocab=512, seed=3)
TIED_320 = synth.Spec(tied=True, n_embd=320, n_head=5, n_ff=640, n_layer=3, seed=4)


@pytest.fixture(scope="module")
def small(synthetic):
    return open_model(synthetic("an-small", SMALL))


def _rel(x: np.ndarray, t: str, w: np.ndarray | None = None) -> float:
    y = dequantize(quantize(x, t, w), t, x.shape).astype(np.float64)
    ww = np.ones(x.shape[1]) if w is None else w.astype(np.float64)
    return float(((x - y) ** 2 * ww).sum() / (x.astype(np.float64) ** 2 * ww).sum())


def test_every_quantizable_tensor_measured(small):
    a = an.analyze(small, an.Settings(mode="exact"))
    score_analysis(a, Weights())
    names = {t.name for t in quantizable_tensors(small)}
    assert set(a.tensors) == names and a.complete
    for r in a.tensors.values():
        assert set(CANDIDATES) <= set(r.errors)
        o = r.osqe
        assert o["2"] > o["3"] > o["4"] > o["6"] > 0
        assert r.fragility == pytest.approx(math.log(o["2"] / o["4"]))
        assert 0 < r.boundary < 0.5 and 1 < r.alpha < 50 and 0 < r.dominance < 1
        assert math.isfinite(r.sensitivity) and r.sensitivity > 0


def test_errors_equal_independent_quantize_dequantize(small):
    t = small.tensor("blk.1.ffn_down.weight")
    r = an.measure_tensor(small, t, an.Settings(mode="exact"), None)
    x = small.read(t).astype(np.float32)
    for typ in ("Q2_K", "Q4_K", "IQ4_XS", "Q8_0"):
        assert r.rel_error(typ) == pytest.approx(_rel(x, typ), rel=1e-9)


def test_fallback_error_is_the_written_types(synthetic):
    m = open_model(synthetic("an-tied", TIED_320))
    t = m.tensor("blk.0.attn_q.weight")           # rows of 320: K-types fall back
    r = an.measure_tensor(m, t, an.Settings(mode="exact"), None)
    assert r.errors["Q3_K"]["type"] == "Q4_0" and r.errors["Q4_K"]["type"] == "Q5_0"
    assert r.errors["Q6_K"]["type"] == "Q8_0" and r.errors["IQ4_XS"]["type"] == "IQ4_NL"
    assert r.rel_error("Q3_K") == r.rel_error("Q2_K") == pytest.approx(_rel(m.read(t), "Q4_0"), rel=1e-9)


def test_threads_do_not_change_results(small):
    t = small.tensor("blk.2.attn_q.weight")
    one = an.measure_tensor(small, t, an.Settings(threads=1), None)
    two = an.measure_tensor(small, t, an.Settings(threads=2), None)
    assert one.errors == two.errors and one.boundary == two.boundary


def test_scratch_buffer_does_not_change_results(small, synthetic):
    """A worker's reused float32 buffer (larger, holding the previous tensor) gives the same metrics, for
    F16 and for a dequantized input."""
    from prism_native.quant import Scratch

    scratch = Scratch()
    q8 = open_model(synthetic("an-q8", synth.Spec(n_layer=1, dtype="Q8_0")))
    cases = [(small, "token_embd.weight"), (small, "blk.2.attn_q.weight"), (q8, "blk.0.ffn_down.weight")]
    for m, name in cases:
        t = m.tensor(name)
        plain = an.measure_tensor(m, t, an.Settings(threads=1), None)
        reused = an.measure_tensor(m, t, an.Settings(threads=1), None, scratch)
        assert dataclasses.replace(plain, seconds=0) == dataclasses.replace(reused, seconds=0), name


def test_default_mode_samples_rows_and_stays_close(small):
    t = small.tensor("token_embd.weight")
    exact = an.measure_tensor(small, t, an.Settings(mode="exact"), None)
    samp = an.measure_tensor(small, t, an.Settings(sample_values=256 * 64), None)
    assert samp.rows_measured == 64 < exact.rows_measured
    assert samp.rel_error("Q4_K") == pytest.approx(exact.rel_error("Q4_K"), rel=0.1)


def test_imatrix_weights_errors(synthetic, tmp_path):
    path = synthetic("an-small", SMALL)
    synth.write_imatrix(tmp_path / "im.gguf", SMALL)
    im = load_imatrix(tmp_path / "im.gguf")
    m = open_model(path)
    t = m.tensor("blk.0.ffn_up.weight")
    r = an.measure_tensor(m, t, an.Settings(mode="exact"), im)
    w = im.weights_for(t.name, t.n_per_row)[0]
    assert r.imatrix
    assert r.rel_error("Q3_K") == pytest.approx(_rel(m.read(t), "Q3_K", w), rel=1e-9)


def test_results_file_roundtrip_and_resume(small, tmp_path, monkeypatch):
    out = tmp_path / "r.prism.json"
    calls: list[str] = []
    real = an.measure_tensor

    def counting(model, t, settings, imatrix, scratch=None):
        calls.append(t.name)
        if len(calls) == 5 and not hasattr(counting, "done"):
            counting.done = True
            raise KeyboardInterrupt
        return real(model, t, settings, imatrix, scratch)

    monkeypatch.setattr(an, "measure_tensor", counting)
    with pytest.raises(KeyboardInterrupt):
        an.analyze(small, an.Settings(), out=out)
    partial = Analysis.load(out)
    assert not partial.complete and 1 <= len(partial.tensors) < len(quantizable_tensors(small))
    calls.clear()
    full = an.analyze(small, an.Settings(), out=out)
    assert len(calls) == len(quantizable_tensors(small)) - len(partial.tensors)
    again = Analysis.load(out)
    assert again.complete and set(again.tensors) == set(full.tensors)
    d = json.loads(out.read_text())
    assert d["model"]["header_sha256"] and d["settings"]["mode"] == "default" and d["tool"].startswith("prism_native")


def test_cli_analyze_writes_results(synthetic, tmp_path, capsys):
    path = synthetic("an-small", SMALL)
    out = tmp_path / "x.prism.json"
    assert main(["analyze", str(path), "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "ffn_down" in text and out.exists()


def test_cli_analyze_bad_input(tmp_path, capsys):
    p = tmp_path / "broken.gguf"
    p.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 5)
    assert main(["analyze", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.gguf" in err[0]


def test_nan_weights_are_a_clear_error(tmp_path, capsys):
    spec = synth.Spec(n_layer=1, n_embd=256, n_ff=256, dtype="F32")
    path = tmp_path / "nan.gguf"
    synth.write(path, spec)
    m = open_model(path)
    t = m.tensor("blk.0.attn_q.weight")
    data = bytearray(path.read_bytes())
    data[t.offset:t.offset + 4] = np.array([np.nan], np.float32).tobytes()
    path.write_bytes(bytes(data))
    assert main(["analyze", str(path), "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "blk.0.attn_q.weight" in err and "NaN" in err
