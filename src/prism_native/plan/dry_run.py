"""What a plan of a model will be, from its header alone (`plan --dry-run`): no tensor is read.

In llama-quantize's spirit of printing the layout before the work, for models of terabytes: the
parameters and bytes per class, the granularity a plan has (one type per tensor: an expert stack is one
tensor), the range of output sizes the candidate types allow (every quantizable tensor at its smallest,
resp. largest, candidate as llama-quantize writes it for that row length), which candidates llama-quantize
refuses without an imatrix, whether --allow-requantize is needed, what analyze and quantize will read, and
the memory they hold (one slab per worker, measure.analyze.SLAB_VALUES).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import qtypes
from ..llama.mix import IMATRIX_TYPES, planned_requires_imatrix
from ..llama.quantizable import quantizable_tensors
from ..llama.sizes import SizeEstimate, estimate, tensor_nbytes
from ..measure.analyze import SLAB_VALUES
from ..read.model import Model, TensorInfo
from ..read.taxonomy import classify, layer_ranges
from .budget import Budget



@dataclass(frozen=True)
class ClassSummary:
    cls: str
    role: str                 # taxonomy role: dense, expert, shared_expert, expert_gate, ...
    n_tensors: int
    layers: str               # "0-2" (DeepSeek's dense leading blocks), "3-60", or "" (not a layer tensor)
    n_params: int
    source_bytes: int
    experts: int              # experts per tensor (one type for all of them), 0 for a plain matrix
    smallest: str             # cheapest / dearest candidate as written for its rows
    largest: str


@dataclass
class DryRun:
    model: str
    arch: str
    parts: int
    file_bytes: int
    n_params: int
    quantized_params: int
    quantized_source_bytes: int   # what analyze and quantize read of the tensors they quantize
    largest_tensor: tuple[str, int]
    slab_bytes: int               # float32 bytes of one analysis slab, per worker
    min_size: SizeEstimate
    max_size: SizeEstimate
    types: tuple[str, ...]
    need_imatrix: tuple[str, ...]
    requantize: bool
    classes: list[ClassSummary] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)   # matrix classes llama-quantize copies (ffn_gate_inp, ...)
    budget: Budget | None = None
    budget_bytes: int | None = None   # the budget as output file bytes, when known from the header
    disk_free: int | None = None      # at the output's folder
    imatrix: bool = False             # an imatrix will be given (else need_imatrix's types are left out)

    @property
    def feasible(self) -> bool | None:
        if self.budget_bytes is None:
            return None
        return self.min_size.file_bytes <= self.budget_bytes <= self.max_size.file_bytes

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("min_size", "max_size", "classes", "budget")}
        d.update(min_size=self.min_size.to_json(), max_size=self.max_size.to_json(),
                 classes=[c.__dict__ for c in self.classes], feasible=self.feasible,
                 budget=None if self.budget is None else {"kind": self.budget.kind, "value": self.budget.value})
        return d


def needs_imatrix(types: Sequence[str]) -> tuple[str, ...]:
    """The candidate types llama-quantize (tensor_requires_imatrix) or ggml refuse to write without one."""
    return tuple(t for t in types if t in IMATRIX_TYPES or qtypes.get(t).needs_imatrix)


def _allowed(t: TensorInfo, types: Sequence[str], imatrix: bool) -> list[str]:
    """The candidates a plan may give tensor t: llama-quantize can write them for its rows (the type or
    its fallback fits) and, without an imatrix, none that needs one."""
    def writable(q: str) -> bool:
        qt = qtypes.get(q)
        fits = qt.fits(t.n_per_row) or qt.fallback is not None    # else llama-quantize throws
        return fits and (imatrix or (planned_requires_imatrix(t.name, q) is None and not qt.needs_imatrix))
    return [q for q in types if writable(q)] or ["F16"]


def _extreme(model: Model, names: Sequence[str], types: Sequence[str], largest: bool,
             imatrix: bool) -> dict[str, str]:
    """Each tensor's cheapest (or dearest) candidate, by the bytes of the type llama-quantize writes."""
    out = {}
    for n in names:
        t = model.tensor(n)
        sized = [(tensor_nbytes(t.shape, qtypes.effective(qtypes.get(q), t.n_per_row)), q)
                 for q in _allowed(t, types, imatrix)]
        out[n] = (max if largest else min)(sized)[1]
    return out


def budget_file_bytes(smallest: SizeEstimate, budget: Budget) -> int:
    """The output file a budget allows, about (a bpw budget: the bytes fixed by the header, then the
    quantized tensors at that bpw); `smallest`: the estimate with every quantized tensor at its cheapest."""
    if budget.kind == "size":
        return int(budget.value)
    return smallest.file_bytes - smallest.quantized_bytes + int(budget.value * smallest.quantized_params / 8)


def smallest_output(model: Model, types: Sequence[str], imatrix: bool = False) -> SizeEstimate:
    names = [t.name for t in quantizable_tensors(model)]
    return estimate(model, _extreme(model, names, types, False, imatrix), quantized=names)


def dry_run(model: Model, types: Sequence[str], budget: Budget | None = None, out: Path | None = None,
            imatrix: bool = False) -> DryRun:
    """`imatrix`: one will be given; without, the range leaves out the types that need one."""
    tensors = quantizable_tensors(model)
    names = [t.name for t in tensors]
    lo, hi = _extreme(model, names, types, False, imatrix), _extreme(model, names, types, True, imatrix)
    min_size = smallest_output(model, types, imatrix)
    max_size = estimate(model, hi, quantized=names)
    q_params = sum(t.n_elements for t in tensors)
    by_cls: dict[str, list[Any]] = {}
    for t in tensors:
        by_cls.setdefault(classify(t.name).cls, []).append(t)
    classes = []
    for cls, ts in by_cls.items():
        tax = classify(ts[0].name)
        layers = [classify(t.name).layer for t in ts]
        first = ts[0]
        written = [qtypes.effective(qtypes.get(q[first.name]), first.n_per_row).name for q in (lo, hi)]
        classes.append(ClassSummary(cls, tax.role, len(ts), layer_ranges(x for x in layers if x is not None),
                                    sum(t.n_elements for t in ts), sum(t.n_bytes for t in ts),
                                    first.shape[2] if len(first.shape) >= 3 else 0, *written))
    classes.sort(key=lambda c: -c.n_params)
    quantized = set(names)
    kept = sorted({classify(t.name).cls for t in model.tensors if t.name not in quantized and t.n_dims >= 2})
    big = max(tensors, key=lambda t: t.n_bytes)
    budget_bytes = None if budget is None else budget_file_bytes(min_size, budget)
    free = shutil.disk_usage(out.parent if out is not None else Path.cwd()).free
    return DryRun(model.name, model.arch, len(model.parts), model.file_bytes, model.n_params, q_params,
                  sum(t.n_bytes for t in tensors), (big.name, big.n_bytes), 4 * SLAB_VALUES, min_size, max_size,
                  tuple(types), needs_imatrix(types), any(t.requantized for t in tensors),
                  classes, kept, budget, budget_bytes, free, imatrix)


def format_text(d: DryRun) -> str:
    gib = 2 ** 30
    lines = [
        f"# dry run of {d.model} ({d.arch}, {d.parts} part(s), {d.file_bytes / gib:,.2f} GiB): header only, no tensor read",
        (f"parameters      {d.n_params:,}; {d.quantized_params:,} in tensors llama-quantize quantizes "
         f"({d.quantized_source_bytes / gib:,.2f} GiB to read for analyze and again for quantize)"),
        (f"largest tensor  {d.largest_tensor[0]} ({d.largest_tensor[1] / gib:,.2f} GiB); analyze holds one slab "
         f"of {d.slab_bytes / 2**20:,.0f} MiB per worker, never a whole tensor"),
        f"candidate types {', '.join(d.types)}",
        (f"output range    {d.min_size.file_bytes / gib:,.2f} GiB ({d.min_size.bpw_quantized:.3f} bpw) to "
         f"{d.max_size.file_bytes / gib:,.2f} GiB ({d.max_size.bpw_quantized:.3f} bpw) over the quantized tensors"),
        "imatrix         " + ("not required by any candidate type" if not d.need_imatrix else
                              f"required by {', '.join(d.need_imatrix)}" + (
                                  "" if d.imatrix else " (llama-quantize aborts without one): left out of the "
                                  "range but on token_embd/output; give --imatrix FILE or --imatrix auto")),
        "requantize      " + ("yes: quantized inputs are dequantized (--allow-requantize)" if d.requantize else "no"),
    ]
    if d.budget is not None and d.budget_bytes is not None:
        verdict = "feasible" if d.feasible else "NOT feasible with these types"
        lines.append(f"budget          {d.budget.describe()}: ~{d.budget_bytes / gib:,.2f} GiB, {verdict}")
    if d.disk_free is not None:
        lines.append(f"disk free       {d.disk_free / gib:,.2f} GiB at the output folder"
                     + (" (less than the largest output)" if d.disk_free < d.max_size.file_bytes else ""))
    lines += ["", "granularity: one type per tensor; an expert stack (ffn_*_exps) is one tensor, all its experts share it",
              (f"{'class':<24} {'role':<14} {'n':>4} {'layers':<10} {'experts':>7} {'params':>16} "
               f"{'GiB':>9}  range")]
    for c in d.classes:
        lines.append(f"{c.cls:<24} {c.role:<14} {c.n_tensors:>4} {c.layers:<10} {c.experts or '':>7} "
                     f"{c.n_params:>16,} {c.source_bytes / gib:>9,.2f}  {c.smallest}..{c.largest}")
    if d.kept:
        lines.append(f"kept as they are by llama-quantize: {', '.join(d.kept)}")
    return "\n".join(lines)
