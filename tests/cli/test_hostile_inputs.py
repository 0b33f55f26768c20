"""The inputs besides the model, tried as a careless or hostile user would (issue 34's failure kinds):
what may be written, bounded readers, range-checked numbers, llama-quantize's own conventions, one
line per error, and concurrent runs on one model and folder."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support import synth
from support.child import child_env

from prism_native import files
from prism_native.cli.main import main
from prism_native.errors import OutputError
from prism_native.read.imatrix import write_gguf

SPEC = replace(synth.VARIANTS["dense"], n_layer=2)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model and its complete results file (written once)."""
    d = tmp_path_factory.mktemp("hostile")
    model = d / "model.gguf"
    synth.write(model, SPEC)
    res = d / "model.prism.json"
    assert main(["analyze", str(model), "-o", str(res), "-q", "-t", "1"]) == 0
    return model, res


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, [ln for ln in cap.err.splitlines() if ln.strip()], cap.out


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one error line of a refused command (exit code 2, nothing else on stderr)."""
    rc, err, _ = run(capsys, *argv)
    errors = [ln for ln in err if not ln.startswith(("# ", "warning: ", "note: "))]
    assert rc == 2 and len(errors) == 1 and ": error: " in errors[0], err
    return errors[0]


def digest(p: Path) -> tuple:
    st = os.lstat(p)
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev,
            hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None)


def imatrix_file(path: Path, model: Path, count: float = 10.0) -> Path:
    from prism_native.llama.quantizable import quantizable_tensors
    from prism_native.read.model import Model
    entries = {t.name: (np.ones((1, t.shape[0]), np.float32), np.full(1, count, np.float32))
               for t in quantizable_tensors(Model(model))}
    write_gguf(path, entries, ["train.txt"], 10, 512)
    return path


# -- what may be written ------------------------------------------------------------------------------

def _special(kind: str, d: Path) -> tuple[Path, Path]:
    """(the output path to give, the node that must survive)."""
    node = d / "node"
    if kind == "fifo":
        os.mkfifo(node)
    elif kind == "socket":
        here = os.getcwd()
        os.chdir(d)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(node.name)
        finally:
            os.chdir(here)
    else:   # a character device like /dev/null, made in tmp: a bug can destroy only this copy
        try:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (PermissionError, OSError):
            pytest.skip("device nodes cannot be made here")
    if kind.startswith("link"):
        link = d / "out.gguf"
        link.symlink_to(node)
        return link, node
    return node, node


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "link to device"])
def test_output_is_never_a_device_fifo_or_socket(base, tmp_path, capsys, kind):
    model, _ = base
    target, node = _special(kind.replace("link to device", "link-device"), tmp_path)
    before = digest(node)
    line = refused(capsys, "quantize", str(model), "-o", str(target), "-q", "-t", "1", "--", "Q4_K_M")
    assert "not a regular file" in line and str(target) in line
    assert digest(node) == before and not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize("target", ["recipe", "imatrix", "imatrix via link", "imatrix via hard link",
                                    "tensor type file", "results"])
def test_output_is_never_a_file_the_command_reads(base, tmp_path, capsys, target):
    model, res = base
    plan = tmp_path / "plan.json"
    assert main(["plan", str(model), "--from", str(res), "--bpw", "4.5", "--json", "-q"]) == 0
    plan.write_text(capsys.readouterr().out)
    im = imatrix_file(tmp_path / "im.gguf", model)
    types = tmp_path / "types.txt"
    types.write_text("attn_v=q8_0\n")
    results = tmp_path / "res.json"
    results.write_bytes(res.read_bytes())
    if target == "imatrix via link":
        (tmp_path / "link.gguf").symlink_to(im)
    elif target == "imatrix via hard link":
        os.link(im, tmp_path / "link.gguf")
    q = ["-q", "-t", "1"]
    argv = {
        "recipe": ["quantize", str(model), "--recipe", str(plan), "-o", str(plan), *q],
        "imatrix": ["quantize", str(model), "-o", str(im), *q, "--", "--imatrix", str(im), "Q4_K_M"],
        "imatrix via link": ["quantize", str(model), "-o", str(tmp_path / "link.gguf"), *q, "--", "--imatrix",
                             str(im), "Q4_K_M"],
        "imatrix via hard link": ["analyze", str(model), "--imatrix", str(im), "-o", str(tmp_path / "link.gguf"), *q],
        "tensor type file": ["quantize", str(model), "-o", str(types), *q, "--", "--tensor-type-file", str(types),
                             "Q4_K_M"],
        "results": ["quantize", str(model), "--from", str(results), "--bpw", "4.5", "-o", str(results), *q],
    }[target]
    inputs = [model, plan, im, types, results]
    before = [digest(p) for p in inputs]
    line = refused(capsys, *argv)
    assert "which this command reads; refusing to overwrite the input" in line
    assert [digest(p) for p in inputs] == before


def test_plan_never_writes_its_tensor_type_file_over_an_input(base, capsys):
    model, res = base
    before = digest(model)
    line = refused(capsys, "plan", str(model), "--from", str(res), "--bpw", "4.5", "-q",
                   "--tensor-type-file", str(model))
    assert "refusing to overwrite the input" in line and digest(model) == before


@pytest.mark.parametrize("case", ["too long", "loop", "file as folder", "missing folder", "no search permission"])
def test_unusable_output_paths_are_one_line(tmp_path, monkeypatch, case):
    if case == "too long":
        dst = tmp_path / ("x" * 300)
    elif case == "loop":
        (tmp_path / "a").symlink_to("b")
        (tmp_path / "b").symlink_to("a")
        dst = tmp_path / "a"
    elif case == "file as folder":
        (tmp_path / "plain").write_bytes(b"x")
        dst = tmp_path / "plain" / "out.gguf"
    elif case == "missing folder":
        dst = tmp_path / "nowhere" / "out.gguf"
    else:    # root passes every permission check: the error as the kernel gives it to others
        dst = tmp_path / "locked" / "out.gguf"
        real = os.stat

        def stat_(p, *a, **kw):
            if "locked" in str(p):
                raise PermissionError(13, "Permission denied", str(p))
            return real(p, *a, **kw)
        monkeypatch.setattr(os, "stat", stat_)
    with pytest.raises(OutputError) as e:
        files.check_destination(dst, [])
    assert "\n" not in str(e.value) and str(dst) in str(e.value)


def test_a_long_name_that_fits_is_written(tmp_path):
    dst = tmp_path / ("x" * 255)       # its temporary name would not fit: a shorter one is used
    files.write_file(dst, b"data")
    assert dst.read_bytes() == b"data" and os.listdir(tmp_path) == [dst.name]


def test_results_file_on_a_full_disk_is_one_line(base, tmp_path):
    """`ulimit -f`: the results file cannot be written; one line, exit 2, no temporary file left."""
    model, _ = base
    limit = 2048

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = child_env()
    p = subprocess.run([sys.executable, "-m", "prism_native", "analyze", str(model), "-o", "res.json", "-q", "-t", "1"],
                       cwd=tmp_path, env=env, preexec_fn=small_files, capture_output=True, text=True, timeout=300,
                       check=False)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(err) == 1 and "res.json" in err[0], p.stderr
    assert os.listdir(tmp_path) == []


# -- bounded readers ----------------------------------------------------------------------------------

def test_deeply_nested_plan_is_one_line(base, tmp_path, capsys):
    model, _ = base
    plan = tmp_path / "plan.json"
    plan.write_text('{"recipe": ' + "[" * 200_000 + "]" * 200_000 + "}")
    line = refused(capsys, "quantize", str(model), "--recipe", str(plan), "-o", str(tmp_path / "o.gguf"), "-q")
    assert "nested 200,001 levels deep" in line or "nested 200001 levels deep" in line


@pytest.mark.parametrize("content", ["binary", "huge", "too many patterns"])
def test_bad_tensor_type_files_are_one_line(base, tmp_path, capsys, content):
    model, _ = base
    f = tmp_path / "types.txt"
    if content == "binary":
        f.write_bytes(bytes(range(256)) * 4)
    elif content == "huge":
        with open(f, "wb") as fh:        # sparse: 1 GiB that takes no disk
            fh.truncate(1 << 30)
    else:
        f.write_text("^x$=q8_0\n" * 70_000)
    line = refused(capsys, "check-recipe", str(model), "--", "--tensor-type-file", str(f), "Q4_K_M")
    assert str(f) in line


@pytest.mark.parametrize("count", [float("inf"), float("nan"), 1e30])
def test_imatrix_counts_out_of_range_are_one_line(base, tmp_path, capsys, count):
    model, _ = base
    im = imatrix_file(tmp_path / "im.gguf", model, count)
    line = refused(capsys, "quantize", str(model), "-o", str(tmp_path / "o.gguf"), "-q", "--", "--imatrix", str(im),
                   "Q4_K_M")
    assert str(im) in line and "count out of range" in line


# -- numbers and budgets -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--size", "1" * 400], ["--size", "1" * 400 + "GiB"], ["--bpw", "x"],
                                  ["--size", "x"], ["--bpw", "-inf"], ["--bpw", "nan"], ["--bpw", "1e999"],
                                  ["--sweep", "0.001:60:1e-12"], ["--sweep", "nan:5:1"], ["--bpw", "4,5"]])
def test_bad_budgets_are_one_line(base, capsys, argv):
    model, res = base
    line = refused(capsys, "plan", str(model), "--from", str(res), *argv, "-q")
    assert "usage:" not in line and (argv[0] in line or argv[1] in line)


def test_budget_above_the_most_expensive_plan_gives_it_and_a_note(base, capsys):
    model, res = base
    rc, err, out = run(capsys, "plan", str(model), "--from", str(res), "--size", "2MiB", "--json", "-q")
    assert rc == 0 and len(err) == 1 and err[0].startswith("note: ") and "above the most expensive plan" in err[0]
    best = json.loads(out)
    rc, _, out = run(capsys, "plan", str(model), "--from", str(res), "--bpw", "40", "--json", "-q")
    assert rc == 0 and json.loads(out)["class_types"] == best["class_types"]


# -- llama-quantize's own conventions -----------------------------------------------------------------

@pytest.mark.parametrize("threads", ["-1", "0", "2", "+3"])
def test_llama_quantize_thread_counts(base, tmp_path, capsys, threads):
    model, _ = base
    rc, err, _ = run(capsys, "quantize", str(model), "-o", str(tmp_path / "o.gguf"), "-q", "--", "Q4_K_M", threads)
    assert rc == 0 and not err, err
    rc, err, _ = run(capsys, "check-recipe", str(model), "--", "Q4_K_M", threads)
    assert rc == 0, err


def test_values_that_start_with_a_dash(base, tmp_path, capsys, monkeypatch):
    model, res = base
    monkeypatch.chdir(tmp_path)
    rc, err, _ = run(capsys, "quantize", str(model), "-o", "-x.gguf", "-q", "--", "Q4_K_M")
    assert rc == 0 and (tmp_path / "-x.gguf").is_file(), err
    line = refused(capsys, "plan", str(model), "--from", str(res), "--bpw", "-inf", "-q")
    assert "expected one argument" not in line and "bits-per-weight" in line


# -- concurrent runs -------------------------------------------------------------------------------------

def test_concurrent_plans_on_one_model_in_one_folder(tmp_path):
    """Several `plan` runs at once analyse the same model into the same MODEL.prism.json: each finishes,
    and the file left is one complete analysis, no temporary file beside it."""
    model = tmp_path / "model.gguf"
    synth.write(model, SPEC)
    env = child_env(OPENBLAS_NUM_THREADS="1")
    argv = [sys.executable, "-m", "prism_native", "plan", str(model), "--bpw", "4.5", "-q", "-t", "1"]
    procs = [subprocess.Popen(argv,
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    assert len({o for o, _ in outs}) == 1          # the same plan every time
    from prism_native.measure.results import Analysis
    assert Analysis.load(tmp_path / "model.prism.json").complete
    assert sorted(os.listdir(tmp_path)) == ["model.gguf", "model.prism.json"]


@pytest.mark.parametrize("pattern", ["(.*.*)*y", "(a+)+$", "(?:blk.*)+q"])
def test_exponential_patterns_are_refused_not_run(base, capsys, pattern):
    """A repeated repetition would take exponential time to match against a tensor name."""
    model, _ = base
    line = refused(capsys, "check-recipe", str(model), "--", "--tensor-type", f"{pattern}=q8_0", "Q4_K_M")
    assert pattern in line and "exponential" in line


@pytest.mark.parametrize("doc", [{"format": "prism-ablation/1"}, '{"format": "prism-ablation/1", "x": [' + "[" * 50,
                                 {"format": "prism-ablation/1", "model": {}, "high": "Q8_0", "base": {"kld_err": 0.1},
                                  "tensors": [{"name": "a", "cls": "c", "n_params": 5, "errors": {"Q4_K": 3}}],
                                  "records": []}])
@pytest.mark.parametrize("command", ["fit-weights", "fit-growth"])
def test_damaged_ablation_files_are_one_line(tmp_path, capsys, doc, command):
    f = tmp_path / "ablation.json"
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    line = refused(capsys, command, str(f))
    assert str(f) in line
