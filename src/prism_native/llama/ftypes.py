"""llama-quantize's ftypes: names, numbers and default tensor types (tools/quantize/quantize.cpp
QUANT_OPTIONS and try_parse_ftype, src/llama-quant.cpp llama_ftype_get_default_type; llama.cpp 0c1e5709)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Ftype:
    name: str          # llama-quantize spelling
    llama_ftype: int   # LLAMA_FTYPE_* value written to general.file_type
    default: str       # ggml type of the tensors the mix does not special-case


FTYPES: dict[str, Ftype] = {f.name: f for f in (
    Ftype("Q1_0", 40, "Q1_0"), Ftype("Q2_0", 41, "Q2_0"), Ftype("Q4_0", 2, "Q4_0"), Ftype("Q4_1", 3, "Q4_1"),
    Ftype("MXFP4_MOE", 38, "MXFP4"), Ftype("Q5_0", 8, "Q5_0"), Ftype("Q5_1", 9, "Q5_1"),
    Ftype("IQ2_XXS", 19, "IQ2_XXS"), Ftype("IQ2_XS", 20, "IQ2_XS"), Ftype("IQ2_S", 28, "IQ2_XS"),
    Ftype("IQ2_M", 29, "IQ2_S"), Ftype("IQ1_S", 24, "IQ1_S"), Ftype("IQ1_M", 31, "IQ1_M"),
    Ftype("TQ1_0", 36, "TQ1_0"), Ftype("TQ2_0", 37, "TQ2_0"), Ftype("Q2_K", 10, "Q2_K"),
    Ftype("Q2_K_S", 21, "Q2_K"), Ftype("IQ3_XXS", 23, "IQ3_XXS"), Ftype("IQ3_S", 26, "IQ3_S"),
    Ftype("IQ3_M", 27, "IQ3_S"), Ftype("IQ3_XS", 22, "IQ3_S"), Ftype("Q3_K_S", 11, "Q3_K"),
    Ftype("Q3_K_M", 12, "Q3_K"), Ftype("Q3_K_L", 13, "Q3_K"), Ftype("IQ4_NL", 25, "IQ4_NL"),
    Ftype("IQ4_XS", 30, "IQ4_XS"), Ftype("Q4_K_S", 14, "Q4_K"), Ftype("Q4_K_M", 15, "Q4_K"),
    Ftype("Q5_K_S", 16, "Q5_K"), Ftype("Q5_K_M", 17, "Q5_K"), Ftype("Q6_K", 18, "Q6_K"),
    Ftype("Q8_0", 7, "Q8_0"), Ftype("F16", 1, "F16"), Ftype("BF16", 32, "BF16"),
    Ftype("F32", 0, "F32"), Ftype("COPY", 0, "F32"),
)}
# QUANT_OPTIONS lists each alias just before the name it stands for (same LLAMA_FTYPE number)
FTYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def get_ftype(name: str | int) -> Ftype:
    """An ftype by llama-quantize name (any case, aliases Q3_K/Q4_K/Q5_K) or LLAMA_FTYPE number."""
    if isinstance(name, int) or str(name).strip().isdigit():
        num = int(name)
        for f in FTYPES.values():
            if f.llama_ftype == num:
                return f
        raise UsageError(f"unknown ftype number {num}")
    key = str(name).strip().upper()
    key = FTYPE_ALIASES.get(key, key)
    if key not in FTYPES:
        raise UsageError(f"unknown ftype '{name}' (known: {', '.join(FTYPES)})")
    return FTYPES[key]


def stoi(arg: str) -> int | None:
    """std::stoi: optional blanks and sign, then the longest digit prefix ("8b.gguf" -> 8); None where it
    throws (no digits, or out of int's range)."""
    m = re.match(r"\s*([+-]?)0*([0-9]+)", arg)
    if not m or len(m.group(2)) > 10:
        return None
    v = int(m.group(1) + m.group(2))
    return v if -2**31 <= v < 2**31 else None


def parse_ftype(arg: str) -> str | None:
    """try_parse_ftype (quantize.cpp): an ftype name (any case) or a number -> the name as QUANT_OPTIONS
    spells it (the first entry with that number: an alias before its full name, F32 before COPY); None
    if `arg` is neither. llama-quantize uses this to tell the ftype from an output path."""
    key = arg.upper()
    if key in FTYPES or key in FTYPE_ALIASES:
        return key
    num = stoi(arg)
    if num is None:
        return None
    alias = next((a for a, full in FTYPE_ALIASES.items() if FTYPES[full].llama_ftype == num), None)
    return alias or next((f.name for f in FTYPES.values() if f.llama_ftype == num), None)

