"""Access to the golden vectors of ggml_quantize_chunk (tests/data/golden, copied from shared/golden; its
low-bit/ folder holds the IQ1..IQ3, TQ, Q1_0/Q2_0, MXFP4 and NVFP4 keys for the same inputs).

PRISM_GOLDEN_DIR points the tests at another folder of the same layout (e.g. ../shared/golden)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

GOLDEN = Path(os.environ.get("PRISM_GOLDEN_DIR") or Path(__file__).parents[1] / "data" / "golden")
SETS = {"": GOLDEN, "low-bit": GOLDEN / "low-bit"}
MANIFESTS = {s: json.loads((p / "manifest.json").read_text()) for s, p in SETS.items()
             if (p / "manifest.json").exists()}
MANIFEST = MANIFESTS[""]
DATASETS = sorted(p.stem for p in GOLDEN.glob("*.npz"))
LOW_BIT_DATASETS = sorted(p.stem for p in SETS["low-bit"].glob("*.npz"))
TYPES = list(MANIFEST["types"])
LOW_BIT_TYPES = list(MANIFESTS.get("low-bit", {}).get("types", {}))
BYTES_PER_BLOCK = {t: d["bytes_per_block"] for m in MANIFESTS.values() for t, d in m["types"].items()}


def load(dataset: str, golden_set: str = "") -> dict[str, np.ndarray]:
    with np.load(SETS[golden_set] / f"{dataset}.npz") as z:
        return {k: z[k] for k in z.files}


def not_produced(d: dict[str, np.ndarray]) -> dict[str, str]:
    """meta["not_produced"]: the TYPE__case keys ggml refused to make (imatrix-only types without one)."""
    if "meta" not in d:
        return {}
    return json.loads(str(d["meta"])).get("not_produced", {})


def block_mismatches(a: np.ndarray, b: np.ndarray, block_bytes: int) -> int:
    """Number of blocks whose bytes differ (a, b: uint8 rows of whole blocks)."""
    a = a.reshape(-1, block_bytes)
    b = b.reshape(-1, block_bytes)
    return int(np.any(a != b, axis=1).sum())
