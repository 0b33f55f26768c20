"""A llama-quantize run without the model's data: every tensor's type (`decide`) plus the pattern
diagnostics a recipe needs: patterns that match nothing, patterns shadowed by an earlier one, matches
that cut through a name token (`attn_q` inside `attn_qkv`), patterns that llama-quantize's lower-casing
changes, and dedicated-flag types the rows cannot take (those flags skip the fallback)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .. import qtypes
from ..read.model import Hparams
from .decide import Decision, TensorSpec, decide, hparams_from_names
from .ftypes import get_ftype
from .options import QuantizeOptions
from .patterns import TensorTypeRule

DEDICATED = ("token-embedding-type", "output-tensor-type")   # rules that never consult the patterns


@dataclass(frozen=True)
class PartialMatch:
    """A pattern caught a tensor only by cutting through a name token (attn_q inside attn_qkv)."""

    pattern: int
    tensor: str
    matched: str


@dataclass(frozen=True)
class Simulation:
    overrides: tuple[TensorTypeRule, ...]
    tensors: tuple[Decision, ...]     # in the order of the tensors given
    unused: tuple[int, ...]           # patterns matching no tensor that reaches the pattern list
    shadowed: tuple[int, ...]         # patterns whose every match was taken by an earlier one
    partial: tuple[PartialMatch, ...]
    lowercased: tuple[int, ...]       # patterns that llama-quantize's lower-casing changes
    misfit: tuple[str, ...] = ()      # tensors given a type their rows cannot take (no fallback ran)
    matched: tuple[tuple[str, ...], ...] = ()  # per pattern: the tensors reaching the pattern list it matches

    def by_name(self) -> dict[str, Decision]:
        return {r.name: r for r in self.tensors}

    def problems(self) -> list[str]:
        """One line per diagnostic, for printing."""
        p = self.overrides
        out = [f"pattern '{p[i].written}' matches no tensor" for i in self.unused]
        out += [f"pattern '{p[i].written}' is shadowed: every tensor it matches is taken earlier"
                for i in self.shadowed]
        out += [f"pattern '{p[m.pattern].written}' catches {m.tensor} through '{m.matched}', "
                f"part of a longer name" for m in self.partial]
        out += [f"pattern '{p[i].written}' contains upper-case letters; llama-quantize lower-cases it "
                f"to '{p[i].pattern}'" for i in self.lowercased]
        got = self.by_name()
        out += [f"{n} gets {got[n].written} from --{got[n].rule}, which skips the fallback, but its rows "
                f"are not a multiple of the block size" for n in self.misfit]
        return out


def _token_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _cuts_token(name: str, m: re.Match[str]) -> bool:
    s, e = m.span()
    if s == e:
        return False
    left = s > 0 and _token_char(name[s - 1]) and _token_char(name[s])
    right = e < len(name) and _token_char(name[e - 1]) and _token_char(name[e])
    return left or right


def _partial(rx: re.Pattern[str], name: str) -> str | None:
    """The matched text if every match of rx in name cuts a token, else None."""
    for pos in range(len(name) + 1):
        m = rx.match(name, pos)
        if m and not _cuts_token(name, m):
            return None
    m = rx.search(name)
    return m.group(0) if m else None


def patterns_apply(ftype: str) -> bool:
    """llama-quantize consults --tensor-type only when the ftype's default type is quantized."""
    return qtypes.get(get_ftype(ftype).default).quantized


def simulate(tensors: Sequence[TensorSpec], opts: QuantizeOptions, *, hparams: Hparams | None = None) -> Simulation:
    """The type llama-quantize gives every tensor (decide), with pattern diagnostics.

    `hparams` are the model's (Model.hparams). Without them they come from the tensor names
    (decide.hparams_from_names): exact under --pure or when patterns name every tensor, but the mix
    then ignores GQA, expert counts and the architecture.
    """
    rules = opts.tensor_types
    hp = hparams if hparams is not None else hparams_from_names(t.name for t in tensors)
    decided = {d.name: d for d in decide(tensors, hp, opts)}
    for t in tensors:
        if not t.quantizable and decided[t.name].quantized:
            raise ValueError(f"TensorSpec {t.name} says quantizable=False, but llama-quantize quantizes "
                             f"a tensor of shape {t.shape}")
    # the tensors that consult the pattern list: quantized, not taken by a dedicated flag, and the
    # ftype's default type is quantized
    apply = patterns_apply(opts.ftype)
    reaching = [t.name for t in tensors if apply and decided[t.name].quantized
                and decided[t.name].rule not in DEDICATED]
    matched: list[list[str]] = [[n for n in reaching if r.matches(n)] for r in rules]
    unused = tuple(i for i, m in enumerate(matched) if not m)
    shadowed = tuple(i for i, m in enumerate(matched) if m and all(decided[n].pattern != i for n in m))
    partial = []
    for n in reaching:
        i = decided[n].pattern
        if i is not None:
            text = _partial(rules[i].regex, n)
            if text is not None:
                partial.append(PartialMatch(i, n, text))
    lowercased = tuple(i for i, r in enumerate(rules) if r.written != r.pattern)
    misfit = tuple(t.name for t in tensors if decided[t.name].quantized and not decided[t.name].fits)
    return Simulation(tuple(rules), tuple(decided[t.name] for t in tensors), unused, shadowed,
                      tuple(partial), lowercased, misfit, tuple(tuple(m) for m in matched))
