"""Text helpers of the sub-commands' output: counts, tables, byte sizes."""
from __future__ import annotations

from ..read.taxonomy import layer_ranges

__all__ = ["count", "layer_ranges", "table"]


def count(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def table(header: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    """Aligned columns, two spaces apart; the columns in `right` right-aligned."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = [(lambda s, w=w: s.rjust(w)) if i in right else (lambda s, w=w: s.ljust(w))
           for i, w in enumerate(widths)]
    return ["  ".join(f(c) for f, c in zip(fmt, r)).rstrip() for r in [header, *body]]
