"""Grid-free models (research/dither.py, scripts/make_dithered_model.py) on a small synthetic quantized model
that holds every type prism_native quantizes."""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from prism_native.errors import FileFormatError, OutputError, UsageError
from prism_native.read.model import Model
from prism_native.research.dither import _dequantize, dither_model, level_spacing, rebuild, value_steps
from prism_native.pipeline import quantize_model
from support import synth

# two layers, one type per tensor: every native type, the 256-block ones on rows of 256
TYPES = {
    "blk.0.attn_q.weight": "Q2_K", "blk.0.attn_k.weight": "Q3_K", "blk.0.attn_v.weight": "Q4_K",
    "blk.0.attn_output.weight": "Q5_K", "blk.0.ffn_gate.weight": "Q6_K", "blk.0.ffn_up.weight": "Q4_0",
    "blk.0.ffn_down.weight": "Q4_1", "blk.1.attn_q.weight": "Q5_0", "blk.1.attn_k.weight": "Q5_1",
    "blk.1.attn_v.weight": "IQ4_NL", "blk.1.attn_output.weight": "IQ4_XS", "blk.1.ffn_gate.weight": "Q8_0",
    "blk.1.ffn_up.weight": "Q4_K", "blk.1.ffn_down.weight": "Q6_K", "token_embd.weight": "Q8_0",
    "output.weight": "Q6_K",
}
UNIFORM = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
SUB = {"Q2_K": 16, "Q3_K": 16, "Q6_K": 16}      # values per scale; 32 for the others


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dither")
    f16 = d / "synth-f16.gguf"
    synth.write(f16, synth.Spec(n_layer=2, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, n_vocab=512,
                                byte_tokenizer=True))
    out = d / "synth-mixed.gguf"
    quantize_model(f16, out, TYPES, progress=False)
    return out


def test_source_holds_every_type(source):
    m = Model(source)
    assert {m.tensor(n).type_name for n in TYPES} == set(TYPES.values())


def test_steps_are_the_grid_of_each_block(source):
    """Independently of how the step is read: every value of a scale's sub-block is min + k * step with k an
    integer, and the step is the grid's own (consecutive levels occur), not a multiple of it."""
    m = Model(source)
    for name, ty in TYPES.items():
        if ty not in UNIFORM:
            continue
        t = m.tensor(name)
        raw = np.asarray(m.raw(t))
        x = _dequantize(raw, t.qtype, t.n_rows, t.n_per_row)
        step = value_steps(raw, t.qtype, x)
        sub = SUB.get(ty, 32)
        xs, ss = x.reshape(-1, sub).astype(np.float64), step.reshape(-1, sub)
        assert (ss == ss[:, :1]).all() and (ss >= 0).all(), name
        live = ss[:, 0] > 0
        k = (xs[live] - xs[live].min(axis=1, keepdims=True)) / ss[live, :1]
        assert np.abs(k - np.round(k)).max() < 2e-3, name
        gaps = np.diff(np.unique(np.round(k[0])))
        assert gaps.min() == 1, name


def test_level_spacing_of_non_uniform_blocks():
    levels = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)
    block = np.tile(levels, 2) * 0.01       # IQ4_NL's levels, d = 0.01
    assert level_spacing(block, 32)[0] == pytest.approx(np.median(np.diff(levels)) * 0.01)
    assert level_spacing(np.full(32, 0.5, np.float32), 32)[0] == 0


def test_noise_is_within_half_a_step_and_one_step_wide(source, tmp_path):
    out = tmp_path / "dithered.gguf"
    res = dither_model(source, out, seed=7)
    m, d = Model(source), Model(out)
    for t in m.tensors:
        o = d.tensor(t.name)
        if not t.qtype.quantized:
            assert o.type_name == t.type_name and bytes(d.raw(o)) == bytes(m.raw(t))
            continue
        assert o.type_name == "F16"
        raw = np.asarray(m.raw(t))
        x = _dequantize(raw, t.qtype, t.n_rows, t.n_per_row)
        step = value_steps(raw, t.qtype, x)
        y = d.read(o).reshape(x.shape)
        half_ulp = np.spacing(np.abs(y).astype(np.float16)).astype(np.float32) / 2
        assert (np.abs(y - x) <= step / 2 + half_ulp).all(), t.name
        ratio = 12 * np.mean(np.square(y - x, dtype=np.float64)) / np.mean(np.square(step, dtype=np.float64))
        assert 0.9 < ratio < 1.1, (t.name, ratio)
    stats = {s.name: s for s in res.tensors}
    assert all(s.max_excess <= 1.0 and 0.9 < s.noise_ratio < 1.1 for s in stats.values() if s.dithered)


def test_deterministic_by_seed(source, tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    dither_model(source, a, seed=3)
    dither_model(source, b, seed=3)
    dither_model(source, c, seed=4)
    assert sha(a) == sha(b) != sha(c)


def test_output_is_a_readable_f16_model_with_the_source_metadata(source, tmp_path):
    out = tmp_path / "dithered.gguf"
    dither_model(source, out, seed=1)
    m, d = Model(source), Model(out)
    assert d.kv("general.file_type") == 1
    assert [t.name for t in d.tensors] == [t.name for t in m.tensors]
    assert [t.shape for t in d.tensors] == [t.shape for t in m.tensors]
    for key in m.fields:
        if key != "general.file_type":
            assert d.kv(key) == m.kv(key), key
    assert d.kv("tokenizer.ggml.tokens") == m.kv("tokenizer.ggml.tokens")
    assert all(np.isfinite(v).all() for _, v in d.iter_float32())


def test_undithered_is_the_dequantized_model(source, tmp_path):
    out = tmp_path / "plain.gguf"
    dither_model(source, out, seed=1, noise=False)
    m, d = Model(source), Model(out)
    for name in TYPES:
        t = m.tensor(name)
        x = _dequantize(np.asarray(m.raw(t)), t.qtype, t.n_rows, t.n_per_row)
        assert np.array_equal(np.asarray(d.raw(d.tensor(name))).view("<f2").reshape(x.shape), x.astype(np.float16))


def test_no_type_rebuilds_the_dithered_source(source, tmp_path):
    """Quantized back to its own types, the dithered model gives none of the source's tensors back; the
    plain dequantized one gives the legacy types' bytes back exactly (the grid it sits on)."""
    dit, plain = tmp_path / "dithered.gguf", tmp_path / "plain.gguf"
    dither_model(source, dit, seed=5)
    dither_model(source, plain, seed=5, noise=False)
    rows = rebuild(source, dit, tmp_path / "back.gguf")
    assert len(rows) == len(TYPES) and not any(r.identical for r in rows)
    assert all(r.mse > 0.1 * r.step_sq / 12 for r in rows)
    back = {r.name: r for r in rebuild(source, plain, tmp_path / "plain-back.gguf")}
    for name, ty in TYPES.items():
        if ty in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
            assert back[name].identical, name


def test_values_from_the_f16_conversion(source, tmp_path):
    f16 = tmp_path / "conv.gguf"
    dither_model(source, f16, seed=0, noise=False)        # the source's F16 conversion
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    dither_model(source, a, seed=2)
    dither_model(source, b, seed=2, values=f16)
    ma, mb = Model(a), Model(b)
    for name in TYPES:        # the conversion's values differ from the dequantized ones by F16 rounding only
        x, y = ma.read(name), mb.read(name)
        assert np.abs(x - y).max() <= 2 * np.spacing(np.abs(x).astype(np.float16)).astype(np.float32).max()


def test_values_model_must_match(source, tmp_path):
    other = tmp_path / "other.gguf"
    synth.write(other, synth.Spec(n_layer=2, n_embd=128, n_ff=512, n_vocab=512))
    with pytest.raises(FileFormatError, match="shape"):
        dither_model(source, tmp_path / "x.gguf", seed=0, values=other)
    assert not (tmp_path / "x.gguf").exists()


def test_input_is_never_written(source, tmp_path):
    before = (sha(source), os.stat(source).st_mtime_ns)
    with pytest.raises(OutputError, match="input"):
        dither_model(source, source, seed=0)
    link = tmp_path / "link.gguf"
    link.symlink_to(source)
    with pytest.raises(OutputError, match="input"):
        dither_model(source, link, seed=0)
    dither_model(source, tmp_path / "ok.gguf", seed=0)
    assert (sha(source), os.stat(source).st_mtime_ns) == before


def test_refusals(source, tmp_path):
    f16 = tmp_path / "f16.gguf"
    synth.write(f16, synth.Spec(n_layer=1))
    with pytest.raises(UsageError, match="no quantized tensor"):
        dither_model(f16, tmp_path / "x.gguf", seed=0)
    with pytest.raises(UsageError, match="seed"):
        dither_model(source, tmp_path / "x.gguf", seed=-1)
    assert not (tmp_path / "x.gguf").exists()


def _script():
    path = Path(__file__).parents[2] / "scripts" / "make_dithered_model.py"
    spec = importlib.util.spec_from_file_location("make_dithered_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script(source, tmp_path, capsys):
    main = _script().main
    out, plain, back = tmp_path / "d.gguf", tmp_path / "p.gguf", tmp_path / "b.gguf"
    assert main([str(source), "--seed", "1", "-o", str(out), "--undithered", str(plain), "--rebuild", str(back)]) == 0
    text = capsys.readouterr().out
    assert f"sha256 {sha(out)}" in text and f"sha256 {sha(plain)}" in text
    assert f"0 of {len(TYPES)} tensors byte-identical" in text
    assert main([str(tmp_path / "missing.gguf"), "--seed", "1", "-o", str(tmp_path / "m.gguf")]) == 2
    assert "error:" in capsys.readouterr().err
