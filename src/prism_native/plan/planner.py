"""From measured errors and sensitivities to a priced, optimal type per class (and a few tensors).

Distortion of giving tensor i the requested type t:  D = s_i * g(e_i(t')) * n_i^beta, with s_i the composite
sensitivity, e_i(t') the measured relative error of the type t' llama-quantize really writes (the
fallback for rows that do not fit t), g the error cost (score.error_cost) and n_i the parameter count. Cost is the bytes of t' (padded to
the file's 32-byte alignment for a file-size budget). The allocator (allocate.py) finds the exact
optimum per class, then refines single tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import qtypes
from ..errors import FileFormatError, UsageError, quoted
from ..gguf.constants import pad
from ..gguf.writer import KV
from ..llama.decide import TensorSpec
from ..llama.mix import planned_requires_imatrix
from ..llama.sizes import SizeEstimate, estimate, imatrix_kv, tensor_nbytes
from ..measure.quant_error import CANDIDATES
from ..measure.results import Analysis, TensorResult
from ..read.model import Model
from .allocate import Allocation, Group, TensorCost, allocate, cost_range
from .budget import Budget, byte_budget
from .recipe import Recipe, build_recipe
from .score import FITTED_BETA, FITTED_GROWTH, Weights, effective_params, error_cost, fan_out, score_analysis

DEFAULT_TYPES = CANDIDATES     # a plan may pick any type the analysis measures by default


@dataclass
class ClassRow:
    """One class of a plan: the type asked for, what llama-quantize writes, and its measured figures."""

    cls: str
    type: str                       # requested for the class (single tensors may be overridden)
    written: dict[str, int]         # written type -> tensors of the class that get it
    bytes: int
    overrides: int                  # tensors of the class with a type of their own
    share: float                    # of the quantized parameters
    params: int
    rel_error: float                # parameter-weighted means
    sensitivity: float
    bpw: float

    def to_json(self) -> dict[str, Any]:
        return {"class": self.cls, "type": self.type, "written": self.written, "bytes": self.bytes,
                "overrides": self.overrides, "share": self.share, "params": self.params,
                "rel_error": self.rel_error, "sensitivity": self.sensitivity, "bpw": self.bpw}


@dataclass
class Plan:
    budget: Budget
    allocation: Allocation
    recipe: Recipe
    size: SizeEstimate
    classes: list[ClassRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # said to the user, not errors

    def to_json(self) -> dict[str, Any]:
        a = self.allocation
        return {"budget": {"kind": self.budget.kind, "value": self.budget.value},
                "class_types": a.group_types, "overrides": a.overrides, "tensor_types": a.tensor_types,
                "total_distortion": a.total_distortion, "class_distortion": a.class_distortion,
                "size": self.size.to_json(), "classes": [c.to_json() for c in self.classes],
                "recipe": self.recipe.to_json(), "notes": self.notes}


def _check_measured(analysis: Analysis, types: Sequence[str]) -> None:
    some = next(iter(analysis.tensors.values()))
    missing = [t for t in types if t not in some.errors]
    if missing:
        raise UsageError(f"the analysis did not measure {', '.join(missing)}; re-run analyze with "
                         f"--candidates including them")


# name -> (beta, kappa). "fitted": the exponent and growth fitted with the default weights (score.FITTED_BETA,
# score.FITTED_GROWTH); "linear": the same beta without the growth (g(e) = e, the distortion before FITTED_GROWTH)
DISTORTIONS = {"fitted": (FITTED_BETA, FITTED_GROWTH), "linear": (FITTED_BETA, 0.0),
               "params": (1.0, FITTED_GROWTH), "relative": (0.0, FITTED_GROWTH)}
DEFAULT_DISTORTION = "fitted"


def distortion_model(distortion: str) -> tuple[float, float]:
    """(beta, kappa) of D = s * e exp(kappa e^2) * n^beta: a name of DISTORTIONS, a number (beta in [0, 1],
    the fitted kappa) or BETA:KAPPA (kappa >= 0)."""
    if distortion in DISTORTIONS:
        return DISTORTIONS[distortion]
    b, sep, k = distortion.partition(":")
    try:
        beta, growth = float(b), (float(k) if sep else FITTED_GROWTH)
    except ValueError:
        beta = growth = math.nan
    if not (0.0 <= beta <= 1.0 and 0.0 <= growth < math.inf):
        raise UsageError(f"unknown distortion model '{distortion}' "
                         "(fitted, linear, params, relative, an exponent in [0, 1], or BETA:KAPPA with KAPPA >= 0)")
    return beta, growth


def size_exponent(distortion: str) -> float:
    """beta of D = s * g(e) * n^beta (distortion_model)."""
    return distortion_model(distortion)[0]


def error_growth(distortion: str) -> float:
    """kappa of the error cost g(e) = e exp(kappa e^2) (distortion_model)."""
    return distortion_model(distortion)[1]


def _refusal(r: TensorResult, req: str, has_imatrix: bool) -> str | None:
    """Why tensor r cannot get type req, or None: no measured error (llama-quantize cannot write it),
    or llama-quantize's imatrix rule (tensor_requires_imatrix) without an imatrix."""
    if not r.writable(req):
        return r.reason(req)
    return None if has_imatrix else planned_requires_imatrix(r.name, req)


def build_groups(model: Model, analysis: Analysis, types: Sequence[str], padded: bool,
                 distortion: str = DEFAULT_DISTORTION) -> list[Group]:
    """One group per tensor class; each tensor priced and scored at the type llama-quantize writes.

    D = s * g(e) * n_params^beta: beta = 1 ("params") counts error energy summed over weights, beta = 0
    ("relative") says every matmul adds relative noise e to its output, whatever its size; fit-weights
    fits beta with the composite's weights (docs/metrics.md); "fitted", the default, is that fit's beta.
    g(e) = e exp(kappa e^2) (score.error_cost) prices the low-bit types' large errors above their share;
    "linear" sets kappa = 0.
    A type llama-quantize cannot write for one tensor (its float16 block scales overflow, its rows fit
    no block, or it needs an imatrix the analysis did not have) is no candidate of that tensor's class."""
    beta, growth = distortion_model(distortion)
    _check_measured(analysis, types)
    by_cls: dict[str, list[TensorCost]] = {}
    allowed: dict[str, list[str]] = {}
    for r in analysis.tensors.values():
        t = model.tensor(r.name)
        ok = allowed.setdefault(r.cls, list(types))
        ok[:] = [req for req in ok if _refusal(r, req, analysis.imatrix is not None) is None]  # suits every tensor
        if not ok:
            why = next(w for req in types if (w := _refusal(r, req, analysis.imatrix is not None)) is not None)
            raise FileFormatError(f"{model.path}: tensor {quoted(r.name)}: llama-quantize can write none of the "
                                  f"candidate types for class {r.cls} ({why})")
        cost: dict[str, int] = {}
        dist: dict[str, float] = {}
        s = r.sensitivity if math.isfinite(r.sensitivity) else 1.0
        n_eff = effective_params(r.cls, r.shape, r.n_params, fan_out(model, r.cls, r.layer))
        for req in ok:
            written = qtypes.effective(qtypes.get(req), t.n_per_row)
            nb = tensor_nbytes(t.shape, written)
            cost[req] = pad(nb) if padded else nb
            dist[req] = s * error_cost(r.rel_error(req), growth) * n_eff ** beta
        by_cls.setdefault(r.cls, []).append(TensorCost(r.name, cost, dist))
    return [Group(c, tuple(ts), tuple(allowed[c])) for c, ts in by_cls.items()]


def class_rows(analysis: Analysis, alloc: Allocation, model: Model) -> list[ClassRow]:
    total = analysis.n_params or 1
    out = []
    for cls, rs in analysis.by_class().items():
        written: dict[str, int] = {}
        n_bytes, err, sens = 0, 0.0, 0.0
        for r in rs:
            req = alloc.tensor_types[r.name]
            t = model.tensor(r.name)
            w = qtypes.effective(qtypes.get(req), t.n_per_row).name
            written[w] = written.get(w, 0) + 1
            n_bytes += tensor_nbytes(t.shape, qtypes.get(w))
            err += r.rel_error(req) * r.n_params
            sens += (r.sensitivity if math.isfinite(r.sensitivity) else 1.0) * r.n_params
        p = sum(r.n_params for r in rs)
        out.append(ClassRow(cls, alloc.group_types[cls], written, n_bytes, sum(r.name in alloc.overrides for r in rs),
                            p / total, p, err / p, sens / p, 8 * n_bytes / p))
    out.sort(key=lambda c: -c.sensitivity)
    return out


def imatrix_extra_kv(analysis: Analysis) -> tuple[KV, ...]:
    """The metadata keys llama-quantize adds with --imatrix (they count in the output file's size)."""
    im = analysis.imatrix
    if im is None:
        return ()
    return imatrix_kv(im.path, im.datasets[0] if im.datasets else None, bool(im.chunk_count))


def needs_requantize(model: Model, analysis: Analysis) -> bool:
    """True when a planned tensor is stored quantized (llama-quantize then wants --allow-requantize)."""
    return any(model.tensor(n).requantized for n in analysis.tensors)


def make_plan(model: Model, analysis: Analysis, budget: Budget, *, types: Sequence[str] = DEFAULT_TYPES,
              max_overrides: int = 64, distortion: str = DEFAULT_DISTORTION, weights: Weights | None = None) -> Plan:
    """The optimal plan of `model` under `budget` from its analysis. The sensitivities are those of
    `weights` (default: the weights the analysis was scored with, else the defaults); the metadata keys an
    imatrix adds to the output count in a size budget (imatrix_extra_kv)."""
    if weights is not None or not analysis.weights:
        score_analysis(analysis, weights or Weights())
    extra_kv = imatrix_extra_kv(analysis)
    for t in types:
        if not qtypes.get(t).native:
            raise UsageError(f"type {t} cannot be planned (prism_native has no bit-exact quantizer for it)")
    groups = build_groups(model, analysis, types, padded=budget.kind == "size", distortion=distortion)
    avail, fmt = byte_budget(model, analysis, budget, extra_kv)
    notes = []
    top = cost_range(groups)[1]
    if avail > top:      # more than every tensor's dearest candidate: that is the best plan
        notes.append(f"the budget ({budget.describe()}) is above the most expensive plan of the candidate "
                     f"types ({fmt(top)}); this is that plan")
        avail = top
    alloc = allocate(groups, avail, max_overrides=max_overrides, fmt=fmt)
    specs = [TensorSpec.of(t, model.arch) for t in model.tensors]
    recipe = build_recipe(specs, alloc.tensor_types, hparams=model.hparams)
    written = {n: qtypes.get(w) for n, w in recipe.written.items()}
    size = estimate(model, written, extra_kv=extra_kv, quantized=list(analysis.tensors))
    return Plan(budget, alloc, recipe, size, class_rows(analysis, alloc, model), notes)
