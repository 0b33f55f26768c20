"""Measure every quantizable tensor of a model: the quantization errors of every candidate type and the
structural metrics.

One tensor at a time per worker (memory stays bounded by a few tensors): its values go to the native
fused error kernel straight from the memory map (F32/F16/BF16, no float32 copy), and a float32 copy goes
to the spectral metrics. Results are checkpointed to the results file every few seconds, so an
interrupted run resumes where it stopped. The composite sensitivity is not computed here (plan.score).
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import FileFormatError, quoted
from ..llama.mix import planned_requires_imatrix
from ..llama.quantizable import quantizable_tensors
from ..quant import Scratch, float_view, invalid_data
from ..read.imatrix import Imatrix
from ..read.model import Model, TensorInfo
from ..read.taxonomy import classify
from .eigen import gram_operator
from .position import spectral_position
from .quant_error import CANDIDATES, ErrorSums, add_checked, stable_seed
from .results import Analysis, ModelIdentity, TensorResult
from .spectral import LineSample, SpectralMetrics, sample_lines, scaled_copy, spectral_metrics
from .values import Screen

CHECKPOINT_SECONDS = 5.0   # an interrupted analyze loses at most this much work
# Values per slab, per worker (512 MiB as float32): a larger tensor is read in slabs, never converted
# whole; memory then holds one slab (plus one sample of lines of that size) per worker. Every layer matrix
# of DeepSeek-V3 / Kimi-K2 (up to 18432 x 7168) is one slab; the embeddings and expert stacks are not.
SLAB_VALUES = 1 << 27
# Experts read per stack in the default mode: a 256- or 384-expert stack is then read ~1/13-1/19, so
# analysis reads a small part of a large MoE's bytes (docs/metrics.md states the sampling error).
SAMPLED_EXPERTS = 16


@dataclass(frozen=True)
class Settings:
    mode: str = "default"             # "default": sampled rows + fast spectra; "exact": everything
    sample_values: int = 1 << 20      # default mode: values per tensor fed to the error kernel, at most
    boundary_delta: float = 0.1       # "near a boundary" = within this many bin widths of it
    threads: int = 0                  # 0 = all cores
    seed: int = 0
    candidates: tuple[str, ...] = CANDIDATES

    def to_json(self) -> dict[str, Any]:
        """What the results file records: what must match for it to be resumed or reused."""
        d = asdict(self)
        d.pop("threads")                # results do not depend on the thread count
        d["candidates"] = list(self.candidates)
        return d


def _native_input(model: Model, t: TensorInfo, start: int, stop: int) -> tuple[np.ndarray, bool]:
    """(rows x ne0 array, is_bf16) of rows [start, stop) straight from the memory map (F32/F16/BF16)."""
    return float_view(model.raw_rows(t, start, stop), t.type_name)


def _spread(n: int, k: int) -> set[int]:
    return {round(i * (n - 1) / (k - 1)) for i in range(k)}


def _spectral_mats(n_mat: int, settings: Settings) -> list[int]:
    """Expert tensors: every expert in exact mode, up to 4 evenly spread ones by default."""
    if settings.mode == "exact" or n_mat <= 4:
        return list(range(n_mat))
    return sorted(_spread(n_mat, 4))


def sampled_experts(n_mat: int, settings: Settings) -> list[int] | None:
    """The experts of a stack that the default mode reads: SAMPLED_EXPERTS evenly spread ones and the
    spectral ones, when the stack has more (None: all). Experts of one stack are exchangeable in
    their statistics, so a stack's errors are estimated from these as from its rows."""
    if settings.mode == "exact" or n_mat <= SAMPLED_EXPERTS:
        return None
    return sorted(_spread(n_mat, SAMPLED_EXPERTS) | set(_spectral_mats(n_mat, settings)))


def nanmean(vals: Iterable[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def slab_rows(t: TensorInfo) -> int:
    """Rows per slab: the whole tensor up to SLAB_VALUES values, else as many whole matrices (experts)
    as fit, at least one (an expert's spectrum needs it whole), or for one matrix as many rows as fit."""
    if t.n_elements <= SLAB_VALUES:
        return t.n_rows
    unit = _matrix_rows(t) if t.n_rows > _matrix_rows(t) else 1
    return max(1, SLAB_VALUES // (unit * t.n_per_row)) * unit


def _matrix_rows(t: TensorInfo) -> int:
    return t.shape[1] if len(t.shape) > 1 else 1


class _Slabs:
    """A tensor read slab by slab into the worker's scratch buffer, each slab's mapped pages released
    after use: memory holds one slab, whatever the tensor's size.

    With `experts`, only those matrices of a stack are read, one per slab, as if the stack held just
    them: rows are numbered in that smaller stack, and real() gives a row's place in the tensor."""

    def __init__(self, model: Model, t: TensorInfo, scratch: Scratch | None,
                 experts: list[int] | None = None) -> None:
        self.model, self.t, self.scratch, self.experts = model, t, scratch, experts
        self.step = _matrix_rows(t) if experts is not None else slab_rows(t)
        self.n_rows = len(experts) * _matrix_rows(t) if experts is not None else t.n_rows

    def real(self, a: int) -> int:
        if self.experts is None:
            return a
        m = _matrix_rows(self.t)
        return self.experts[a // m] * m + a % m

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start row, stop row, float32 rows); the rows are valid until the next slab."""
        t = self.t
        for a in range(0, self.n_rows, self.step):
            b = min(a + self.step, self.n_rows)
            ra, rb = self.real(a), self.real(a) + b - a      # a slab never spans two sampled experts
            buf = self.scratch.get((b - a) * t.n_per_row) if self.scratch is not None else None
            try:
                yield a, b, self.model.read_rows(t, ra, rb, buf)
            finally:
                self.model.release(t, ra, rb)

    def errors(self, acc: ErrorSums, w32: np.ndarray, a: int, b: int, where: str) -> None:
        """Feed rows [a, b) to the error kernel: straight from the map for F32/F16/BF16, else the floats."""
        native = self.t.type_name in ("F32", "F16", "BF16")
        ra = self.real(a)
        x, bf16 = _native_input(self.model, self.t, ra, ra + b - a) if native else (w32, False)
        add_checked(acc, x, bf16, a, where)

    def product(self, dtype: type, scale: float) -> Callable[[np.ndarray], np.ndarray]:
        """v -> X^T X v of the whole matrix (X its long side's lines), one read of it per product (two
        for a wide matrix, X = W^T: W (W^T v))."""
        wide = self.t.n_rows < self.t.n_per_row

        def rows(w32: np.ndarray) -> np.ndarray:
            return scaled_copy(w32, scale).astype(dtype, copy=False)

        def apply(v: np.ndarray) -> np.ndarray:
            if not wide:
                return sum(gram_operator(rows(w), dtype)(v) for _, _, w in self)  # type: ignore[return-value]
            u = sum(rows(w).T @ v[a:b] for a, b, w in self)
            out = np.empty((self.t.n_rows, v.shape[1]), dtype=np.result_type(dtype, v))
            for a, b, w in self:
                out[a:b] = rows(w) @ u
            return out
        return apply


class _Gather:
    """The sampled long-side lines of a matrix too large to hold, collected slab by slab."""

    def __init__(self, t: TensorInfo, lines: np.ndarray) -> None:
        self.wide = t.n_rows < t.n_per_row
        self.lines = lines
        self.values = np.empty((lines.size, t.n_rows if self.wide else t.n_per_row), dtype=np.float32)

    def add(self, w32: np.ndarray, a: int, b: int) -> None:
        if self.wide:                  # lines are columns: every slab gives its rows of each
            self.values[:, a:b] = w32[:, self.lines].T
        else:
            lo, hi = np.searchsorted(self.lines, [a, b])
            self.values[lo:hi] = w32[self.lines[lo:hi] - a]


def measure_tensor(model: Model, t: TensorInfo, settings: Settings, imatrix: Imatrix | None,
                   scratch: Scratch | None = None) -> TensorResult:
    """Every metric of one tensor, in one read of it by slabs (quant.Scratch: the worker's buffer).

    The values are screened slab by slab (values.Screen: NaN/Inf refused, the range known); the error
    kernel reads F32/F16/BF16 straight from the map, and measures every row when values beyond float16's
    range may overflow some type's block scales (a second read when the tensor spans several slabs).
    Spectra: each expert measured whole within its slab; a single matrix larger than a slab from a
    sample of its long side's lines (spectral.LineSample), sigma_1 from products streamed from the file.
    A tensor of one slab is measured exactly as it was in one piece (docs/metrics.md)."""
    t0 = time.perf_counter()
    tax = classify(t.name)
    ne0 = t.n_per_row
    n_mat = t.shape[2] if len(t.shape) >= 3 else 1
    weights = imatrix.weights_for(t.name, ne0, n_mat) if imatrix is not None else None
    if weights is not None and weights.shape[0] == 1 and n_mat > 1:
        weights = np.repeat(weights, n_mat, axis=0)

    where = f"{model.path}: tensor {quoted(t.name)}"
    seed = stable_seed(t.name, settings.seed)
    mat_rows = _matrix_rows(t)
    experts = sampled_experts(n_mat, settings) if t.n_rows > mat_rows else None
    if experts is not None:     # measured as the stack of the sampled experts alone
        n_mat = len(experts)
        weights = weights[experts] if weights is not None else None
    slabs = _Slabs(model, t, scratch, experts)
    n_rows = slabs.n_rows
    whole = slabs.step >= n_rows
    chosen = _spectral_mats(t.n_rows // mat_rows, settings) if t.n_rows > mat_rows else []
    if experts is not None:     # the same experts, by their place among those read
        chosen = [experts.index(m) for m in chosen]
    gather = (_Gather(t, sample_lines((t.n_rows, ne0), settings.mode, SLAB_VALUES, seed))
              if not whole and not chosen else None)

    # without importance weights, llama-quantize's very-low-bit types are no candidates: not measured
    refused = {} if weights is not None else {
        c: why for c in settings.candidates if (why := planned_requires_imatrix(t.name, c)) is not None}

    def error_sums(sampled: bool) -> ErrorSums:
        return ErrorSums(n_rows, ne0, n_mat=n_mat, candidates=settings.candidates, weights=weights,
                         sample_values=settings.sample_values if sampled else 0, seed=seed,
                         delta=settings.boundary_delta, threads=settings.threads, refused=refused)

    scr = Screen(where, t.n_rows)
    err: ErrorSums | None = None
    spec: list[SpectralMetrics] = []
    for a, b, w32 in slabs:
        scr.add(w32, slabs.real(a))
        if err is None:   # one slab: its range is known before the errors, as in one piece
            err = error_sums(settings.mode == "default" and not (whole and scr.result().beyond_f16))
        slabs.errors(err, w32, a, b, where)
        if whole and not chosen:
            spec.append(spectral_metrics(w32, settings.mode, rng_seed=seed, norms=scr.result().norms))
        for m in chosen:
            if a <= m * mat_rows < b:
                spec.append(spectral_metrics(w32[m * mat_rows - a:(m + 1) * mat_rows - a], settings.mode,
                                             rng_seed=seed))
        if gather is not None:
            gather.add(w32, a, b)
    values = scr.result()
    assert err is not None
    if values.beyond_f16 and err.groups[0].rows is not None:   # several slabs: now every row
        err = error_sums(False)
        for a, b, w32 in slabs:
            slabs.errors(err, w32, a, b, where)
    if gather is not None:
        sample = LineSample((t.n_rows, ne0), gather.lines, gather.values, slabs.product)
        spec.append(spectral_metrics(sample, settings.mode, rng_seed=seed, norms=values.norms))
    errs = err.result(values.max_abs)
    metrics = {m: nanmean(getattr(s, m) for s in spec) for m in ("alpha", "dominance", "spectral_norm", "imbalance")}
    undefined = dict(errs.undefined)
    undefined.update({m: why for s in spec for m, why in s.undefined if math.isnan(metrics[m])})
    return TensorResult(
        name=t.name, cls=tax.cls, layer=tax.layer, shape=list(t.shape), n_params=t.n_elements,
        source_type=t.type_name, errors=errs.errors, osqe=errs.osqe, fragility=errs.fragility,
        boundary=errs.boundary, spectral_method=spec[0].method, rows_measured=errs.rows_measured,
        imatrix=weights is not None, seconds=time.perf_counter() - t0, undefined=undefined, **metrics)


def check_copied(model: Model, quantized: set[str]) -> None:
    """The tensors llama-quantize copies as they are: it validates them too (ggml_validate_row_data), so
    a NaN or Inf among them makes any plan fail; refused here, before the weights are measured."""
    for t in model.tensors:
        if t.name in quantized:
            continue
        bad = invalid_data(model.raw(t), t.qtype)
        model.release(t)
        if bad:
            raise FileFormatError(f"{model.path}: tensor {quoted(t.name)} has NaN or Inf values; llama-quantize "
                                  "refuses to copy it")


def fill_position(analysis: Analysis) -> None:
    """The spectral position prior of every layer tensor, per class (it needs all layers of the class)."""
    by_cls: dict[str, list[TensorResult]] = {}
    for r in analysis.tensors.values():
        if r.layer is not None:
            by_cls.setdefault(r.cls, []).append(r)
        else:
            r.undefined.update(position="not a layer tensor", depth="not a layer tensor")
    for rs in by_cls.values():
        rs.sort(key=lambda r: r.layer)  # type: ignore[arg-type, return-value]
        ok = [r for r in rs if math.isfinite(r.spectral_norm)]
        for r in rs:
            if len(ok) < 2 or r not in ok:
                why = ("no spectral norm" if r not in ok else
                       "fewer than 2 layers of its class have a spectral norm")
                r.undefined.update(position=why, depth=why)
        if len(ok) < 2:
            continue
        pos = spectral_position([r.spectral_norm for r in ok])
        for r, d in zip(ok, pos.depth):
            r.depth = float(d)
            r.position = abs(2.0 * float(d) - 1.0)   # ends of the chain: first and last layers


def analyze(model: Model, settings: Settings, *, imatrix: Imatrix | None = None, out: Path | None = None,
            resume: bool = True, progress: Callable[[int, str], None] | None = None) -> Analysis:
    """Measure every quantizable tensor (resuming from `out` when it holds a matching partial run)."""
    ident = ModelIdentity.of(model)
    im_ident = imatrix.identity() if imatrix is not None else None
    analysis = Analysis(ident, settings.to_json(), im_ident)
    if resume and out is not None and out.exists():
        prev = Analysis.load(out)
        if prev.model == ident and prev.settings == settings.to_json() and prev.imatrix == im_ident:
            prev.check_model(model, {t.name for t in quantizable_tensors(model)}, str(out))
            analysis.tensors = prev.tensors
    tensors = quantizable_tensors(model)
    if not tensors:
        raise FileFormatError(f"{model.path}: no tensor llama-quantize would quantize")
    check_copied(model, {t.name for t in tensors})
    # largest tensors first: the last tensors then are small ones, so no worker idles at the end
    todo = sorted((t for t in tensors if t.name not in analysis.tensors), key=lambda t: -t.n_elements)
    for t in tensors:
        if t.name in analysis.tensors and progress:
            progress(t.n_elements, t.name)
    workers = settings.threads or os.cpu_count() or 1
    # Tensors run concurrently, one per worker, each single-threaded (the native kernels release the
    # GIL; LAPACK gets one thread per worker): small LAPACK calls with several BLAS threads ran
    # 10-100x slower on a loaded 2-core machine. Results do not depend on the worker count.
    one = replace(settings, threads=1)
    scratch = Scratch()  # per worker thread: each tensor's float32 copy reuses mapped pages
    saved = time.monotonic()
    try:
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(measure_tensor, model, t, one, imatrix, scratch): t for t in todo[:workers]}
            queue = iter(todo[workers:])
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    t = pending.pop(fut)
                    analysis.tensors[t.name] = fut.result()
                    if out is not None and time.monotonic() - saved > CHECKPOINT_SECONDS:
                        analysis.save(out)  # checkpoint for resuming; not after every tensor (O(n^2) JSON)
                        saved = time.monotonic()
                    if progress:
                        progress(t.n_elements, t.name)
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(measure_tensor, model, nxt, one, imatrix, scratch)] = nxt
    except BaseException:  # Ctrl-C or an error: keep what was measured for the next run
        if out is not None and analysis.tensors:
            analysis.save(out)
        raise
    order = {t.name: i for i, t in enumerate(model.tensors)}
    analysis.tensors = dict(sorted(analysis.tensors.items(), key=lambda kv: order.get(kv[0], 1 << 30)))
    analysis.complete = True
    fill_position(analysis)
    if out is not None:
        analysis.save(out)
    return analysis
