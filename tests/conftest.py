"""Shared fixtures, and the one place that decides which tests need external tools.

Markers (registered in pyproject.toml):
- needs_llama_cpp(*tools): llama.cpp binaries (default llama-quantize), found as prism_native finds them
  ($PRISM_LLAMA_QUANTIZE and the folder it is in, then PATH); tests using the `llama_quantize_bin`
  fixture get the marker by themselves;
- needs_ggml: ggml's own libggml-base ($PRISM_GGML_LIB, or an installed llama-cpp-python);
when $PRISM_LLAMA_QUANTIZE / $PRISM_GGML_LIB are unset they default to the cache folder that
scripts/build_llama_cpp.sh builds into (scripts/install_test_tools.sh runs it), when it holds them;
- needs_qemu: an aarch64 cross compiler and qemu-aarch64 ($PRISM_AARCH64_CXX, $PRISM_QEMU_AARCH64).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # `from support import synth`

AARCH64_CXX = os.environ.get("PRISM_AARCH64_CXX", "aarch64-linux-gnu-g++")
QEMU_AARCH64 = os.environ.get("PRISM_QEMU_AARCH64", "qemu-aarch64-static")


def _llama_cache_bin() -> Path | None:
    """The bin folder of scripts/build_llama_cpp.sh (the one place that knows it), or None."""
    script = Path(__file__).parents[1] / "scripts" / "build_llama_cpp.sh"
    if not script.is_file() or shutil.which("bash") is None:
        return None
    out = subprocess.run(["bash", str(script), "--where"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


_BIN = _llama_cache_bin()
if _BIN is not None and (_BIN / "llama-quantize").is_file():
    os.environ.setdefault("PRISM_LLAMA_QUANTIZE", str(_BIN / "llama-quantize"))
    os.environ.setdefault("PRISM_GGML_LIB", str(_BIN / "libggml-base.so"))


def _missing_llama_tools(tools: tuple[str, ...]) -> list[str]:
    from prism_native.tools.binaries import locate_tool
    return [t for t in tools if locate_tool(t) is None]


def _ggml_lib() -> str | None:
    from support.ggml_oracle import find_lib
    try:
        return find_lib()
    except (FileNotFoundError, OSError):
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "llama_quantize_bin" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("needs_llama_cpp"):
            item.add_marker(pytest.mark.needs_llama_cpp())
        if "ggml" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("needs_ggml"):
            item.add_marker(pytest.mark.needs_ggml)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for m in item.iter_markers("needs_llama_cpp"):
        missing = _missing_llama_tools(tuple(m.args) or ("llama-quantize",))
        if missing:
            pytest.skip(f"needs {', '.join(missing)} (set PRISM_LLAMA_QUANTIZE or put llama.cpp's bin on PATH)")
    if item.get_closest_marker("needs_ggml") and _ggml_lib() is None:
        pytest.skip("needs ggml's libggml-base (set PRISM_GGML_LIB, or pip install llama-cpp-python==0.3.36)")
    if item.get_closest_marker("needs_qemu"):
        missing = [t for t in (AARCH64_CXX, QEMU_AARCH64) if shutil.which(t) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture(scope="session")
def llama_quantize_bin() -> Path:
    """llama-quantize as prism_native finds it (the needs_llama_cpp marker skips the test without one)."""
    from prism_native.tools.binaries import find_tool
    return find_tool("llama-quantize")


@pytest.fixture(scope="session")
def ggml():
    """ggml's own quantizers through ctypes (support.ggml_oracle; needs_ggml skips without the library)."""
    from support.ggml_oracle import Ggml
    return Ggml()


@pytest.fixture(scope="session")
def smollm2_path():
    from prism_native.errors import PrismError
    from prism_native.read.example import example_model
    try:
        return example_model()
    except PrismError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """synthetic(name, spec) -> path of a small GGUF written once per session."""
    from support import synth
    made: dict = {}
    root = tmp_path_factory.mktemp("synthetic")

    def make(name, spec, **kw):
        if name not in made:
            p = root / f"{name}.gguf"
            synth.write(p, spec, **kw)
            made[name] = p
        return made[name]
    return make


@pytest.fixture(scope="module")
def analysed(synthetic, tmp_path_factory):
    """(model, scored analysis, its results file) of synth.SMALL_DENSE without an imatrix: the planner tests'."""
    from prism_native.measure import analyze as an
    from prism_native.plan.score import Weights, score_analysis
    from prism_native.read.model import open_model
    from support import synth
    path = synthetic("plan-dense", synth.SMALL_DENSE)
    model = open_model(path)
    out = tmp_path_factory.mktemp("plan") / "dense.prism.json"
    a = an.analyze(model, an.Settings(), out=out)
    score_analysis(a, Weights())
    a.save(out)
    return model, a, out
