"""Running one CLI command on a mutant: in a child process with a timeout and an address-space limit.

Two ways, the same contract: `exec` starts `python -m prism_native` (subprocess, RLIMIT_AS set in
preexec_fn), exactly what a user runs; `fork` forks the already-imported fuzzer process and calls
the CLI's main() in the child (RLIMIT_AS set first), which skips the ~1.5 s interpreter and import
start-up per command, so that thousands of mutants fit in minutes. The forked child is made to look
like a fresh interpreter where it matters: Python's default warning filters and display, no logging
handlers, stdout/stderr on files, and an uncaught exception printed as a traceback with exit code 1.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence



@dataclass(frozen=True)
class Limits:
    timeout: float = 120.0          # seconds of wall time per command (the machine may be loaded)
    memory: int = 3 << 30           # bytes of address space beyond what the process already maps


@dataclass(frozen=True)
class RunResult:
    rc: int | None                  # exit code; None if killed by a signal or hung
    signal: int | None
    hang: bool
    stdout: str
    stderr: str
    seconds: float


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(extra: int) -> None:
    limit = _address_space() + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_exec(argv: Sequence[str], cwd: Path, limits: Limits) -> RunResult:
    """`python -m prism_native ARGV` in cwd, the real command line."""
    import prism_native
    # the child imports the same prism_native as this process: the installed one in CI, src/ in a dev tree
    home = str(Path(prism_native.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([home, os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    # the interpreter maps ~1 GiB before main() runs (numpy, scipy, OpenBLAS); measured beforehand
    extra = limits.memory + (1 << 30)
    proc = subprocess.Popen([sys.executable, "-m", "prism_native", *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (extra, extra)),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limits.timeout)
        hang = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hang = True
    rc = proc.returncode
    return RunResult(None if hang or rc < 0 else rc, -rc if rc < 0 and not hang else None, hang,
                     out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.monotonic() - t0)


def warm_up() -> None:
    """Import the CLI and every sub-command once, so that forked children start with them loaded."""
    import gc

    from prism_native.cli.main import build_parser
    build_parser()
    gc.freeze()   # a child's collections then leave the parent's objects (and their pages) alone


def run_fork(argv: Sequence[str], cwd: Path, limits: Limits) -> RunResult:
    """main(ARGV) in a forked child, in cwd."""
    out_path, err_path = cwd / ".fuzz-stdout", cwd / ".fuzz-stderr"
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            code = _child(list(argv), cwd, out_path, err_path, limits)
        finally:
            os._exit(code)
    deadline = t0 + limits.timeout
    status, hang = None, False
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
        elif time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            hang = True
            break
        else:
            time.sleep(0.005)
    out = out_path.read_text(errors="replace") if out_path.exists() else ""
    err = err_path.read_text(errors="replace") if err_path.exists() else ""
    for p in (out_path, err_path):
        p.unlink(missing_ok=True)
    if hang:
        return RunResult(None, None, True, out, err, time.monotonic() - t0)
    assert status is not None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return RunResult(None if sig else os.WEXITSTATUS(status), sig, False, out, err, time.monotonic() - t0)


def _child(argv: list[str], cwd: Path, out_path: Path, err_path: Path, limits: Limits) -> int:
    import io
    import logging
    import traceback
    import warnings

    os.chdir(cwd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    # a fresh interpreter's warning filters and display, and no logging handlers (pytest installs some)
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    warnings.showwarning = warnings._showwarning_orig       # type: ignore[attr-defined]
    warnings._showwarnmsg = warnings._showwarnmsg_impl      # type: ignore[attr-defined]
    logging.root.handlers.clear()
    logging.disable(logging.NOTSET)
    _limit_memory(limits.memory)
    try:
        from prism_native.cli.main import main
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001  (exactly what the interpreter would print)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code
