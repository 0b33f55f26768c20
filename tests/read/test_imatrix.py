"""Importance matrices in both llama-imatrix formats, read as llama-quantize reads them."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from prism_native.errors import PrismError
from prism_native.read.imatrix import load_imatrix, write_dat, write_gguf

NAME = "blk.0.ffn_down.weight"


def test_gguf_divides_by_rounded_counts(tmp_path):
    s = np.arange(1, 17, dtype=np.float32).reshape(2, 8)
    write_gguf(tmp_path / "i.gguf", {NAME: (s, np.array([2.4, 0.0]))}, ["wiki.txt"], 7, 512)
    im = load_imatrix(tmp_path / "i.gguf")
    assert im.format == "gguf" and im.datasets == ["wiki.txt"] and im.chunk_count == 7 and im.chunk_size == 512
    w = im.weights_for(NAME, 8, 2)
    assert np.array_equal(w[0], s[0] / np.float32(2.0))   # lround(2.4) = 2
    assert np.array_equal(w[1], np.ones(8, np.float32))   # count 0 -> 1, as llama-quantize
    assert im.warnings


def test_dat_divides_by_ncall(tmp_path):
    v = np.linspace(0.5, 4, 16).astype(np.float32)
    write_dat(tmp_path / "i.dat", {NAME: (v * 3, 3), "blk.0.attn_q.weight": (v, 0)}, 10, "calib.txt")
    im = load_imatrix(tmp_path / "i.dat")
    assert im.format == "dat" and im.datasets == ["calib.txt"] and im.chunk_count == 10
    assert np.array_equal(im.weights_for(NAME, 16)[0], (v * np.float32(3)) / np.float32(3))
    assert np.array_equal(im.weights_for("blk.0.attn_q.weight", 16)[0], v)  # ncall 0: as stored
    assert im.uncovered([NAME, "output.weight"]) == ["output.weight"]


def test_size_mismatch_names_tensor(tmp_path):
    write_dat(tmp_path / "i.dat", {NAME: (np.ones(16, np.float32), 1), "token_embd.weight": (np.ones(3), 1)})
    im = load_imatrix(tmp_path / "i.dat")
    with pytest.raises(PrismError, match="ffn_down"):
        im.weights_for(NAME, 32)
    assert im.weights_for("token_embd.weight", 16) is None  # llama-quantize ignores it for token_embd


@pytest.mark.parametrize("content", [b"", b"\x00\x00", struct.pack("<i", 5) + b"abc", b"GGUF\x03\x00\x00\x00junk"])
def test_bad_files(tmp_path, content):
    p = tmp_path / "bad.imatrix"
    p.write_bytes(content)
    with pytest.raises(PrismError, match="bad.imatrix"):
        load_imatrix(p)


def test_gguf_without_metadata_rejected(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "imatrix")
    w.add_tensor(f"{NAME}.in_sum2", np.ones((1, 8), np.float32))
    w.add_tensor(f"{NAME}.counts", np.ones((1, 1), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(PrismError, match="imatrix.datasets"):
        load_imatrix(tmp_path / "m.gguf")


def test_non_finite_rejected(tmp_path):
    write_dat(tmp_path / "i.dat", {NAME: (np.array([1, np.nan], np.float32), 1)})
    with pytest.raises(PrismError, match="non-finite"):
        load_imatrix(tmp_path / "i.dat")
