"""Reading GGUF files (prism_native.read.model): values, split sets, metadata, and bad input."""
from __future__ import annotations

import struct
import subprocess
import sys

import gguf
import numpy as np
import pytest

from prism_native.cli import main
from prism_native.errors import PrismError
from prism_native.gguf.writer import kv_from_field
from prism_native.read import model as gguf_model
from prism_native.read.model import Model
from support import synth

QT = gguf.GGMLQuantizationType
SMALL = synth.Spec(n_layer=2, n_vocab=256)


def _roundtrip(x: np.ndarray, dtype: str) -> np.ndarray:
    data, raw = synth.encode(x, dtype)
    if dtype == "F32":
        return x
    if dtype == "F16":
        return data.astype(np.float32)
    return gguf.quants.dequantize(data, raw)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_1"])
def test_values_round_trip(tmp_path, dtype):
    path = tmp_path / "m.gguf"
    values = synth.write(path, synth.Spec(n_layer=2, n_vocab=256, dtype=dtype))
    m = Model(path)
    seen = 0
    for t, x in m.iter_float32():
        assert x.dtype == np.float32 and x.shape == tuple(reversed(t.shape))
        two_d = len(t.shape) > 1
        np.testing.assert_array_equal(x, _roundtrip(values[t.name], dtype if two_d else "F32"))
        assert t.requantized == (two_d and dtype not in ("F32", "F16", "BF16"))
        seen += 1
    assert seen == len(values) == len(m.tensors)


def test_dequantization_in_row_slabs_gives_the_same_values(tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=1, n_vocab=256, dtype="Q8_0"))
    m = Model(path)
    whole = m.read("token_embd.weight").copy()
    monkeypatch.setattr(gguf_model, "_DEQUANT_CHUNK_VALUES", 1000)  # 3 rows of 256 per slab
    np.testing.assert_array_equal(m.read("token_embd.weight"), whole)


def test_f32_is_a_view_of_the_map(tmp_path):
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=1, n_vocab=256, dtype="F32"))
    x = Model(path).read("blk.0.attn_q.weight")
    assert not x.flags.owndata and not x.flags.writeable


def test_hparams_and_metadata(tmp_path):
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=3, n_expert=8, n_head=4, n_head_kv=2, n_vocab=256,
                                 layer_names=("attn_q",)))
    m = Model(path)
    hp = m.hparams
    assert (hp.arch, hp.n_layer_all, hp.n_expert, hp.n_head, hp.n_head_kv, hp.n_gqa) == ("llama", 3, 8, 4, 2, 2)
    assert m.kv("general.name") == "synthetic" and m.kv("no.such.key", 7) == 7
    t = m.tensor("blk.1.ffn_up_exps.weight")
    assert t.shape == (256, 256, 8) and t.n_per_row == 256 and t.n_rows == 256 * 8 and t.n_dims == 3
    assert m.n_params == sum(t.n_elements for t in m.tensors)


def test_long_metadata_arrays_match_the_gguf_reader(tmp_path):
    """The fast path for arrays keeps contents() and serialized sizes identical to gguf's reader."""
    path = tmp_path / "m.gguf"
    tokens = [f"tok{i}" for i in range(3000)] + ["nul\0inside", ""]
    w = gguf.GGUFWriter(path, "llama")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", list(range(len(tokens))))
    w.add_array("tokenizer.ggml.scores", [0.5] * 10)
    w.add_array("empty.array", [])
    w.add_tensor("a.weight", np.zeros((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours, ref = Model(path), gguf.GGUFReader(path)
    for key, f in ours.fields.items():
        assert f.contents() == ref.fields[key].contents(), key
        raw = sum(int(p.nbytes) for p in ref.fields[key].parts)
        cut = len("\0inside") if key == "tokenizer.ggml.tokens" else 0  # ggml copies up to the NUL
        assert kv_from_field(f).nbytes == raw - cut, key


def test_split_set_reads_like_one_file(tmp_path):
    values = synth.write(tmp_path / "whole.gguf", SMALL)
    synth.write(tmp_path / "s.gguf", SMALL, split_max_tensors=7)
    parts = sorted(tmp_path.glob("s-*-of-*.gguf"))
    assert len(parts) > 2
    whole = Model(tmp_path / "whole.gguf")
    for given in (parts[0], parts[-1]):
        m = Model(given)
        assert m.parts == tuple(parts) and m.path == parts[0]
        assert [t.name for t in m.tensors] == [t.name for t in whole.tensors]
        assert m.hparams == whole.hparams
        assert {t.part for t in m.tensors} == set(range(len(parts)))
    for t, x in Model(parts[1]).iter_float32(["blk.1.ffn_down.weight", "output.weight"]):
        np.testing.assert_array_equal(x, values[t.name].astype(np.float16).astype(np.float32))


# -- bad input: one line naming the file, exit code 2, no traceback --------------------------------

def _write_valid(path):
    synth.write(path, SMALL)
    return path


def _patch_type(path, tensor_name, type_id):
    r = gguf.GGUFReader(path)
    f = next(t.field for t in r.tensors if t.name == tensor_name)
    pos = f.offset + 8 + len(tensor_name.encode()) + 4 + 8 * int(f.parts[2][0])
    del r
    with open(path, "r+b") as fh:
        fh.seek(pos)
        fh.write(struct.pack("<I", type_id))


def _bad_files(tmp_path):
    d = tmp_path
    (d / "not.gguf").write_bytes(b"this is not a model at all\n" * 10)
    (d / "empty.gguf").write_bytes(b"")
    (d / "short.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    _write_valid(d / "trunc_meta.gguf")
    with open(d / "trunc_meta.gguf", "r+b") as fh:
        fh.truncate(200)
    _write_valid(d / "trunc_data.gguf")
    size = (d / "trunc_data.gguf").stat().st_size
    with open(d / "trunc_data.gguf", "r+b") as fh:
        fh.truncate(size - 5000)
    _write_valid(d / "badtype.gguf")
    _patch_type(d / "badtype.gguf", "blk.0.attn_q.weight", 99)
    synth.write(d / "set.gguf", SMALL, split_max_tensors=7)
    (d / "set-00002-of-00003.gguf").unlink()
    (d / "adir.gguf").mkdir()
    return {
        "missing": (d / "nope.gguf", "no such file"),
        "not_gguf": (d / "not.gguf", "not a GGUF file"),
        "empty": (d / "empty.gguf", "empty file"),
        "short": (d / "short.gguf", "truncated GGUF file (8 bytes"),
        "truncated_metadata": (d / "trunc_meta.gguf", "truncated or corrupt GGUF file"),
        "data_past_end": (d / "trunc_data.gguf", "data runs past the end of the file"),
        "unsupported_type": (d / "badtype.gguf", "'blk.0.attn_q.weight' has unsupported tensor type id 99"),
        "missing_split_part": (d / "set-00001-of-00003.gguf", "part 2 of the 3-part split set"),
        "directory": (d / "adir.gguf", "not a regular file"),
    }


def test_bad_input_is_one_line_with_exit_code_2(tmp_path, capsys):
    for case, (path, expected) in _bad_files(tmp_path).items():
        with pytest.raises(PrismError, match=None) as e:
            Model(path)
        assert expected in str(e.value), case
        rc = main(["inspect", str(path)])
        err = capsys.readouterr().err
        assert rc == 2, case
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (case, err)
        named = path.name if case != "missing_split_part" else "set-00002-of-00003.gguf"
        assert named in lines[0], (case, err)


def test_bad_input_through_the_real_cli_has_no_traceback(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    r = subprocess.run([sys.executable, "-m", "prism_native", "inspect", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(bad) in r.stderr


def test_type_gguf_cannot_dequantize_is_a_clear_error(tmp_path):
    path = tmp_path / "q8k.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_tensor("blk.0.attn_q.weight", np.zeros((4, 292), dtype=np.uint8), raw_dtype=QT.Q8_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    m = Model(path)
    assert m.tensor("blk.0.attn_q.weight").type_name == "Q8_K"
    with pytest.raises(PrismError, match="cannot dequantize"):
        m.read("blk.0.attn_q.weight")


def test_corrupted_headers_never_escape_as_tracebacks(tmp_path):
    """Random byte flips and cuts in the metadata: the model opens, or a PrismError names the file."""
    import random

    from prism_native.llama.model_report import model_report as build_report
    src = _write_valid(tmp_path / "m.gguf")
    good = src.read_bytes()
    meta_end = gguf.GGUFReader(src).data_offset
    rng = random.Random(1)
    for i in range(300):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(meta_end)] = rng.randrange(256)
        if rng.random() < 0.2:
            b = b[:rng.randrange(len(b))]
        p = tmp_path / f"c{i % 4}.gguf"
        p.write_bytes(bytes(b))
        try:
            build_report(Model(p))
        except PrismError as e:
            assert str(e).startswith(str(p))
