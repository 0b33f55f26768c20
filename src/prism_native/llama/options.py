"""The llama-quantize flags that decide a tensor's type (tools/quantize/quantize.cpp's parameters)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .patterns import TensorTypeRule


@dataclass(frozen=True)
class QuantizeOptions:
    """The llama-quantize flags that influence tensor types."""

    ftype: str = "Q8_0"
    pure: bool = False
    tensor_types: tuple[TensorTypeRule, ...] = ()
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    imatrix: bool = False

    @classmethod
    def build(cls, ftype: str, *, tensor_types: Sequence[str | tuple[str, str] | TensorTypeRule] = (),
              **kw: object) -> "QuantizeOptions":
        """Options from NAME=TYPE strings, (pattern, type) pairs or rules."""
        rules = tuple(t if isinstance(t, TensorTypeRule) else TensorTypeRule.parse(t) if isinstance(t, str)
                      else TensorTypeRule.make(*t) for t in tensor_types)
        return cls(ftype=ftype, tensor_types=rules, **kw)  # type: ignore[arg-type]
