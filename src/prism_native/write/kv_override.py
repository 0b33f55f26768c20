"""`--override-kv KEY=TYPE:VALUE`, parsed as common/common.cpp string_parse_kv_override parses it and
written as llama_model_quantize_impl writes it (int -> u32 of |value|, float -> f32, bool, str)."""
from __future__ import annotations

import math
import re

from ..errors import RecipeError
from ..gguf.writer import KV

_ATOL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_DEC = re.compile(r"[ \t\n\v\f\r]*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_HEX = re.compile(r"[ \t\n\v\f\r]*([+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)")
_SPECIAL = re.compile(r"[ \t\n\v\f\r]*([+-]?)(inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)", re.IGNORECASE)
_MAX_KEY = 128      # llama_model_kv_override.key is char[128]
_MAX_STR = 127      # and val_str char[128]


def atol(text: str) -> int:
    """C atol: leading blanks, a sign, the longest digit run; 0 when there is none (saturating)."""
    m = _ATOL.match(text)
    if not m:
        return 0
    return max(-2**63, min(2**63 - 1, int(m.group(1))))


def atof(text: str) -> float:
    """C atof (strtod's longest valid prefix): decimal, hexadecimal, inf/infinity, nan; 0.0 otherwise."""
    m = _SPECIAL.match(text)
    if m:
        v = math.inf if m.group(2)[:3].lower() == "inf" else math.nan
        return -v if m.group(1) == "-" else v
    m = _HEX.match(text)
    if m:
        s = m.group(1)
        sign = -1.0 if s.startswith("-") else 1.0
        body = s.lstrip("+-")
        return sign * float.fromhex(body if "p" in body.lower() else body + "p0")
    m = _DEC.match(text)
    return float(m.group(1)) if m else 0.0


def parse_kv_override(spec: str) -> KV:
    """One --override-kv value as the key/value llama-quantize writes into its output."""
    key, sep, rest = spec.partition("=")
    if not sep or len(key.encode()) >= _MAX_KEY:
        raise RecipeError(f"malformed KV override '{spec}' (expected KEY=TYPE:VALUE, KEY under {_MAX_KEY} bytes)")
    if not key:
        raise RecipeError(f"KV override '{spec}' has an empty key")
    if rest.startswith("int:"):
        return KV.u32(key, abs(atol(rest[4:])) & 0xFFFFFFFF)   # gguf_set_val_u32(..., (uint32_t)std::abs(v))
    if rest.startswith("float:"):
        return KV.f32(key, atof(rest[6:]))                     # the double narrowed to float
    if rest.startswith("bool:"):
        v = rest[5:]
        if v not in ("true", "false"):
            raise RecipeError(f"invalid boolean value for KV override '{spec}' (true or false)")
        return KV.bool_(key, v == "true")
    if rest.startswith("str:"):
        v = rest[4:]
        if len(v.encode()) > _MAX_STR:
            raise RecipeError(f"malformed KV override '{spec}': the value cannot exceed {_MAX_STR} bytes")
        return KV.string(key, v)
    raise RecipeError(f"invalid type for KV override '{spec}' (int:, float:, bool: or str:)")
