"""The input's tensor bytes, read slab by slab with pread into reusable buffers, the next slab read
ahead while the current one is computed.

Reading through the model's memory map would leave every page of the input mapped into this process
by the end (its resident size grows to the input's size, although the pages are only page cache);
pread keeps exactly two slabs resident (the one being computed, the one being read), which is what
"one tensor slice in memory at a time" means once reading overlaps computing. llama-quantize reaches
the same bound by unmapping each tensor after writing it, but reads and computes in turn.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import numpy as np

from ..errors import FileFormatError
from ..read.model import Model, TensorInfo

Read = tuple[TensorInfo, int, int]      # (tensor, first byte of its data, bytes)


class TensorSource:
    """Open the model's files read-only; read(t, start, n) returns n bytes of tensor t from byte start of
    its data, as a uint8 view valid until the next read.

    `schedule`, the reads to come in their order, lets a background thread read the next one while the
    caller computes on the current one (pread and the native kernels both release the GIL). A read that
    is not the next scheduled one is served directly, and reading ahead stops."""

    def __init__(self, model: Model, schedule: Iterable[Read] | None = None) -> None:
        self._paths: tuple[Path, ...] = tuple(model.parts)
        self._fds: list[int] = []
        self._bufs = [np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint8)]
        self._cur = 0                                   # the buffer the caller holds
        self._schedule: Iterator[Read] = iter(schedule or ())
        self._ahead: tuple[tuple[int, int, int], Future[np.ndarray]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._scheduled = schedule is not None

    def __enter__(self) -> TensorSource:
        try:
            self._fds = [os.open(p, os.O_RDONLY) for p in self._paths]
        except OSError as e:
            self.close()
            raise FileFormatError(f"{e.filename}: cannot read: {e.strerror}") from None
        if self._scheduled:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="prism-read")
            self._read_ahead()
        return self

    def read(self, t: TensorInfo, start: int, n: int) -> np.ndarray:
        key = (t.part, t.offset + start, n)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == key:
            out = ahead[1].result()
            self._cur = 1 - self._cur
        else:
            if ahead is not None:       # a broken schedule: wait until its buffer is idle, then stop it
                ahead[1].exception()
                self._schedule = iter(())
            out = self._pread(self._cur, t, start, n)
        self._read_ahead()
        return out

    def _read_ahead(self) -> None:
        """Start reading the next scheduled slab into the buffer the caller does not hold."""
        if self._pool is None:
            return
        nxt = next(self._schedule, None)
        if nxt is not None:
            t, start, n = nxt
            self._ahead = ((t.part, t.offset + start, n), self._pool.submit(self._pread, 1 - self._cur, t, start, n))

    def _pread(self, which: int, t: TensorInfo, start: int, n: int) -> np.ndarray:
        if self._bufs[which].size < n:
            self._bufs[which] = np.empty(0, dtype=np.uint8)       # drop the smaller buffer first
            self._bufs[which] = np.empty(n, dtype=np.uint8)
        buf = self._bufs[which]
        view = memoryview(buf)[:n]
        fd, pos, got = self._fds[t.part], t.offset + start, 0
        try:
            while got < n:
                k = os.preadv(fd, [view[got:]], pos + got)
                if k == 0:
                    raise FileFormatError(f"{self._paths[t.part]}: tensor '{t.name}' ends past the end of the file")
                got += k
        except OSError as e:
            raise FileFormatError(f"{self._paths[t.part]}: cannot read tensor '{t.name}': {e.strerror}") from None
        return buf[:n]

    def close(self) -> None:
        if self._pool is not None:          # no read may be in flight on a closed descriptor
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._ahead = None, None
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
