"""Ablation: the measured damage of one class (or one layer) at a low type while the rest stays high.

This is the ground truth the composite sensitivity is fitted to (fit.py). For every unit u (all
tensors of a class, or all quantizable tensors of a layer) and low type t, llama-quantize writes the
model with u at t and everything else at the high type, and llama-perplexity measures the KL
divergence to the input model. The damage of (u, t) is that KLD minus the KLD of the all-high file.
Each record also keeps, per tensor of the model, what the analysis measured (metrics and relative
errors), so a fit needs nothing but the ablation files.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import qtypes
from ..errors import FileFormatError, UsageError
from ..files import write_file
from ..llama.decide import TensorSpec
from ..llama.mix import planned_requires_imatrix
from ..measure.results import Analysis, ModelIdentity
from ..plan.recipe import build_recipe
from ..plan.score import Weights, fan_out
from ..read.bounded import MiB, load_json
from ..read.model import Model
from .evaluate import IMATRIX, MODEL_IN, MODEL_OUT, Evaluation, Method, Row, Setup

FORMAT = "prism-ablation/1"
MAX_BYTES = 256 * MiB       # per-tensor tables of the largest models
MAX_DEPTH = 16
SERIES = "ablation"
METRICS = tuple(f.name for f in Weights.__dataclass_fields__.values())   # the composite's inputs
BY = ("class", "layer")


@dataclass(frozen=True)
class Unit:
    name: str                   # "class attn_q" or "layer 4"
    tensors: tuple[str, ...]


def units(analysis: Analysis, by: str, only: Sequence[str] = ()) -> list[Unit]:
    """Classes (by="class") or layers (by="layer") of the analysed tensors, in model order."""
    if by not in BY:
        raise UsageError(f"--by must be one of {', '.join(BY)}")
    groups: dict[str, list[str]] = {}
    for r in analysis.tensors.values():
        if by == "class":
            key = f"class {r.cls}"
        elif r.layer is not None:
            key = f"layer {r.layer}"
        else:
            continue                 # token_embd/output have no layer
        groups.setdefault(key, []).append(r.name)
    if only:
        wanted = {f"{by} {o}" for o in only}
        unknown = wanted - set(groups)
        if unknown:
            raise UsageError(f"no {by} {sorted(unknown)[0].split(' ', 1)[1]} in this model "
                             f"(have: {', '.join(k.split(' ', 1)[1] for k in groups)})")
        groups = {k: v for k, v in groups.items() if k in wanted}
    key = (lambda k: int(k.split()[1])) if by == "layer" else (lambda k: 0)
    return [Unit(k, tuple(v)) for k, v in sorted(groups.items(), key=lambda kv: key(kv[0]))]


def _method(model: Model, analysis: Analysis, types: dict[str, str], name: str, *, imatrix: bool,
            requantize: bool) -> Method:
    specs = [TensorSpec.of(t, model.arch) for t in model.tensors]
    recipe = build_recipe(specs, types, hparams=model.hparams)
    cmd = recipe.command(MODEL_IN, MODEL_OUT, imatrix=IMATRIX if imatrix else None, allow_requantize=requantize)
    return Method(name, SERIES, cmd)


def _refusal(analysis: Analysis, name: str, t: str, imatrix: bool) -> str | None:
    """Why llama-quantize would not write tensor `name` at type t in this ablation (it would abort the run
    part way), or None: a type the analysis measured as unwritable there (e.g. ggml needs importance
    weights the imatrix does not have for it), or the imatrix rule without an imatrix."""
    r = analysis.tensors[name]
    if t in r.errors and not r.writable(t):
        return f"tensor {name}: {r.reason(t)}"
    return None if imatrix else planned_requires_imatrix(name, t)


def methods(model: Model, analysis: Analysis, unit_list: Sequence[Unit], low: Sequence[str], high: str, *,
            imatrix: bool, requantize: bool) -> tuple[Method, list[tuple[Unit, str, Method]]]:
    """The all-high file, then one file per (unit, low type)."""
    for t in (*low, high):
        qtypes.get(t)                                   # unknown names fail here, with the list
    base_types = {n: high for n in analysis.tensors}
    base = _method(model, analysis, base_types, f"all {high}", imatrix=imatrix, requantize=requantize)
    out = []
    for u in unit_list:
        for t in low:
            why = next((w for n in u.tensors if (w := _refusal(analysis, n, t, imatrix)) is not None), None)
            if why is not None:
                raise UsageError(f"{u.name} cannot be lowered to {t}: {why}; leave it out with --only or "
                                 "choose another --low")
            types = dict(base_types)
            types.update({n: t for n in u.tensors})
            out.append((u, t, _method(model, analysis, types, f"{u.name} at {t}", imatrix=imatrix,
                                      requantize=requantize)))
    return base, out


def tensor_table(model: Model, analysis: Analysis) -> list[dict[str, Any]]:
    """Per analysed tensor: what a fit needs (metrics, relative error per requested type, written type)."""
    rows = []
    for r in analysis.tensors.values():
        t = model.tensor(r.name)
        rows.append({"name": r.name, "cls": r.cls, "layer": r.layer, "n_params": r.n_params, "shape": list(r.shape),
                     "fan_out": fan_out(model, r.cls, r.layer),
                     "metrics": {k: _num(getattr(r, k)) for k in METRICS if hasattr(r, k)},
                     "errors": {req: {"type": qtypes.effective(qtypes.get(req), t.n_per_row).name,
                                      "rel_error": _num(r.rel_error(req))} for req in r.errors}})
    return rows


def _num(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


@dataclass
class Record:
    unit: str
    tensors: list[str]
    low: str
    kld: float
    kld_err: float
    damage: float             # kld - kld of the all-high file
    file_bytes: int
    ppl: float

    @classmethod
    def of(cls, u: Unit, low: str, row: Row, base: Row) -> "Record":
        return cls(u.name, list(u.tensors), low, row.m.kld_mean, row.m.kld_mean_err,
                   row.m.kld_mean - base.m.kld_mean, row.file_bytes, row.m.ppl)


@dataclass
class Ablation:
    """One ablate run: the all-high file's KLD, and a record per unit and low type; to_json() is the
    ablation file that fit-weights reads (load)."""

    model: ModelIdentity
    model_name: str
    text: str
    n_ctx: int
    chunks: int
    imatrix: bool
    by: str
    high: str
    low: list[str]
    reference_ppl: float
    base_kld: float
    base_kld_err: float
    base_file_bytes: int
    records: list[Record]
    tensors: list[dict[str, Any]]       # tensor_table: the analysis's figures a fit needs, as the file holds them

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": {k: v for k, v in self.model.to_json().items() if k != "path"},
                "model_name": self.model_name, "text": self.text, "n_ctx": self.n_ctx, "chunks": self.chunks,
                "imatrix": self.imatrix, "by": self.by, "high": self.high, "low": self.low,
                "reference_ppl": self.reference_ppl,
                "base": {"kld": self.base_kld, "kld_err": self.base_kld_err, "file_bytes": self.base_file_bytes},
                "records": [asdict(r) for r in self.records], "tensors": self.tensors}


def run(setup: Setup, analysis: Analysis, unit_list: Sequence[Unit], low: Sequence[str], high: str,
        by: str, on_row: Callable[[Record], None] | None = None) -> Ablation:
    model = setup.model
    requant = any(t.requantized for t in model.tensors)
    base_m, todo = methods(model, analysis, unit_list, low, high, imatrix=setup.imatrix is not None,
                           requantize=requant)
    ev = Evaluation(setup)
    ev.start(ev.pending_units([base_m] + [m for _, _, m in todo]))
    records: list[Record] = []
    try:
        ref = ev.reference()
        base = ev.measure(base_m)
        for u, t, m in todo:
            rec = Record.of(u, t, ev.measure(m), base)
            records.append(rec)
            if on_row is not None:
                on_row(rec)
    finally:
        ev.finish()
    return Ablation(analysis.model, model.name, str(setup.ppl.text), setup.ppl.n_ctx, base.m.chunks,
                    setup.imatrix is not None, by, high, list(low), ref.m.ppl, base.m.kld_mean, base.m.kld_mean_err,
                    base.file_bytes, records, tensor_table(model, analysis))


def save(ablation: Ablation, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, json.dumps(ablation.to_json(), separators=(",", ":"), allow_nan=False).encode())   # large


def load(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    data = load_json(p, "ablation file", MAX_BYTES, MAX_DEPTH)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FileFormatError(f"{p}: not an ablation file (format {FORMAT} expected)")
    bad = _damaged(data)
    if bad:
        raise FileFormatError(f"{p}: damaged ablation file ({bad})")
    return data


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _tensor_ok(t: Any) -> bool:
    return (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("cls"), str)
            and isinstance(t.get("n_params"), int) and t["n_params"] > 0 and _number(t.get("fan_out", 1.0))
            and isinstance(t.get("metrics", {}), dict)
            and all(v is None or _number(v) for v in t.get("metrics", {}).values())
            and (t.get("shape") is None or isinstance(t["shape"], list) and all(isinstance(x, int) and x > 0
                                                                                 for x in t["shape"]))
            and isinstance(t.get("errors"), dict)
            and all(isinstance(e, dict) and (e.get("rel_error") is None or _number(e["rel_error"]))
                    for e in t["errors"].values()))


def _damaged(data: dict[str, Any]) -> str | None:
    """The first part of an ablation file that fit-weights could not read, or None."""
    tensors, records, base = data.get("tensors"), data.get("records"), data.get("base")
    if not isinstance(data.get("model"), dict) or not isinstance(data.get("high"), str):
        return "model or high"
    if not isinstance(base, dict) or not _number(base.get("kld_err")):
        return "base"
    if not isinstance(tensors, list) or not all(_tensor_ok(t) for t in tensors):
        return "tensors"
    names = {t["name"] for t in tensors}
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and isinstance(r.get("unit"), str) and isinstance(r.get("low"), str)
            and _number(r.get("kld_err")) and _number(r.get("damage")) and isinstance(r.get("tensors"), list)
            and all(isinstance(n, str) and n in names for n in r["tensors"]) for r in records):
        return "records"
    return None


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Ablations of one model (e.g. by class and by layer) as one: records concatenated, each with
    its own all-high baseline already subtracted."""
    first = parts[0]
    for p in parts[1:]:
        if p["model"] != first["model"]:
            raise UsageError("cannot merge ablations of different models")
    out = dict(first)
    out["records"] = [r for p in parts for r in p["records"]]
    return out
