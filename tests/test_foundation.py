import subprocess
import sys

import prism_native
from prism_native import _native
from prism_native.cli.main import COMMANDS, main


def test_native_module_trivial_call():
    assert _native.add(2, 3) == 5


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
