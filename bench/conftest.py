"""Shared fixtures of the speed benchmarks (run: pytest bench/ --benchmark-only).

The tensor is a realistic weight matrix (PRISM_BENCH_ROWS x 4096, N(0, 0.02^2), default 1024 rows);
ggml's own quantizer is timed through ctypes when $PRISM_GGML_LIB names a libggml-base.so.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the repository's single copy of the ctypes oracle lives beside the tests
sys.path.append(str(HERE.parent / "tests"))

from benchutil import COLS, LAYERS, ROWS, Timings  # noqa: E402


@pytest.fixture(scope="session")
def model_8b(tmp_path_factory) -> Path:
    """LAYERS layers of Llama-3-8B shapes (hidden 4096, FFN 14336, GQA 8), 32000-token vocabulary, F16."""
    from support import synth

    spec = synth.Spec(n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8, n_layer=LAYERS, n_vocab=32000,
                      dtype="F16", seed=1)
    path = tmp_path_factory.mktemp("bench8b") / "llama8b-shapes.gguf"
    synth.write(path, spec)
    return path


@pytest.fixture(scope="session")
def timings() -> Timings:
    return Timings()


@pytest.fixture(scope="session")
def tensor() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.02, (ROWS, COLS)).astype(np.float32)


@pytest.fixture(scope="session")
def imatrix() -> np.ndarray:
    return np.random.default_rng(1).lognormal(0.0, 1.0, COLS).astype(np.float32)


@pytest.fixture(scope="session")
def ggml():
    """support.ggml_oracle.Ggml on $PRISM_GGML_LIB, or None when it is not set."""
    path = os.environ.get("PRISM_GGML_LIB")
    if not path:
        return None
    if not os.path.exists(path):
        pytest.exit(f"PRISM_GGML_LIB={path} does not exist", returncode=2)
    from support.ggml_oracle import Ggml

    return Ggml(path)
