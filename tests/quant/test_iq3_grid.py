"""The IQ3 lattices' search structures (src/cpp/iq3_grid.cpp) against ggml's iq3xs_init_impl: the point
codes derived from quant_tables.txt equal ggml's compressed kgrid_256 / kgrid_512 (when the llama.cpp
source is at hand), and the code map and neighbour lists equal an independent re-derivation of ggml's
(qsort by squared distance, then index; the points at the 2 (256) or 3 (512) smallest distances)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from prism_native import _native

NWANT = {256: 2, 512: 3}
CACHE = Path(os.environ.get("PRISM_LLAMA_CACHE", Path.home() / ".cache/prism-native/llama.cpp-0.3.36"))
GGML_QUANTS = CACHE / "src/ggml/src/ggml-quants.c"


def _ggml_kgrid(size: int) -> np.ndarray:
    if not GGML_QUANTS.exists():
        pytest.skip(f"no llama.cpp source at {GGML_QUANTS}")
    m = re.search(rf"kgrid_{size}\[{size}\]\s*=\s*\{{([^}}]*)\}}", GGML_QUANTS.read_text())
    assert m, f"kgrid_{size} not found in {GGML_QUANTS}"
    return np.array([int(v) for v in m.group(1).replace(",", " ").split()], dtype=np.int64)


@pytest.mark.parametrize("size", [256, 512])
def test_codes_equal_ggml_kgrid(size: int) -> None:
    code, _, _ = _native.iq3_grid(size)
    assert np.array_equal(np.array(code), _ggml_kgrid(size))


def _levels(codes: np.ndarray) -> np.ndarray:
    return np.stack([(codes >> (3 * i)) & 7 for i in range(4)], axis=-1)


@pytest.mark.parametrize("size", [256, 512])
def test_map_and_neighbours_as_ggml_builds_them(size: int) -> None:
    code, cmap, neighbours = (np.array(a) for a in _native.iq3_grid(size))
    assert len(code) == size and len(np.unique(code)) == size
    pos = 2 * _levels(code) + 1                     # [size, 4]
    want_nb: list[int] = []
    for u in range(4096):
        hit = np.flatnonzero(code == u)
        if hit.size:
            assert cmap[u] == hit[0]
            continue
        assert cmap[u] == -(len(want_nb) + 1)
        d2 = ((pos - (2 * _levels(np.array(u)) + 1)) ** 2).sum(axis=1)
        order = np.lexsort((np.arange(size), d2))      # qsort with iq3_compare_func: (d2, index)
        keep = d2[order] <= np.unique(d2)[NWANT[size] - 1]
        want_nb += [int(keep.sum())] + order[keep].tolist()
    assert np.array_equal(neighbours, np.array(want_nb))
