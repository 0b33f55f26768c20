"""write_job: write the output file of a job (write/job.py; pipeline.py makes jobs from what the user asks for).

The streaming part of llama_model_quantize_impl's main loop: the metadata first (its size and every
offset are known from the decisions, so no placeholder is rewritten later), then each tensor in llama's
order, slab by slab (encode.py), padded with zeros to the alignment. One slab of one tensor is in
memory at a time: its input bytes (read with pread, source.py), its float32 copy when it is dequantized,
and its output bytes. The file is complete, under its final name, only when
the last byte is written (output.AtomicOutput).
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RecipeError, UsageError
from ..files import AtomicOutput, check_destination, check_space
from ..gguf.constants import pad
from ..progress import Progress
from ..quant import Scratch, invalid_data
from .encode import TensorEncoder, slabs
from .job import Job, TensorJob
from .source import Read, TensorSource


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    predicted_bytes: int      # the layout's size, known before the first byte was written
    file_bytes: int           # the size of the file written
    tensor_bytes: int         # tensor data without padding (llama-quantize's "quant size")
    input_bytes: int
    seconds: float
    ftype: str
    notes: tuple[str, ...]

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class _WriteBehind:
    """The output file, written by a second thread: each slab handed over with give() is written while
    the next one is computed (the file's write releases the GIL). At most one slab waits, so memory
    holds one more output slab. write() and zeros() are synchronous, for bytes the caller reuses (a copied slab in
    the source's buffer)."""

    def __init__(self, out: AtomicOutput) -> None:
        self.out = out
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prism-write")
        self._pending: Future[None] | None = None

    def give(self, data: np.ndarray) -> None:
        self.wait()
        self._pending = self._pool.submit(self.out.write, data)

    def write(self, data: bytes | np.ndarray) -> None:
        self.wait()
        self.out.write(data)

    def zeros(self, n: int) -> None:
        self.wait()
        self.out.zeros(n)

    def wait(self) -> None:
        """Until the slab handed over is on its way to the disk; its write error is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _write_tensor(out: _WriteBehind, source: TensorSource, tj: TensorJob, threads: int, scratch: Scratch,
                  bar: Progress) -> int:
    t = tj.info
    item = f"{t.name} {t.type_name}->{tj.target.name}"
    row_in = t.qtype.row_bytes(t.n_per_row)
    if not tj.converted:      # copied in slabs of whole rows, each validated (the loader's check_tensors)
        for s in slabs(t):
            part = source.read(t, s.row0 * row_in, (s.row1 - s.row0) * row_in)
            if invalid_data(part, t.qtype):
                raise RecipeError(f"tensor '{t.name}' has invalid data (NaN or Inf)")
            out.write(part)
            bar.update(part.nbytes, item)
        return t.n_bytes
    enc = TensorEncoder(source, t, tj.target, tj.imatrix, threads, scratch)
    n = 0
    for s in slabs(t):
        data = enc.encode(s)
        out.give(data)
        n += data.nbytes
        bar.update((s.row1 - s.row0) * row_in, item)
    return n


def _reads(job: Job) -> Iterator[Read]:
    """Every read _write_tensor makes, in its order: the source's read-ahead schedule."""
    for tj in job.tensors:
        t = tj.info
        row = t.qtype.row_bytes(t.n_per_row)
        for s in slabs(t):
            yield t, s.row0 * row, (s.row1 - s.row0) * row


def write_job(job: Job, dst: str | Path, *, threads: int = 0, progress: bool | Progress = True,
              inputs: Iterable[str | Path] = ()) -> QuantizeResult:
    """Write `job` to `dst` (temporary name, renamed at the end); checks the destination (never the model
    or one of the other files the command reads, `inputs`) and free space first. `progress`: a Progress
    to update, True for a line on a terminal's stderr, False for none."""
    if threads < 0:
        raise UsageError("threads must be >= 0 (0: all cores)")
    threads = min(threads, os.cpu_count() or 1)      # more than the cores changes no byte, only memory
    final = check_destination(dst, [*job.model.parts, *inputs])
    check_space(final, job.file_bytes)
    bar = progress if isinstance(progress, Progress) else Progress(
        job.input_bytes, "quantize", enabled=None if progress else False, rate_unit="MB/s", rate_scale=1e-6)
    scratch = Scratch()
    t0 = time.perf_counter()
    tensor_bytes = 0
    try:
        with TensorSource(job.model, _reads(job)) as source, AtomicOutput(final) as out:
            behind = _WriteBehind(out)
            try:
                behind.write(job.layout.meta())
                for tj, entry in zip(job.tensors, job.layout.tensors):
                    n = _write_tensor(behind, source, tj, threads, scratch, bar)
                    if n != entry.nbytes:
                        raise AssertionError(f"{entry.name}: wrote {n} bytes, the layout says {entry.nbytes}")
                    behind.zeros(pad(n, job.layout.alignment) - n)
                    tensor_bytes += n
                behind.wait()
            finally:
                behind.close()
            if out.written != job.file_bytes:
                raise AssertionError(f"wrote {out.written} bytes, the layout says {job.file_bytes}")
            out.commit()
    finally:
        if not isinstance(progress, Progress):
            bar.close()
    return QuantizeResult(final, job.file_bytes, os.stat(final).st_size, tensor_bytes, job.input_bytes,
                          time.perf_counter() - t0, job.ftype, job.notes)
