import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


# -- fixtures of the model layer (tests/test_model_*.py) ------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def llama_quantize_bin():
    """llama-quantize from $PRISM_LLAMA_QUANTIZE or PATH; the test is skipped without one."""
    from prism_native.llama.quantize_tool import find_binary
    b = find_binary()
    if b is None:
        pytest.skip("no llama-quantize binary (set PRISM_LLAMA_QUANTIZE or put it on PATH)")
    return b


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
    import synth
    made: dict = {}
    root = tmp_path_factory.mktemp("synthetic")

    def make(name, spec, **kw):
        if name not in made:
            p = root / f"{name}.gguf"
            synth.write(p, spec, **kw)
            made[name] = p
        return made[name]
    return make
