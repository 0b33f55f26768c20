"""`steps` (bin width per element) seen through the fused error kernel's boundary counts."""
from __future__ import annotations

import numpy as np
import pytest

from prism_native import qtypes
from prism_native.quant import quant_errors
from support.golden import LOW_BIT_TYPES, TYPES

NATIVE = [t for t in TYPES + LOW_BIT_TYPES if t in qtypes.all_types() and qtypes.get(t).native]
# Q1_0's two levels are +-mean|x|: the values beyond them (about 43% of a normal sample) have no
# boundary on their side, so no bin
# The IQ3 lattices: bins are the gap to the next coordinate level, but the lattice leaves out many
# level combinations, so a value is often snapped beyond its nearest level (63% / 74% inside).
INSIDE_SHARE = {"Q1_0": 0.5, "IQ3_XXS": 0.55, "IQ3_S": 0.65}
# The 8-value lattices (IQ2_*, IQ1_*) snap whole groups of 8 to a grid point: no per-value bin.
NO_BINS = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"}


def _types(with_imatrix: bool) -> list[str]:
    return [t for t in NATIVE if with_imatrix or not qtypes.get(t).needs_imatrix]


@pytest.mark.parametrize("with_imatrix", [False, True])
def test_values_fall_inside_their_bins(with_imatrix: bool) -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 0.02, (16, 1024)).astype(np.float32)
    im = rng.lognormal(0.0, 1.0, 1024).astype(np.float32) if with_imatrix else None
    half = quant_errors(x, _types(with_imatrix), im, delta=0.5)
    tenth = quant_errors(x, _types(with_imatrix), im, delta=0.1)
    for h, t in zip(half, tenth):
        if h.qtype in NO_BINS:
            assert h.counted == 0, h.qtype
            continue
        assert h.counted == x.size, h.qtype  # every block has a non-zero scale
        # |x - y| <= step/2 for (almost) every value: step is the bin width, not half or twice it
        assert h.boundary_density > INSIDE_SHARE.get(h.qtype, 0.95), (h.qtype, h.boundary_density)
        assert 0.05 < t.boundary_density < 0.3, (t.qtype, t.boundary_density)


def test_zero_blocks_have_no_bins() -> None:
    x = np.zeros((2, 512), dtype=np.float32)
    x[1] = np.random.default_rng(1).normal(0.0, 1.0, 512)
    for s in quant_errors(x, _types(False)):
        assert s.counted == (0 if s.qtype in NO_BINS else 512), s.qtype
