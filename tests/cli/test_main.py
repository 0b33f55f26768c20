import subprocess
import sys

import prism_native
from prism_native import _native
from prism_native.cli.main import COMMANDS, main


def test_native_type_table_agrees_with_gguf():
    import gguf

    from prism_native import qtypes
    rows = _native.type_traits()
    assert {r["name"] for r in rows} >= {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "Q8_0"}
    for r in rows:
        t = gguf.GGMLQuantizationType[r["name"]]
        assert (int(t), *gguf.GGML_QUANT_SIZES[t]) == (r["ggml_type"], r["block_size"], r["type_size"])
        assert qtypes.get(r["name"]).native == r["implemented"]


def test_cpu_features_reports_active_kernel():
    f = prism_native.cpu_features()
    assert f["active"] in f["usable"]
    assert "scalar" in f["compiled"]


def test_help_lists_subcommands(capsys):
    r = subprocess.run([sys.executable, "-m", "prism_native", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


def test_no_command_is_an_error(capsys):
    assert main([]) == 2
