"""`plan --dry-run` of a multi-terabyte mixture of experts from its header alone, and the bad inputs of
big jobs refused in one line before any work: a missing or foreign split part, a disk too small for the
budget's output, a file larger than the address space."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import synth
from support.child import child_env
from support.moe_shapes import DEEPSEEK_V3, KIMI_K2

from prism_native import files
from prism_native.cli.main import main
from prism_native.read.model import Model



def _header_only(folder: Path, shape=DEEPSEEK_V3, layers: range | None = None, split: int = 200) -> Path:
    """The model's split set with real shapes and sparse data (a header claiming terabytes, no disk)."""
    n = shape.n_layer if layers is None else len(layers)
    parts = synth.write_layout(folder / "m.gguf", "deepseek2", shape.kv(n_layer=n), shape.tensors(layers),
                               split_max_tensors=split)
    return parts[0]


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("shape", [DEEPSEEK_V3, KIMI_K2], ids=["deepseek-v3", "kimi-k2"])
def test_dry_run_of_a_multi_terabyte_split_model(tmp_path, capsys, monkeypatch, shape):
    first = _header_only(tmp_path, shape)
    assert Model(first).file_bytes > 1.2e12 and len(Model(first).parts) > 4

    def no_data(*a, **k):
        raise AssertionError("a dry run read tensor data")
    monkeypatch.setattr(Model, "raw", no_data)
    monkeypatch.setattr(Model, "read_rows", no_data)
    assert main(["plan", "--dry-run", str(first), "--bpw", "3.5", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["parts"] == len(Model(first).parts)
    assert d["quantized_params"] > (0.98e12 if shape is KIMI_K2 else 0.66e12)
    assert d["min_size"]["file_bytes"] < d["budget_bytes"] < d["max_size"]["file_bytes"] and d["feasible"]
    # the very-low-bit types are candidates but need an imatrix: left out of the range without one
    assert set(d["need_imatrix"]) == {"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"} and not d["requantize"]
    cls = {c["cls"]: c for c in d["classes"]}
    # the granularity a plan has: dense leading blocks, routed stacks, the shared expert are separate classes
    assert cls["ffn_gate"]["layers"] == ("0-2" if shape is DEEPSEEK_V3 else "0") and cls["ffn_gate"]["role"] == "dense"
    assert cls["ffn_gate_exps"]["experts"] == shape.n_expert and cls["ffn_gate_exps"]["role"] == "expert"
    assert cls["ffn_down_shexp"]["role"] == "shared_expert"
    assert "ffn_gate_inp" in d["kept"]       # the router: llama-quantize copies it
    assert main(["plan", "--dry-run", str(first)]) == 0     # the budget is optional
    assert "expert stack" in capsys.readouterr().out


def test_dry_run_asks_for_an_imatrix_when_a_type_needs_one(tmp_path, capsys):
    from prism_native.plan.dry_run import dry_run
    model = Model(_header_only(tmp_path, layers=range(4), split=0))
    without = dry_run(model, ("Q2_K", "IQ2_XS", "Q4_K"))
    with_im = dry_run(model, ("Q2_K", "IQ2_XS", "Q4_K"), imatrix=True)
    assert without.need_imatrix == with_im.need_imatrix == ("IQ2_XS",)
    # without an imatrix IQ2_XS (2.31 bpw) is no candidate, so the smallest output is larger
    assert with_im.min_size.file_bytes < without.min_size.file_bytes


def test_missing_part(tmp_path, capsys):
    first = _header_only(tmp_path, layers=range(4), split=20)
    Model(first).parts[1].unlink()
    assert main(["plan", "--dry-run", str(first)]) == 2
    assert "part 2 of the" in _one_line(capsys.readouterr().err)


def test_part_of_another_split_set(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _header_only(tmp_path / "a", layers=range(4), split=20)
    b = _header_only(tmp_path / "b", layers=range(5), split=25)
    pa, pb = Model(a).parts, Model(b).parts
    assert len(pa) == len(pb)
    pa[1].unlink()
    pa[1].symlink_to(pb[1])          # same name and count, another model's part
    assert main(["inspect", str(a)]) == 2
    assert "another split set" in _one_line(capsys.readouterr().err)


def test_truncated_part(tmp_path, capsys):
    first = _header_only(tmp_path, layers=range(4), split=20)
    part = Model(first).parts[-1]
    with open(part, "r+b") as f:
        f.truncate(part.stat().st_size - 4096)
    assert main(["plan", "--dry-run", str(first)]) == 2
    assert "past the end of the file" in _one_line(capsys.readouterr().err)


def test_disk_too_small_for_the_budget_before_the_analysis(tmp_path, capsys, monkeypatch):
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=2))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: files.shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert main(["quantize", str(path), "--bpw", "4.5", "-o", str(tmp_path / "o.gguf")]) == 2
    assert "not enough disk space" in _one_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("*.prism.json"))       # refused before analyze started


def test_file_larger_than_the_address_space(tmp_path):
    """A part that cannot be mapped (address space limited to 2 GiB here, the part is 28 GiB): one line."""
    first = _header_only(tmp_path, layers=range(4), split=0)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from prism_native.cli.main import main; sys.exit(main(['plan', '--dry-run', sys.argv[1]]))")
    r = subprocess.run([sys.executable, "-c", code, str(first)], capture_output=True, text=True, timeout=120,
                       check=False, env=child_env({}, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 2, r.stderr
    assert "address space" in _one_line(r.stderr)
