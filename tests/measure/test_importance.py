"""The data-free importance matrix: what it estimates, the file it writes, and how llama-quantize takes it."""
from __future__ import annotations

import subprocess

import gguf
import numpy as np
import pytest
from scipy.stats import spearmanr
from support import synth

import prism_native
from prism_native.cli import main
from prism_native.measure import importance as imp
from prism_native.read.imatrix import load_imatrix
from prism_native.read.model import open_model

DENSE = synth.Spec(n_layer=3, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, n_vocab=300, dtype="F32", seed=3)


def _gammas(spec: synth.Spec, seed: int = 5) -> dict[str, np.ndarray]:
    """Norms with a known, uneven profile: log-normal gains and a few outlier channels."""
    rng = np.random.default_rng(seed)
    out = {}
    for il in range(spec.n_layer):
        for n in ("attn_norm", "ffn_norm"):
            g = np.exp(rng.normal(0.0, 0.5, spec.n_embd)).astype(np.float32)
            g[rng.choice(spec.n_embd, 4, replace=False)] *= 6
            out[f"blk.{il}.{n}.weight"] = g
    return out


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    path = tmp_path_factory.mktemp("importance") / "dense.gguf"
    gammas = _gammas(DENSE)
    synth.write(path, DENSE, values_of=gammas)
    return path, gammas


def test_inputs_of_normed_layers_follow_their_norms(dense):
    path, gammas = dense
    est = imp.estimate_importance(open_model(path))
    assert not est.warnings and not est.uniform
    for il in range(DENSE.n_layer):
        for name, norm in (("attn_q", "attn_norm"), ("attn_k", "attn_norm"), ("ffn_up", "ffn_norm")):
            got = est.entries[f"blk.{il}.{name}.weight"].importance[0]
            g2 = gammas[f"blk.{il}.{norm}.weight"] ** 2
            assert spearmanr(got, g2).statistic > 0.9, (il, name)
            assert set(np.argsort(g2)[-4:]) <= set(np.argsort(got)[-8:])    # the outlier channels


def test_every_recorded_matrix_is_covered(dense):
    path, _ = dense
    m = open_model(path)
    est = imp.estimate_importance(m)
    want = {t.name for t in m.tensors if t.name.startswith("blk.") and len(t.shape) == 2 and t.shape[1] > 1}
    assert set(est.entries) == want
    for e in est.entries.values():
        assert e.in_sum2.dtype == np.float32 and np.all(e.in_sum2 > 0) and np.all(np.isfinite(e.in_sum2))


def test_ffn_down_moments_match_a_monte_carlo_glu():
    rng = np.random.default_rng(0)
    n = 6
    gate = imp.Moments(rng.normal(0, 1, n), rng.uniform(0.2, 3, n))
    up = imp.Moments(rng.normal(0, 1, n), rng.uniform(0.2, 3, n))
    cov = 0.6 * np.sqrt(gate.var * up.var) * rng.uniform(-1, 1, n)
    got = imp.glu_moments(gate, up, cov, "silu")
    z1, z2 = rng.standard_normal((2, 400_000, n))
    g = gate.mean + np.sqrt(gate.var) * z1
    rho = cov / np.sqrt(gate.var * up.var)
    u = up.mean + np.sqrt(up.var) * (rho * z1 + np.sqrt(1 - rho ** 2) * z2)
    s = g / (1 + np.exp(-g)) * u
    np.testing.assert_allclose(got.sq, (s * s).mean(axis=0), rtol=0.03)
    np.testing.assert_allclose(got.mean, s.mean(axis=0), atol=0.02 * np.sqrt(got.sq).max())


def test_block_outputs_are_zero_mean_unless_means_are_asked(dense):
    """The GLU's E[act(g) u] (and a bias) reach the stream as channel means only with `means`: otherwise
    each activation is zero-mean with its second moment, so the next RMSNorm does not divide every
    channel's variance by a coherent offset (the v2 estimate's flaw, docs/metrics.md)."""
    path, _ = dense
    m = open_model(path)
    for means in (False, True):
        est = imp._Estimator(m, imp.EstimateOptions(means=means))
        h0 = est.embedding()
        h = est.block(0, h0)
        assert np.any(h.mean != 0) == means and np.all(h.var > 0)


def test_file_round_trips_through_the_reader(dense, tmp_path):
    path, _ = dense
    est = prism_native.estimate_imatrix(path)
    out = est.save(tmp_path / "est.imatrix.gguf")
    im = load_imatrix(out)
    assert im.format == "gguf" and im.datasets == [imp.METHOD]
    assert (im.chunk_count, im.chunk_size) == (0, imp.CHUNK_SIZE)
    assert set(im.entries) == set(est.entries)
    for name, e in est.entries.items():
        np.testing.assert_array_equal(im.entries[name], e.importance.reshape(-1))
    r = gguf.GGUFReader(out)
    assert r.fields["general.type"].contents() == "imatrix" and "general.architecture" not in r.fields
    t = {x.name: x for x in r.tensors}
    bases = [n.rsplit(".", 1)[0] for n in t][::2]
    assert bases == sorted(bases)        # llama-imatrix writes its entries in name order, in_sum2 then counts
    assert list(t["blk.0.ffn_down.weight.in_sum2"].shape) == [DENSE.n_ff]   # ggml_n_dims drops n_mat 1
    assert list(t["blk.0.ffn_down.weight.counts"].shape) == [1]


def test_moe_experts_get_their_own_rows_and_routing_share(synthetic, tmp_path):
    spec = synth.Spec(n_expert=4, n_layer=2, n_embd=256, n_ff=256, n_vocab=256, dtype="F32",
                      layer_names=("attn_q", "attn_k", "attn_v", "attn_output"), seed=8)
    m = open_model(synthetic("importance-moe", spec))
    est = imp.estimate_importance(m)
    assert not est.uniform
    for n in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
        e = est.entries[f"blk.1.{n}.weight"]
        assert e.in_sum2.shape == (4, 256) and e.counts.shape == (4,)
        assert abs(e.counts.sum() / imp.NOTIONAL_TOKENS - 2) < 0.01     # two experts per token
    down = est.entries["blk.1.ffn_down_exps.weight"].importance
    assert not np.allclose(down[0], down[1])                          # each expert's own GLU
    im = load_imatrix(est.save(tmp_path / "moe.imatrix.gguf"))
    assert im.weights_for("blk.1.ffn_down_exps.weight", 256, 4).shape == (4, 256)


def test_hybrid_ssm_inputs_are_estimated(synthetic):
    spec = synth.VARIANTS["hybrid"]
    spec = synth.Spec(**{**spec.__dict__, "n_layer": 2, "dtype": "F32",
                         "extra": {f"blk.{i}.ssm_norm.weight": (64,) for i in range(2)}})
    m = open_model(synthetic("importance-hybrid", spec))
    est = imp.estimate_importance(m)
    assert not est.uniform, est.warnings
    ssm_out = est.entries["blk.1.ssm_out.weight"].importance[0]
    assert np.ptp(ssm_out) > 0


def test_bad_norms_warn_and_fall_back(tmp_path):
    spec = synth.Spec(n_layer=2, n_embd=256, n_ff=256, n_vocab=256, dtype="F32", seed=4)
    path = tmp_path / "bad.gguf"
    synth.write(path, spec, values_of={"blk.0.attn_norm.weight": np.ones(128, np.float32),
                                       "blk.1.ffn_norm.weight": np.full(256, np.nan, np.float32)})
    est = imp.estimate_importance(open_model(path))
    assert any("blk.0.attn_norm.weight" in w for w in est.warnings)
    assert any("blk.1.ffn_norm.weight" in w for w in est.warnings)
    assert all(np.all(np.isfinite(e.in_sum2)) for e in est.entries.values())


def test_unreachable_tensor_gets_uniform_importance(tmp_path):
    spec = synth.Spec(n_layer=1, n_embd=256, n_ff=256, n_vocab=256, dtype="F32",
                      extra={"blk.0.mystery_proj.weight": (256, 256)})
    path = tmp_path / "odd.gguf"
    synth.write(path, spec)
    est = imp.estimate_importance(open_model(path))
    e = est.entries["blk.0.mystery_proj.weight"]
    assert e.uniform and np.all(e.importance == 1)
    assert any("uniform" in w for w in est.warnings)


def test_cli_writes_and_refuses_the_input(dense, tmp_path, capsys):
    path, _ = dense
    out = tmp_path / "x.imatrix.gguf"
    assert main(["imatrix", str(path), "-o", str(out)]) == 0
    assert load_imatrix(out).entries
    assert main(["imatrix", str(path), "-o", str(path)]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert main(["imatrix", str(path), "--attn-mix", "2"]) == 2


def test_auto_imatrix_in_plan_and_quantize(dense, tmp_path, monkeypatch, capsys):
    path, _ = dense
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(path), "--bpw", "4.5", "--imatrix", "auto", "-q"]) == 0
    text = capsys.readouterr().out
    assert "prism-native imatrix" in text and "--imatrix dense.imatrix.gguf" in text
    assert not (path.parent / "dense.imatrix.gguf").exists()
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(path), "-o", str(out), "-q", "--", "--imatrix", "auto", "Q4_K_M"]) == 0
    r = gguf.GGUFReader(out)
    assert r.fields["quantize.imatrix.file"].contents() == "auto"
    assert r.fields["quantize.imatrix.dataset"].contents() == imp.METHOD


@pytest.mark.needs_llama_cpp()
@pytest.mark.parametrize("ftype", ["Q4_K_M", "IQ3_XXS"])
def test_llama_quantize_accepts_it(llama_quantize_bin, dense, tmp_path, ftype):
    """llama-quantize takes the file as it takes llama-imatrix's (IQ3_XXS is refused without one); where
    prism_native writes the type itself, the bytes are the same as with the in-memory estimate."""
    path, _ = dense
    est = imp.estimate_imatrix(path)
    f = est.save(tmp_path / "est.imatrix.gguf")
    out = tmp_path / f"{ftype}.gguf"
    r = subprocess.run([str(llama_quantize_bin), "--imatrix", str(f), str(path), str(out), ftype],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"loaded {len(est.entries)} importance matrix entries" in r.stdout
    if ftype == "Q4_K_M":
        mine = tmp_path / "mine.gguf"
        prism_native.quantize_model(path, mine, ftype, imatrix=f, progress=False)
        assert mine.read_bytes() == out.read_bytes()
