"""Finding and running llama.cpp's command-line tools (llama-quantize, llama-perplexity, ...).

A tool is looked for in an explicit directory (--llama-cpp DIR: DIR, DIR/bin, DIR/build/bin), else at
$PRISM_LLAMA_QUANTIZE (for llama-quantize) or next to it (for the other tools), else on PATH.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ToolError

ENV_QUANTIZE = "PRISM_LLAMA_QUANTIZE"
# where a llama.cpp checkout or install keeps its binaries, relative to the directory given
_SUBDIRS = ("", "bin", "build/bin", "build/bin/Release")
BUILD_HINT = ("build llama.cpp (cmake -B build && cmake --build build -j --target llama-quantize "
              "llama-perplexity) and pass --llama-cpp DIR, or put its bin directory on PATH")


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def locate_tool(name: str, search_dir: str | Path | None = None) -> Path | None:
    """Where `name` is (see the module docstring), or None."""
    if search_dir is not None:
        return next((Path(search_dir) / s / name for s in _SUBDIRS if _executable(Path(search_dir) / s / name)), None)
    env = os.environ.get(ENV_QUANTIZE)
    if env:
        p = Path(env) if name == "llama-quantize" else Path(env).with_name(name)
        if _executable(p):
            return p
        if name == "llama-quantize":
            return None
    found = shutil.which(name)
    return Path(found) if found else None


def find_tool(name: str, search_dir: str | Path | None = None) -> Path:
    """locate_tool, or a ToolError that says how to get the tool."""
    if search_dir is not None and not Path(search_dir).is_dir():
        raise ToolError(f"--llama-cpp {search_dir}: no such directory")
    p = locate_tool(name, search_dir)
    if p is not None:
        return p
    if search_dir is not None:
        raise ToolError(f"{name} not found in {search_dir} (nor in its {', '.join(s for s in _SUBDIRS if s)}); "
                        f"{BUILD_HINT}")
    if name == "llama-quantize" and os.environ.get(ENV_QUANTIZE):
        raise ToolError(f"${ENV_QUANTIZE}={os.environ[ENV_QUANTIZE]} is not an executable file")
    raise ToolError(f"{name} not found on PATH; {BUILD_HINT}")


_ERROR_LINE = re.compile(r"^[0-9.]+ E (.*\S)")     # llama.cpp's log format: "0.00.032.921 E message"


def last_line(log: str) -> str:
    """The error lines of a llama.cpp log (the last three), else its last line."""
    errors = [m.group(1) for m in map(_ERROR_LINE.match, log.splitlines()) if m]
    if errors:
        return "; ".join(errors[-3:])
    return next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), "no output")


def run(argv: Sequence[str], on_output: Callable[[str], None] | None = None) -> str:
    """Run a tool with stdout and stderr merged; `on_output(text so far)` after every read, so a caller
    can follow progress. Returns the whole output; ToolError with its last line on failure."""
    name = Path(argv[0]).name
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    except OSError as e:
        raise ToolError(f"{argv[0]}: cannot run: {e.strerror or e}") from None
    assert proc.stdout is not None
    parts: list[bytes] = []
    try:
        while chunk := os.read(proc.stdout.fileno(), 1 << 16):
            parts.append(chunk)
            if on_output is not None:
                on_output(b"".join(parts).decode("utf-8", "replace"))
    except BaseException:          # interrupted (or the callback failed): leave no tool running
        proc.kill()
        raise
    finally:
        proc.stdout.close()
        rc = proc.wait()
    log = b"".join(parts).decode("utf-8", "replace")
    if rc != 0:
        raise ToolError(f"{name} failed ({rc}): {last_line(log)}")
    return log
