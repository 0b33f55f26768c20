"""Measure every quantizable tensor of a model: the seven metrics and the error of every candidate type.

One tensor at a time (memory stays bounded by a few tensors): its values go to the native fused error
kernel straight from the memory map (F32/F16/BF16, no float32 copy), and a float32 copy goes to the
spectral metrics. Results are written to the results file after every tensor, so an interrupted run
resumes where it stopped; plans at any budget then reuse the file without touching the weights.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .. import __version__
from .. import qtypes
from ..errors import PrismError
from ..read.model import Model, TensorInfo
from ..read.imatrix import Imatrix
from .position import spectral_position
from .spectral import spectral_metrics
from ..quant import Scratch, quant_errors
from ..llama.rules import not_quantized_reason
from ..plan.score import Weights, class_sensitivity, tensor_sensitivity
from ..read.taxonomy import classify

FORMAT = "prism-analysis/1"
OSQE_TYPES = {2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 6: "Q6_K"}   # OSQE bit levels -> ggml's own quantizers
BOUNDARY_TYPE = "Q4_K"                                       # boundary density on the 4-bit grid
# every type a plan may pick: the K-quants and IQ4_XS, and the 32-block types that rows not fitting
# 256 fall back to, offered directly (Q4_1 is no K-quant's fallback but is often the best at 5 bpw)
CANDIDATES = ("Q2_K", "Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "IQ4_NL", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
CHECKPOINT_SECONDS = 5.0   # an interrupted analyze loses at most this much work


@dataclass(frozen=True)
class Settings:
    mode: str = "default"             # "default": sampled rows + fast spectra; "exact": everything
    sample_values: int = 1 << 20      # default mode: values per tensor fed to the error kernel, at most
    boundary_delta: float = 0.1       # "near a boundary" = within this many bin widths of it
    threads: int = 0                  # 0 = all cores
    seed: int = 0
    candidates: tuple[str, ...] = CANDIDATES

    def key(self) -> dict[str, Any]:
        """What must match for a results file to be resumed or reused."""
        d = asdict(self)
        d.pop("threads")                # results do not depend on the thread count
        d["candidates"] = list(self.candidates)
        return d


@dataclass
class TensorResult:
    name: str
    cls: str
    layer: int | None
    shape: list[int]                  # ggml order, ne0 first
    n_params: int
    source_type: str
    errors: dict[str, dict[str, Any]]  # requested type -> {"type": written type, "rel_error": float}
    osqe: dict[str, float]            # "2","3","4","6" -> relative error
    fragility: float
    boundary: float
    alpha: float
    dominance: float
    spectral_norm: float
    imbalance: float
    spectral_method: str
    rows_measured: int
    imatrix: bool
    seconds: float
    position: float = math.nan        # filled once all layers of the class are known
    depth: float = math.nan
    sensitivity: float = math.nan

    def rel_error(self, requested: str) -> float:
        return float(self.errors[requested]["rel_error"])


@dataclass
class Analysis:
    model: dict[str, Any]
    settings: dict[str, Any]
    imatrix: dict[str, Any] | None
    weights: dict[str, float]
    tensors: dict[str, TensorResult] = field(default_factory=dict)
    complete: bool = False
    tool: str = f"prism_native {__version__}"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "tool": self.tool, "complete": self.complete, "model": self.model,
                "settings": self.settings, "imatrix": self.imatrix, "weights": self.weights,
                "tensors": {n: _clean(asdict(t)) for n, t in self.tensors.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "results file") -> "Analysis":
        if d.get("format") != FORMAT:
            raise PrismError(f"{source}: not a prism_native analysis (format {d.get('format')!r})")
        tensors = {n: TensorResult(**_unclean(t)) for n, t in d.get("tensors", {}).items()}
        return cls(d["model"], d["settings"], d.get("imatrix"), d.get("weights", {}), tensors,
                   bool(d.get("complete")), d.get("tool", "?"))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "Analysis":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise PrismError(f"{p}: results file not found") from None
        except (OSError, ValueError) as e:
            raise PrismError(f"{p}: unreadable results file ({e})") from None
        try:
            return cls.from_json(d, str(p))
        except (KeyError, TypeError) as e:
            raise PrismError(f"{p}: damaged results file ({e})") from None


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: store it as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _unclean(d: dict[str, Any]) -> dict[str, Any]:
    floats = {"fragility", "boundary", "alpha", "dominance", "spectral_norm", "imbalance", "seconds",
              "position", "depth", "sensitivity"}
    return {k: (math.nan if v is None and k in floats else v) for k, v in d.items()}


# -- model identity ---------------------------------------------------------------------------------

def model_identity(model: Model) -> dict[str, Any]:
    """File size, tensor names and a hash of the header (metadata + tensor infos), per part."""
    data_start = min((t.offset for t in model.tensors if t.part == 0), default=0)
    h = hashlib.sha256()
    with open(model.path, "rb") as f:
        h.update(f.read(data_start))
    names = [t.name for t in model.tensors]
    return {"path": str(model.path), "name": model.name, "arch": model.arch, "file_bytes": model.file_bytes,
            "parts": len(model.parts), "n_tensors": len(names), "n_params": model.n_params,
            "header_sha256": h.hexdigest(),
            "tensor_names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


def quantizable(model: Model) -> list[TensorInfo]:
    return [t for t in model.tensors if not_quantized_reason(t.name, t.n_dims, model.arch) is None]


# -- one tensor -------------------------------------------------------------------------------------

def _native_input(model: Model, t: TensorInfo) -> tuple[np.ndarray, bool]:
    """(rows x ne0 array, is_bf16) straight from the memory map (F32/F16/BF16: no float32 copy)."""
    dt = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[t.type_name]
    return model.raw(t).view(dt).reshape(t.n_rows, t.n_per_row), t.type_name == "BF16"


def _sample_rows(n_rows: int, ne0: int, budget: int, seed: int) -> np.ndarray | None:
    if n_rows * ne0 <= budget:
        return None
    k = max(1, budget // ne0)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=k, replace=False)).astype(np.int64)


def _stable_seed(name: str, seed: int) -> int:
    return zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1 & 0xFFFFFFFF)


def _measure_errors(x: np.ndarray, bf16: bool, types: Sequence[str], weights: np.ndarray | None,
                    n_mat: int, rows: Callable[[int], np.ndarray | None],
                    settings: Settings) -> tuple[list[list[float]], int]:
    """Sum the kernel's statistics over the tensor's matrices (experts), each with its importance slice;
    also returns the number of rows measured."""
    per_mat = x.shape[0] // n_mat
    total: list[list[float]] = [[0.0, 0.0, 0, 0] for _ in types]
    mats = range(n_mat) if weights is not None and n_mat > 1 else [None]
    measured = 0
    for m in mats:
        xm = x if m is None else x[m * per_mat:(m + 1) * per_mat]
        wm = None if weights is None else weights[0 if m is None else m]
        sel = rows(xm.shape[0])
        measured += xm.shape[0] if sel is None else len(sel)
        stats = quant_errors(xm, types, wm, rows=sel, delta=settings.boundary_delta, bf16=bf16,
                             nthreads=settings.threads)
        for acc, st in zip(total, stats):
            acc[0] += st.err; acc[1] += st.signal; acc[2] += st.near_boundary; acc[3] += st.counted
    return total, measured


def measure_tensor(model: Model, t: TensorInfo, settings: Settings, imatrix: Imatrix | None,
                   scratch: Scratch | None = None) -> TensorResult:
    """Every metric of one tensor; `scratch` holds the float32 copy (reused across a worker's tensors)."""
    t0 = time.perf_counter()
    tax = classify(t.name)
    ne0 = t.n_per_row
    n_mat = t.shape[2] if len(t.shape) >= 3 else 1
    weights = imatrix.weights_for(t.name, ne0, n_mat) if imatrix is not None else None
    if weights is not None and weights.shape[0] == 1 and n_mat > 1:
        weights = np.repeat(weights, n_mat, axis=0)

    requested = list(dict.fromkeys(list(settings.candidates) + list(OSQE_TYPES.values())))
    written = {r: qtypes.effective(qtypes.get(r), ne0).name for r in requested}
    measurable = [w for w in dict.fromkeys(written.values()) if qtypes.get(w).native]
    out = scratch.get(t.n_elements) if scratch is not None else None
    w32 = None if t.type_name in ("F32", "F16", "BF16") else model.read(t, out)  # dequantize once
    x, bf16 = _native_input(model, t) if w32 is None else (w32.reshape(t.n_rows, ne0), False)
    seed = _stable_seed(t.name, settings.seed)
    budget = settings.sample_values if settings.mode == "default" else 0
    def rows_fn(n: int) -> np.ndarray | None:  # the sampling budget is shared pro rata by the matrices
        return _sample_rows(n, ne0, max(ne0, budget * n // t.n_rows), seed) if budget else None

    try:
        sums, n_rows_measured = _measure_errors(x, bf16, measurable, weights, n_mat, rows_fn, settings)
    except ValueError as e:  # the kernel rejects NaN/Inf and bad shapes: the user's file, not a bug
        raise PrismError(f"{model.path}: tensor {t.name}: {e}") from None
    stats = dict(zip(measurable, sums))
    if any(not math.isfinite(s[1]) for s in stats.values()):
        raise PrismError(f"{t.name}: values overflow float32 accumulation")

    def rel(w: str) -> float:  # unquantized fallbacks (F16) count as lossless
        s = stats.get(w)
        return 0.0 if s is None or s[1] <= 0 else s[0] / s[1]

    errors = {r: {"type": written[r], "rel_error": rel(written[r])} for r in requested}
    osqe = {str(b): errors[r]["rel_error"] for b, r in OSQE_TYPES.items()}
    e2, e4 = osqe["2"], osqe["4"]
    fragility = math.log(e2 / e4) if e2 > 0 and e4 > 0 else math.nan
    bs = stats.get(written[BOUNDARY_TYPE])
    boundary = bs[2] / bs[3] if bs and bs[3] else math.nan

    w32 = (model.read(t, out) if w32 is None else w32).reshape(-1, t.shape[1] if len(t.shape) > 1 else 1, ne0)
    spec = [spectral_metrics(w32[i], settings.mode, rng_seed=seed) for i in _spectral_mats(n_mat, settings)]
    del w32, x
    return TensorResult(
        name=t.name, cls=tax.cls, layer=tax.layer, shape=list(t.shape), n_params=t.n_elements,
        source_type=t.type_name, errors=errors, osqe=osqe, fragility=fragility, boundary=boundary,
        alpha=_nanmean(s.alpha for s in spec), dominance=_nanmean(s.dominance for s in spec),
        spectral_norm=_nanmean(s.spectral_norm for s in spec), imbalance=_nanmean(s.imbalance for s in spec),
        spectral_method=spec[0].method, rows_measured=n_rows_measured, imatrix=weights is not None,
        seconds=time.perf_counter() - t0)


def _spectral_mats(n_mat: int, settings: Settings) -> list[int]:
    """Expert tensors: every expert in exact mode, up to 4 evenly spread ones by default."""
    if settings.mode == "exact" or n_mat <= 4:
        return list(range(n_mat))
    return sorted({round(i * (n_mat - 1) / 3) for i in range(4)})


def _nanmean(vals: Iterable[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


# -- the whole model --------------------------------------------------------------------------------

def finish(analysis: Analysis, weights: Weights) -> None:
    """Position prior per class (needs every layer) and the composite sensitivity of every tensor."""
    by_cls: dict[str, list[TensorResult]] = {}
    for r in analysis.tensors.values():
        if r.layer is not None:
            by_cls.setdefault(r.cls, []).append(r)
    for rs in by_cls.values():
        rs.sort(key=lambda r: r.layer)  # type: ignore[arg-type, return-value]
        ok = [r for r in rs if math.isfinite(r.spectral_norm)]
        if len(ok) < 2:
            continue
        pos = spectral_position([r.spectral_norm for r in ok])
        for r, d in zip(ok, pos.depth):
            r.depth = float(d)
            r.position = abs(2.0 * float(d) - 1.0)   # ends of the chain: first and last layers
    rs = list(analysis.tensors.values())
    sens = tensor_sensitivity([asdict(r) for r in rs], weights, [r.n_params for r in rs], [r.cls for r in rs])
    for r, s in zip(rs, sens):
        r.sensitivity = float(s)
    analysis.weights = weights.as_dict()


def class_table(analysis: Analysis) -> list[dict[str, Any]]:
    """One row per class: parameters, mean metrics, sensitivity; sorted by sensitivity, highest first."""
    groups: dict[str, list[TensorResult]] = {}
    for r in analysis.tensors.values():
        groups.setdefault(r.cls, []).append(r)
    total = sum(r.n_params for r in analysis.tensors.values()) or 1
    rows = []
    for cls, rs in groups.items():
        p = [r.n_params for r in rs]
        rows.append({
            "class": cls, "tensors": len(rs), "params": sum(p), "share": sum(p) / total,
            "alpha": _nanmean(r.alpha for r in rs), "dominance": _nanmean(r.dominance for r in rs),
            "imbalance": _nanmean(r.imbalance for r in rs), "osqe4": _nanmean(r.osqe["4"] for r in rs),
            "fragility": _nanmean(r.fragility for r in rs), "boundary": _nanmean(r.boundary for r in rs),
            "sensitivity": class_sensitivity([r.sensitivity for r in rs], p),
        })
    rows.sort(key=lambda d: -d["sensitivity"])
    return rows


@contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it LAPACK keeps its own thread count
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def analyze(model: Model, settings: Settings, *, imatrix: Imatrix | None = None, out: Path | None = None,
            weights: Weights | None = None, resume: bool = True,
            progress: Callable[[int, str], None] | None = None) -> Analysis:
    """Measure every quantizable tensor (resuming from `out` when it holds a matching partial run)."""
    weights = weights or Weights()
    ident = model_identity(model)
    im_ident = imatrix.identity() if imatrix is not None else None
    analysis = Analysis(ident, settings.key(), im_ident, weights.as_dict())
    if resume and out is not None and out.exists():
        prev = Analysis.load(out)
        if prev.model == ident and prev.settings == settings.key() and prev.imatrix == im_ident:
            analysis.tensors = prev.tensors
    # largest tensors first: the last tensors then are small ones, so no worker idles at the end
    todo = sorted((t for t in quantizable(model) if t.name not in analysis.tensors), key=lambda t: -t.n_elements)
    if not quantizable(model):
        raise PrismError(f"{model.path}: no tensor llama-quantize would quantize")
    for t in quantizable(model):
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
        with _blas_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
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
    finish(analysis, weights)
    if out is not None:
        analysis.save(out)
    return analysis
