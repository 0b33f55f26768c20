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
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import FileFormatError
from ..read.model import Model

FORMAT = "prism-analysis/1"


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
    def from_json(cls, d: dict[str, Any], source: str = "results file") -> "Analysis":
        if d.get("format") != FORMAT:
            raise FileFormatError(f"{source}: not a prism_native analysis (format {d.get('format')!r})")
        tensors = {n: TensorResult(**_from_json(t)) for n, t in d.get("tensors", {}).items()}
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
            raise FileFormatError(f"{p}: results file not found") from None
        except (OSError, ValueError) as e:
            raise FileFormatError(f"{p}: unreadable results file ({e})") from None
        try:
            return cls.from_json(d, str(p))
        except (KeyError, TypeError) as e:
            raise FileFormatError(f"{p}: damaged results file ({e})") from None


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
