"""The input's tensor bytes, read slab by slab with pread into one reusable buffer.

Reading through the model's memory map would leave every page of the input mapped into this process
by the end (its resident size grows to the input's size, although the pages are only page cache);
pread keeps exactly one slab resident, which is what "one tensor slice in memory at a time" means.
llama-quantize reaches the same bound by unmapping each tensor after writing it.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np

from ..errors import FileFormatError
from ..read.model import Model, TensorInfo


class TensorSource:
    """Open the model's files read-only; read(t, start, n) returns n bytes of tensor t from byte start of
    its data, as a uint8 view valid until the next read."""

    def __init__(self, model: Model) -> None:
        self._paths: tuple[Path, ...] = tuple(model.parts)
        self._fds: list[int] = []
        self._buf = np.empty(0, dtype=np.uint8)

    def __enter__(self) -> TensorSource:
        try:
            self._fds = [os.open(p, os.O_RDONLY) for p in self._paths]
        except OSError as e:
            self.close()
            raise FileFormatError(f"{e.filename}: cannot read: {e.strerror}") from None
        return self

    def read(self, t: TensorInfo, start: int, n: int) -> np.ndarray:
        if self._buf.size < n:
            self._buf = np.empty(0, dtype=np.uint8)       # drop the smaller buffer first
            self._buf = np.empty(n, dtype=np.uint8)
        view = memoryview(self._buf)[:n]
        fd, pos, got = self._fds[t.part], t.offset + start, 0
        try:
            while got < n:
                k = os.preadv(fd, [view[got:]], pos + got)
                if k == 0:
                    raise FileFormatError(f"{self._paths[t.part]}: tensor '{t.name}' ends past the end of the file")
                got += k
        except OSError as e:
            raise FileFormatError(f"{self._paths[t.part]}: cannot read tensor '{t.name}': {e.strerror}") from None
        return self._buf[:n]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
