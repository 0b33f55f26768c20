"""Opening a model: the validating GGUF reader on Llama-3-8B's metadata (291 tensor infos, a
128,256-token vocabulary with token types and 280,147 merges, ~408k strings).

The file is sparse: its tensor infos describe 8B shapes in F16 (16 GB of data), which the reader
checks against the file size but never reads. extra_info holds the whole open and the part of it
spent on the checks that go beyond reading (tensor placement, the key rules).
"""
from __future__ import annotations

import time
from pathlib import Path

import gguf
import numpy as np
import pytest

N_VOCAB, N_MERGES, N_LAYER, E, FF, KV = 128256, 280147, 32, 4096, 14336, 1024


@pytest.fixture(scope="module")
def metadata_8b(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("open8b") / "llama8b-metadata.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", N_LAYER)
    w.add_uint32("llama.embedding_length", E)
    w.add_uint32("llama.attention.head_count", 32)
    w.add_uint32("llama.attention.head_count_kv", 8)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i:06d}\u0120x" for i in range(N_VOCAB)])
    w.add_token_types([1] * N_VOCAB)
    w.add_token_merges([f"a{i} b{i}" for i in range(N_MERGES)])
    shapes = {"token_embd.weight": (E, N_VOCAB)}
    for il in range(N_LAYER):
        for n, s in (("attn_norm", (E,)), ("ffn_norm", (E,)), ("attn_q", (E, E)), ("attn_k", (E, KV)),
                     ("attn_v", (E, KV)), ("attn_output", (E, E)), ("ffn_gate", (E, FF)), ("ffn_up", (E, FF)),
                     ("ffn_down", (FF, E))):
            shapes[f"blk.{il}.{n}.weight"] = s
    shapes.update({"output_norm.weight": (E,), "output.weight": (E, N_VOCAB)})
    data = 0
    for name, s in shapes.items():
        dt, size = (np.float16, 2) if len(s) > 1 else (np.float32, 4)
        nb = int(np.prod(s)) * size
        w.add_tensor_info(name, tuple(reversed(s)), dt, nb)
        data += -(-nb // 32) * 32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    meta = -(-path.stat().st_size // 32) * 32
    with open(path, "r+b") as f:
        f.truncate(meta + data)     # sparse: no data is ever written
    return path


def test_open_8b_metadata(benchmark, metadata_8b):
    from prism_native.gguf import layout
    from prism_native.read import keys
    from prism_native.read.model import Model

    benchmark.pedantic(lambda: Model(metadata_8b), rounds=3, iterations=1)
    data = np.memmap(metadata_8b, mode="r")
    lay = layout.read_layout(metadata_8b, data)
    cur = layout._Cursor(metadata_8b, data)   # noqa: SLF001  (the checks alone, on the parsed infos)
    relative = [layout.replace(t, offset=t.offset - lay.data_offset) for t in lay.tensors]
    t0 = time.perf_counter()
    layout._place_tensors(cur, relative, lay.data_offset, lay.alignment)   # noqa: SLF001
    keys.check_keys(metadata_8b, lay.fields)
    checks = time.perf_counter() - t0
    t0 = time.perf_counter()
    gguf.GGUFReader(metadata_8b)        # the baseline: the gguf package's reader, which checks far less
    baseline = time.perf_counter() - t0
    opened = benchmark.stats.stats.min
    benchmark.extra_info.update({"open_s": opened, "placement_and_key_checks_s": checks,
                                 "gguf_reader_s": baseline, "ratio_to_gguf_reader": opened / baseline,
                                 "strings": N_VOCAB + N_MERGES, "tensors": len(lay.tensors)})
    print(f"\nopen {opened:.3f} s ({opened / baseline:.2f}x gguf.GGUFReader's {baseline:.3f} s); "
          f"placement and key checks {checks * 1e3:.2f} ms")
