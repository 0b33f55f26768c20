"""A user's file read with its bounds checked before anything is allocated for it.

Every reader of a file the user names (saved plans, results files, tensor-type files, legacy
imatrices) goes through here: only a regular file (a FIFO would block the open, a device never ends),
at most `limit` bytes, strict UTF-8 for text, and for JSON a nesting depth checked before json's C
parser recurses once per level, numbers that are finite (JSON has no NaN or Infinity; '1e999' would
read as inf). Failures are one-line errors of the caller's type naming the file.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, PrismError

MiB = 1 << 20

# a JSON string, escapes included (unrolled: no backtracking on long strings)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def read_bytes(path: str | Path, what: str, limit: int, error: type[PrismError] = FileFormatError) -> bytes:
    """The whole file, refused unless it is a regular file of at most `limit` bytes."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except OSError as e:
        raise error(f"{p}: cannot read {what}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{p}: {what} is {'a directory' if stat.S_ISDIR(st.st_mode) else 'not a regular file'}")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise error(f"{p}: {what} is {st.st_size:,} bytes, more than the {limit:,} it may have")
        try:
            data = f.read(min(limit, st.st_size) + 1)
        except OSError as e:
            raise error(f"{p}: cannot read {what}: {e.strerror or e}") from None
    if len(data) > limit:          # grew while being read
        raise error(f"{p}: {what} is more than the {limit:,} bytes it may have")
    return data


def read_text(path: str | Path, what: str, limit: int, error: type[PrismError] = FileFormatError) -> str:
    data = read_bytes(path, what, limit, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects, brackets inside strings not counted."""
    codes = np.frombuffer(_JSON_STRING.sub(b"", data), np.uint8)
    if not codes.size:
        return 0
    return int(np.cumsum(_OPEN[codes], dtype=np.int64).max(initial=0))


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text} out of range")
    return v


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(path: str | Path, what: str, limit: int, max_depth: int,
              error: type[PrismError] = FileFormatError) -> Any:
    """A JSON document of at most `limit` bytes and `max_depth` levels, every number finite."""
    data = read_bytes(path, what, limit, error)
    depth = json_depth(data)
    if depth > max_depth:
        raise error(f"{path}: {what} is nested {depth} levels deep, more than the {max_depth} it may have")
    try:
        return json.loads(data.decode("utf-8"), parse_float=_finite, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise error(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    except (ValueError, RecursionError) as e:    # JSONDecodeError is a ValueError; so are 5000-digit ints
        raise error(f"{path}: {what} is not valid JSON ({e})") from None
