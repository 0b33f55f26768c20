"""Access to the golden vectors of ggml_quantize_chunk (tests/data/golden, copied from shared/golden)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
DATASETS = sorted(p.stem for p in GOLDEN.glob("*.npz"))
TYPES = list(MANIFEST["types"])


def load(dataset: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{dataset}.npz") as z:
        return {k: z[k] for k in z.files}


def block_mismatches(a: np.ndarray, b: np.ndarray, block_bytes: int) -> int:
    """Number of blocks whose bytes differ (a, b: uint8 rows of whole blocks)."""
    a = a.reshape(-1, block_bytes)
    b = b.reshape(-1, block_bytes)
    return int(np.any(a != b, axis=1).sum())
