"""The results file of an analysis: one record per measured tensor, JSON on disk.

`analyze` writes it after every few tensors (an interrupted run resumes from it) and at the end;
`plan` reuses it at any budget without touching the weights again. A metric that could not be
computed is NaN in memory and null in the file, its reason in the tensor's `undefined` (for a
quantization error: in that type's entry), so that the file is always valid JSON. A file is reused only for the same model file (header hash, sizes,
tensor names), the same settings and the same imatrix.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import FileFormatError
from ..files import write_file
from ..read.bounded import MiB, load_json
from ..read.model import Model

FORMAT = "prism-analysis/1"
MAX_BYTES = 64 * MiB          # ~2 KB per tensor: room for 30,000 tensors
MAX_DEPTH = 8                 # the file's own structure is 5 levels deep
_MAX_METRIC = 1e30            # larger measured values are damage, and would overflow the scoring


@dataclass
class TensorResult:
    name: str
    cls: str
    layer: int | None
    shape: list[int]                  # ggml order, ne0 first
    n_params: int
    source_type: str
    errors: dict[str, dict[str, Any]]  # requested type -> {"type": written type, "rel_error": float}, or
                                       # rel_error None and "reason": llama-quantize cannot write it
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
    sensitivity: float = math.nan     # filled by plan.score
    undefined: dict[str, str] = field(default_factory=dict)   # metric -> why it is NaN

    def rel_error(self, requested: str) -> float:
        """The measured relative error; NaN for a type llama-quantize cannot write for this tensor."""
        v = self.errors[requested]["rel_error"]
        return math.nan if v is None else float(v)

    def writable(self, requested: str) -> bool:
        return self.errors[requested]["rel_error"] is not None

    def overflows(self, requested: str) -> bool:
        """The type's float16 block scales overflow on this tensor's values (a property of the values,
        unlike a type that does not fit the rows or needs an imatrix)."""
        return bool(self.errors[requested].get("overflow"))


_FLOAT_FIELDS = frozenset(f.name for f in fields(TensorResult) if f.type in ("float", float))


@dataclass
class Analysis:
    model: dict[str, Any]
    settings: dict[str, Any]
    imatrix: dict[str, Any] | None
    weights: dict[str, float] = field(default_factory=dict)   # of the sensitivities, once scored
    tensors: dict[str, TensorResult] = field(default_factory=dict)
    complete: bool = False
    tool: str = f"prism_native {__version__}"

    def to_json(self) -> dict[str, Any]:
        return _to_json({"format": FORMAT, "tool": self.tool, "complete": self.complete, "model": self.model,
                         "settings": self.settings, "imatrix": self.imatrix, "weights": self.weights,
                         "tensors": {n: asdict(t) for n, t in self.tensors.items()}})

    @classmethod
    def from_json(cls, d: Any, source: str = "results file") -> "Analysis":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else None
            raise FileFormatError(f"{source}: not a prism_native analysis (format {fmt!r})")
        model, settings, imatrix, weights, tensors = (d.get(k) for k in
                                                      ("model", "settings", "imatrix", "weights", "tensors"))
        if not (isinstance(model, dict) and isinstance(model.get("path"), str) and isinstance(settings, dict)
                and (imatrix is None or isinstance(imatrix, dict) and isinstance(imatrix.get("path"), str))
                and isinstance(weights or {}, dict) and isinstance(tensors or {}, dict)):
            raise FileFormatError(f"{source}: damaged results file (model, settings, imatrix, weights or "
                                  "tensors of the wrong kind)")
        for k, v in (weights or {}).items():
            if not _number(v):
                raise FileFormatError(f"{source}: damaged results file (weight {k} = {v!r})")
        return cls(model, settings, imatrix, dict(weights or {}),
                   {n: _tensor(source, n, t) for n, t in (tensors or {}).items()},
                   d.get("complete") is True, str(d.get("tool", "?")))

    def save(self, path: Path) -> None:
        """Atomically, under a unique temporary name: concurrent runs on one model never mix files."""
        write_file(path, json.dumps(self.to_json(), indent=1, allow_nan=False).encode())

    @classmethod
    def load(cls, path: str | Path) -> "Analysis":
        return cls.from_json(load_json(path, "results file", MAX_BYTES, MAX_DEPTH), str(path))

    def check_model(self, model: Model, quantizable: set[str], source: str) -> None:
        """Refuse records the model cannot have: another tensor's name, shape or size."""
        for name, r in self.tensors.items():
            if name not in quantizable:
                raise FileFormatError(f"{source}: {name} is not a tensor llama-quantize quantizes in {model.path}")
            t = model.tensor(name)
            if list(t.shape) != r.shape or t.n_elements != r.n_params:
                raise FileFormatError(f"{source}: {name} has shape {r.shape}, the model's is {list(t.shape)}")
        want = self.settings.get("candidates")
        if not (isinstance(want, list) and all(isinstance(t, str) for t in want)):
            raise FileFormatError(f"{source}: damaged results file (settings.candidates = {want!r:.60})")
        odd = next((n for n, r in self.tensors.items() if set(r.errors) != set(want)), None)
        if odd is not None:
            raise FileFormatError(f"{source}: {odd} was not measured in the types the file's settings name")


def _number(v: Any, lo: float = -_MAX_METRIC) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= _MAX_METRIC


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62


def _str_map(v: Any, ok: Any) -> bool:
    return isinstance(v, dict) and all(ok(x) for x in v.values())


# what each kind of field may hold in the file (NaN is stored as null)
_VALID = {
    "str": lambda v: isinstance(v, str),
    "int": _count,
    "int | None": lambda v: v is None or _count(v),
    "bool": lambda v: isinstance(v, bool),
    "float": lambda v: v is None or _number(v),
    "list[int]": lambda v: isinstance(v, list) and 1 <= len(v) <= 4 and all(_count(x) and x for x in v),
    "dict[str, float]": lambda v: _str_map(v, lambda x: x is None or _number(x)),
    "dict[str, str]": lambda v: _str_map(v, lambda x: isinstance(x, str)),
    "dict[str, dict[str, Any]]": lambda v: _str_map(v, lambda e: isinstance(e, dict) and isinstance(e.get("type"), str)
                                                    and (e.get("rel_error") is None or _number(e["rel_error"], 0.0))),
}


def _tensor(source: str, name: str, t: Any) -> TensorResult:
    if not isinstance(t, dict):
        raise FileFormatError(f"{source}: damaged results file (tensor {name} is not an object)")
    for f in fields(TensorResult):
        if f.name in t and not _VALID[str(f.type)](t[f.name]):
            raise FileFormatError(f"{source}: damaged results file (tensor {name}: {f.name} = {t[f.name]!r:.60})")
    try:
        return TensorResult(**_from_json(t))
    except TypeError as e:     # a field missing or unknown
        raise FileFormatError(f"{source}: damaged results file (tensor {name}: {e})") from None


def _to_json(v: Any) -> Any:
    """JSON has no NaN or Inf: store them as null, at any depth."""
    if isinstance(v, dict):
        return {k: _to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_json(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _from_json(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: (math.nan if v is None and k in _FLOAT_FIELDS else v) for k, v in d.items()}
    out["osqe"] = {b: math.nan if v is None else v for b, v in out.get("osqe", {}).items()}
    return out


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
