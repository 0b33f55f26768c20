"""Finding and running llama.cpp's command-line tools (llama-quantize, llama-perplexity, ...)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from ..errors import PrismError

# where a llama.cpp checkout or install keeps its binaries, relative to the directory given
_SUBDIRS = ("", "bin", "build/bin", "build/bin/Release")
BUILD_HINT = ("build llama.cpp (cmake -B build && cmake --build build -j --target llama-quantize "
              "llama-perplexity) and pass --llama-cpp DIR, or put its bin directory on PATH")


def find_tool(name: str, search_dir: str | Path | None = None) -> Path:
    """`name` inside search_dir (or its bin/ or build/bin/), else on PATH; PrismError when absent."""
    if search_dir is not None:
        root = Path(search_dir)
        if not root.is_dir():
            raise PrismError(f"--llama-cpp {root}: no such directory")
        for sub in _SUBDIRS:
            p = root / sub / name
            if p.is_file() and os.access(p, os.X_OK):
                return p
        raise PrismError(f"{name} not found in {root} (nor in its {', '.join(s for s in _SUBDIRS if s)}); "
                         f"{BUILD_HINT}")
    found = shutil.which(name)
    if found is None:
        raise PrismError(f"{name} not found on PATH; {BUILD_HINT}")
    return Path(found)


_ERROR_LINE = re.compile(r"^[0-9.]+ E (.*\S)")     # llama.cpp's log format: "0.00.032.921 E message"


def last_line(log: str) -> str:
    """The error lines of a llama.cpp log (the last three), else its last line."""
    errors = [m.group(1) for m in map(_ERROR_LINE.match, log.splitlines()) if m]
    if errors:
        return "; ".join(errors[-3:])
    return next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), "no output")


def run_streaming(argv: Sequence[str], on_output: Callable[[str], None] | None = None) -> str:
    """Run a tool with stdout and stderr merged; `on_output(text so far)` after every read, so a caller
    can follow progress. Returns the whole output; PrismError with its last line on failure."""
    name = Path(argv[0]).name
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    except OSError as e:
        raise PrismError(f"{argv[0]}: cannot run: {e.strerror or e}") from None
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
        raise PrismError(f"{name} failed ({rc}): {last_line(log)}")
    return log
