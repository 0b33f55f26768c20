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
        q = qtypes.get(r["name"])
        assert (q.ggml_type, q.block_size, q.type_size) == (r["ggml_type"], r["block_size"], r["type_size"])
        assert q.native == r["implemented"]
        if r["name"] in gguf.GGMLQuantizationType.__members__:  # gguf 0.19 lacks Q2_0: the native row stands
            t = gguf.GGMLQuantizationType[r["name"]]
            assert (int(t), *gguf.GGML_QUANT_SIZES[t]) == (r["ggml_type"], r["block_size"], r["type_size"])


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
