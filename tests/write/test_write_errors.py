"""Bad input to quantize: one line on stderr, exit code 2, nothing half-written left behind (no output, no
temporary file, an existing output untouched), and the input never modified."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support import synth

import prism_native
from prism_native.cli.main import main
from prism_native.errors import OutputError, PrismError, UsageError
from prism_native.read.model import Model
from prism_native import files
from prism_native.write import encode, source
from prism_native.write import quantize as wq

SPEC = replace(synth.VARIANTS["dense"], n_layer=2)


@pytest.fixture
def model(tmp_path) -> Path:
    src = tmp_path / "in" / "model.gguf"
    src.parent.mkdir()
    synth.write(src, SPEC)
    return src


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["quantize", *argv])
    err = capsys.readouterr().err
    return rc, err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("prism-native quantize: error: "), lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part") or p.name.startswith("."))


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(json.dumps({"recipe": {"planned": {}, "written": {}, **recipe}}))
    return path


# -- recipes ---------------------------------------------------------------------------------------------


def test_unknown_type_in_a_recipe(model, tmp_path, capsys):
    r = write_recipe(tmp_path / "plan.json", {"base_type": "Q4_K",
                                              "tensor_types": [{"pattern": "attn_q", "type": "Q9_K"}]})
    rc, err = run(capsys, str(model), "--recipe", str(r), "-o", str(tmp_path / "out.gguf"))
    assert rc == 2 and "unknown type 'Q9_K'" in one_line(err)
    assert not (tmp_path / "out.gguf").exists() and leftovers(tmp_path) == []


def test_unknown_base_type_and_not_a_plan(model, tmp_path, capsys):
    r = write_recipe(tmp_path / "plan.json", {"base_type": "Q4_X", "tensor_types": []})
    rc, err = run(capsys, str(model), "--recipe", str(r), "-o", str(tmp_path / "out.gguf"))
    assert rc == 2 and "base_type: unknown type 'Q4_X'" in one_line(err)
    (tmp_path / "junk.json").write_text("{not json")
    rc, err = run(capsys, str(model), "--recipe", str(tmp_path / "junk.json"), "-o", str(tmp_path / "out.gguf"))
    assert rc == 2 and "saved plan is not valid JSON" in one_line(err)


def test_recipe_naming_tensors_the_model_lacks(model, tmp_path, capsys):
    r = write_recipe(tmp_path / "plan.json", {
        "base_type": "Q4_K", "tensor_types": [{"pattern": r"^blk\.[0-9]+\.attn_q\.weight$", "type": "Q8_0"}],
        "written": {"blk.0.attn_q.weight": "Q8_0", "blk.7.attn_q.weight": "Q8_0"}})
    rc, err = run(capsys, str(model), "--recipe", str(r), "-o", str(tmp_path / "out.gguf"))
    line = one_line(err)
    assert rc == 2 and "lacks" in line and "blk.7.attn_q.weight" in line
    assert not (tmp_path / "out.gguf").exists() and leftovers(tmp_path) == []


def test_recipe_whose_types_the_model_does_not_get(model, tmp_path, capsys):
    r = write_recipe(tmp_path / "plan.json", {"base_type": "Q4_K", "tensor_types": [],
                                              "written": {"blk.0.attn_q.weight": "Q8_0"}})
    rc, err = run(capsys, str(model), "--recipe", str(r), "-o", str(tmp_path / "out.gguf"))
    assert rc == 2 and "the plan says Q8_0" in one_line(err)


def test_types_prism_native_cannot_compute(model, tmp_path, capsys):
    from prism_native import qtypes
    from prism_native.llama.mix import planned_requires_imatrix
    missing = next((n for n, q in qtypes.all_types().items() if q.quantized and not q.native and n != "Q8_K"
                    and q.block_size == 256 and planned_requires_imatrix("blk.0.attn_q.weight", n) is None), None)
    if missing is not None:   # (none once every type llama-quantize writes is native)
        rc, err = run(capsys, str(model), "-o", str(tmp_path / "o.gguf"), "--", "--tensor-type",
                      f"attn_q={missing.lower()}", "Q4_K_M")
        assert rc == 2 and f"no quantizer for {missing}" in one_line(err)
    rc, err = run(capsys, str(model), "-o", str(tmp_path / "o.gguf"), "--", "--keep-split", "Q4_K_M")
    assert rc == 2 and "--keep-split" in one_line(err)
    rc, err = run(capsys, str(model), "-o", str(tmp_path / "o.gguf"), "--", "--prune-layers", "1,x", "Q4_K_M")
    assert rc == 2 and "invalid layer id 'x'" in one_line(err)
    rc, err = run(capsys, str(model), "-o", str(tmp_path / "o.gguf"), "--", "--override-kv", "a=x:1", "Q4_K_M")
    assert rc == 2 and "invalid type for KV override" in one_line(err)
    rc, err = run(capsys, str(model), "-o", str(tmp_path / "o.gguf"), "--", "--override-kv",
                  "llama.block_count=int:3", "Q4_K_M")
    assert rc == 2 and "hyper-parameter" in one_line(err)
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.gguf").exists()


def test_imatrix_of_another_model(model, tmp_path, capsys):
    imat = tmp_path / "other.imatrix.gguf"
    synth.write_imatrix(imat, replace(SPEC, n_embd=512))       # rows of 512, the model's have 256
    rc, err = run(capsys, str(model), "-o", str(tmp_path / "o.gguf"), "--", "--imatrix", str(imat), "Q4_K_M")
    assert rc == 2 and "imatrix size 512 is different from tensor size 256" in one_line(err)


def test_dry_run_writes_nothing(model, tmp_path, capsys):
    assert main(["quantize", str(model), "-o", str(tmp_path / "o.gguf"), "--", "--dry-run", "Q4_K_M"]) == 0
    assert "predicted size" in capsys.readouterr().out and not (tmp_path / "o.gguf").exists()


# -- the output path ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "relative"])
def test_output_is_the_input(model, tmp_path, capsys, monkeypatch, how):
    before = digest(model)
    if how == "same":
        out = model
    elif how == "symlink":
        out = tmp_path / "link.gguf"
        out.symlink_to(model)
    elif how == "hardlink":
        out = tmp_path / "hard.gguf"
        os.link(model, out)
    else:
        monkeypatch.chdir(model.parent)
        out = Path("../in/model.gguf")
    rc, err = run(capsys, str(model), "-o", str(out), "--", "Q4_K_M")
    assert rc == 2 and "refusing to overwrite the input" in one_line(err)
    assert digest(model) == before and leftovers(model.parent) == [] and leftovers(tmp_path) == []


def test_output_is_a_directory_or_in_a_missing_folder(model, tmp_path, capsys):
    rc, err = run(capsys, str(model), "-o", str(tmp_path), "--", "Q4_K_M")
    assert rc == 2 and "is a directory" in one_line(err)
    rc, err = run(capsys, str(model), "-o", str(tmp_path / "nope" / "o.gguf"), "--", "Q4_K_M")
    assert rc == 2 and "does not exist" in one_line(err)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder this process cannot create files in: mode 0555, or for root the immutable attribute."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    if os.access(d, os.W_OK):                               # root ignores the mode
        immutable = shutil.which("chattr") is not None and \
            subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
        if not immutable:
            d.chmod(0o755)
            pytest.skip("cannot make a folder unwritable for this user")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    d.chmod(0o755)


def test_unwritable_folder(model, readonly_dir, capsys, monkeypatch):
    monkeypatch.setattr(files.os, "access", lambda *a, **k: True)   # get past the up-front check: mkstemp fails
    rc, err = run(capsys, str(model), "-o", str(readonly_dir / "o.gguf"), "--", "Q4_K_M")
    assert rc == 2 and "cannot write in" in one_line(err)
    assert list(readonly_dir.iterdir()) == []


def test_unwritable_folder_up_front(model, readonly_dir, capsys):
    if os.access(readonly_dir, os.W_OK):
        pytest.skip("os.access says writable (root with an immutable folder); covered by the mkstemp test")
    rc, err = run(capsys, str(model), "-o", str(readonly_dir / "o.gguf"), "--", "Q4_K_M")
    assert rc == 2 and "not writable" in one_line(err)


def test_full_disk_up_front(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    (tmp_path / "o.gguf").write_bytes(b"old")
    rc, err = run(capsys, str(model), "-o", str(tmp_path / "o.gguf"), "--", "Q4_K_M")
    assert rc == 2 and "not enough disk space" in one_line(err)
    assert (tmp_path / "o.gguf").read_bytes() == b"old" and leftovers(tmp_path) == []


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (root only; skipped elsewhere)."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)


def test_disk_full_while_writing(model, small_fs, capsys, monkeypatch):
    """The free-space check passes (patched away) but the file system fills up: ENOSPC mid-file."""
    monkeypatch.setattr(wq, "check_space", lambda final, n: None)
    (small_fs / "o.gguf").write_bytes(b"old")
    rc, err = run(capsys, str(model), "-o", str(small_fs / "o.gguf"), "--", "Q8_0")
    assert rc == 2 and "disk full while writing" in one_line(err)
    assert sorted(p.name for p in small_fs.iterdir()) == ["o.gguf"]
    assert (small_fs / "o.gguf").read_bytes() == b"old"


def test_disk_full_up_front_for_real(model, small_fs, capsys):
    rc, err = run(capsys, str(model), "-o", str(small_fs / "o.gguf"), "--", "Q8_0")
    assert rc == 2 and "not enough disk space" in one_line(err) and list(small_fs.iterdir()) == []


# -- interruptions -----------------------------------------------------------------------------------------


def _interrupt_after(monkeypatch, n: int, action) -> None:
    real = encode.TensorEncoder.encode
    calls = {"n": 0}

    def encode_then_stop(self, s):
        calls["n"] += 1
        if calls["n"] == n:
            action()
        return real(self, s)
    monkeypatch.setattr(encode.TensorEncoder, "encode", encode_then_stop)


def test_ctrl_c_leaves_nothing(model, tmp_path, capsys, monkeypatch):
    (tmp_path / "o.gguf").write_bytes(b"old")

    def ctrl_c():
        raise KeyboardInterrupt
    _interrupt_after(monkeypatch, 5, ctrl_c)
    rc = main(["quantize", str(model), "-o", str(tmp_path / "o.gguf"), "--", "Q4_K_M"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert (tmp_path / "o.gguf").read_bytes() == b"old" and leftovers(tmp_path) == []


def test_sigterm_leaves_nothing(model, tmp_path, capsys, monkeypatch):
    _interrupt_after(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    rc = main(["quantize", str(model), "-o", str(tmp_path / "o.gguf"), "--", "Q4_K_M"])
    assert rc == 130 and not (tmp_path / "o.gguf").exists() and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_bad_data_in_the_input(tmp_path, capsys):
    src = tmp_path / "nan.gguf"
    synth.write(src, SPEC)
    t = Model(src).tensor("blk.1.attn_q.weight")
    with open(src, "r+b") as f:              # a NaN (0x7e00) in the middle of an F16 matrix
        f.seek(t.offset + 1000)
        f.write(np.array([0x7E00], "<u2").tobytes())
    rc, err = run(capsys, str(src), "-o", str(tmp_path / "o.gguf"), "--", "Q4_K_M")
    assert rc == 2 and "blk.1.attn_q.weight' has invalid data" in one_line(err)
    assert not (tmp_path / "o.gguf").exists() and leftovers(tmp_path) == []


# -- the Python API ----------------------------------------------------------------------------------------


def test_api_bad_arguments_are_value_errors(model, tmp_path):
    out = tmp_path / "o.gguf"
    cases = [dict(plan_or_types="Q9_K"), dict(plan_or_types=42), dict(plan_or_types="Q4_K_M", threads=-1),
             dict(plan_or_types={"blk.0.attn_q.weight": "Q9_K"}), dict(plan_or_types="Q4_K_M", imatrix=3.0)]
    for kw in cases:
        with pytest.raises(ValueError):
            prism_native.quantize_model(model, out, progress=False, **kw)
    with pytest.raises(ValueError):
        prism_native.quantize_model(model, 17, "Q4_K_M")            # type: ignore[arg-type]
    with pytest.raises(PrismError, match="lacks"):
        prism_native.quantize_model(model, out, {"blk.9.attn_q.weight": "Q4_K"})
    with pytest.raises(PrismError, match="never quantizes"):
        prism_native.quantize_model(model, out, {"blk.0.attn_norm.weight": "Q4_K"})
    with pytest.raises(OutputError, match="refusing to overwrite the input"):
        prism_native.quantize_model(model, model, "Q4_K_M")
    assert not out.exists() and leftovers(tmp_path) == []
    assert issubclass(UsageError, ValueError)


def test_small_slabs_change_no_byte(tmp_path, monkeypatch):
    """Slabs of a few rows (never crossing an expert, each with its own imatrix slice) write the same file;
    no write is larger than one slab."""
    spec = replace(synth.VARIANTS["moe"], n_layer=2)
    src, imat = tmp_path / "moe.gguf", tmp_path / "moe.imatrix.gguf"
    synth.write(src, spec)
    synth.write_imatrix(imat, spec)
    whole = prism_native.quantize_model(src, tmp_path / "a.gguf", "Q4_K_M", imatrix=imat, progress=False)
    monkeypatch.setattr(encode, "SLAB_VALUES", 3 * 256 + 5)
    sizes: list[int] = []
    real = files.AtomicOutput.write

    def record(self, data):
        sizes.append(memoryview(data).nbytes)
        return real(self, data)
    monkeypatch.setattr(files.AtomicOutput, "write", record)
    reads: list[int] = []
    real_read = source.TensorSource.read

    def record_read(self, t, start, n):
        reads.append(n)
        return real_read(self, t, start, n)
    monkeypatch.setattr(source.TensorSource, "read", record_read)
    sliced = prism_native.quantize_model(src, tmp_path / "b.gguf", "Q4_K_M", imatrix=imat, progress=False)
    assert digest(tmp_path / "a.gguf") == digest(tmp_path / "b.gguf")
    assert whole.file_bytes == sliced.file_bytes
    data_writes = sizes[1:]                                  # after the metadata
    assert max(data_writes) <= 3 * 256 * 4                   # 3 rows of 256 F32 values at most
    assert max(reads) <= 3 * 256 * 4 and sum(reads) == sum(t.n_bytes for t in Model(src).tensors)


def test_slabs_stop_at_expert_boundaries():
    from prism_native.read.model import TensorInfo
    t = TensorInfo("blk.0.ffn_up_exps.weight", (256, 10, 3), 1, 256 * 30 * 2, 0, 0)
    got = [(s.row0, s.row1, s.expert) for s in encode.slabs(t, 4 * 256)]
    assert got == [(0, 4, 0), (4, 8, 0), (8, 10, 0), (10, 14, 1), (14, 18, 1), (18, 20, 1),
                   (20, 24, 2), (24, 28, 2), (28, 30, 2)]
    assert [(s.row0, s.row1) for s in encode.slabs(t, 1)][:2] == [(0, 1), (1, 2)]     # at least a row


def test_disk_full_message_names_the_error():
    e = OSError(errno.ENOSPC, "No space left on device")
    assert "disk full" in files._os_message(Path("/x/o.gguf"), e)
