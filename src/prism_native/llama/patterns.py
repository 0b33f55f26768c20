"""--tensor-type patterns: how llama-quantize matches them, and writing ones that match exactly what is meant.

llama-quantize lower-cases NAME, compiles it as std::regex (ECMAScript) and uses regex_search
(unanchored), first match wins (tools/quantize/quantize.cpp parse_tensor_type, src/llama-quant.cpp
llama_tensor_get_type). Python's `re` is used with these adjustments (checked against libstdc++'s
std::regex through llama-quantize --dry-run):
  * re.ASCII, because ECMAScript \\d \\w \\s \\b are ASCII-only (Python's are Unicode);
  * an escaped letter without ECMAScript meaning is the letter itself (\\A, lower-cased to \\a, matches
    "a"; Python would read BEL); `[^]` (any character) and `[]` (nothing) are translated;
  * nested quantifiers a++ a*+ a?+ (std::regex: (a+)+ ...) become a+ a* a* (Python: possessive);
  * rejected, where std::regex fails or matches differently: `(?P<..>`, `(?i)`, lookbehind `(?<=`,
    `{,n}`, `\\cX`, `{n,m}+`;
  * `$` cannot differ: it only differs before a final newline, which tensor names never contain.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from .. import qtypes
from ..errors import PrismError, RecipeError
from ..qtypes import QType

# escapes ECMAScript gives a meaning (lower case only: llama-quantize lower-cases the pattern); any other
# letter is an identity escape there (libstdc++: "\\attn" matches "attn"), while Python reads \\a as BEL
# and rejects \\q or \\z
_ECMA_ESCAPES = frozenset("dswbfnrtvxu")
MAX_RULES = 1 << 16     # patterns of one recipe (a plan needs at most one per tensor)


def _python_regex(pattern: str) -> str:
    """Translate an (already lower-cased) ECMAScript pattern to Python `re`, rejecting what differs."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        nxt = pattern[i + 1:i + 2]
        if c == "\\":
            if nxt == "c":
                raise ValueError("control escapes (\\cX) are not supported")
            out.append(nxt if nxt.isalpha() and nxt.isascii() and nxt not in _ECMA_ESCAPES
                       else pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            if pattern.startswith("[^]", i):   # ECMAScript: any character
                out.append(r"[\s\S]")
                i += 3
                continue
            if pattern.startswith("[]", i):    # ECMAScript: matches nothing
                out.append(r"(?!)")
                i += 2
                continue
            in_class = True
        elif c == "(" and nxt == "?" and pattern[i + 2:i + 3] not in (":", "=", "!"):
            raise ValueError(f"'{pattern[i:i + 3]}' is not ECMAScript syntax (std::regex rejects it or, for "
                             "lookbehind, matches differently)")
        elif c == "{" and nxt == ",":
            raise ValueError("'{,n}' is not a valid ECMAScript quantifier")
        elif c in "*+?" and nxt == "+" and out and out[-1] not in "(|":
            # nested quantifier: std::regex reads a++ as (a+)+, Python as possessive; a+ / a* match the
            # same strings as (a+)+ / (a*)+ and (a?)+
            out.append("+" if c == "+" else "*")
            i += 2
            continue
        elif c == "}" and nxt == "+":
            raise ValueError("'{n,m}+' (a nested quantifier) is not supported")
        out.append(c)
        i += 1
    return "".join(out)


_UNBOUNDED = re.compile(r"[*+]|\{[0-9]+,\}")


def _nested_repetition(pattern: str) -> bool:
    """A group with an unbounded repetition inside, itself repeated without bound ('(a+)+', '(.*.*)*'):
    backtracking matchers (Python's re, and llama-quantize's std::regex) take exponential time on it."""
    groups: list[bool] = []      # per open group: it holds an unbounded repetition
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            groups.append(False)
        elif c == ")" and groups:
            inner, repeated = groups.pop(), _UNBOUNDED.match(pattern, i + 1) is not None
            if inner and repeated:
                return True
            if groups:
                groups[-1] |= inner or repeated
        elif groups and _UNBOUNDED.match(pattern, i):
            groups[-1] = True
        i += 1
    return False


@dataclass(frozen=True)
class TensorTypeRule:
    """One --tensor-type NAME=TYPE as llama-quantize parses it (parse_tensor_type). `written` is NAME as
    given; llama-quantize lower-cases it (`pattern`) before compiling it."""

    written: str
    qtype: QType
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> "TensorTypeRule":
        """`NAME=TYPE`: split at the first '='."""
        name, sep, tname = spec.partition("=")
        if not sep:
            raise RecipeError(f"malformed tensor type '{spec}' (expected NAME=TYPE)")
        if not name:
            raise RecipeError(f"missing tensor name in '{spec}'")
        if not tname:
            raise RecipeError(f"missing quantization type in '{spec}'")
        return cls.make(name, tname)

    @classmethod
    def make(cls, written: str, qtype: str | int | QType) -> "TensorTypeRule":
        if _nested_repetition(written):
            raise RecipeError(f"--tensor-type pattern '{written[:60]}' repeats a repetition ('(a+)+'): matching "
                              "it takes exponential time (in llama-quantize too); write it without the nesting")
        try:
            rx = re.compile(_python_regex(written.lower()), re.ASCII)
        except ValueError as e:
            raise RecipeError(f"--tensor-type pattern '{written}': {e}") from None
        except re.error as e:
            raise RecipeError(f"--tensor-type pattern '{written}' is not a valid regex: {e}") from None
        except RecursionError:
            raise RecipeError(f"--tensor-type pattern '{written[:60]}...' is nested too deeply") from None
        qt = qtype if isinstance(qtype, QType) else qtypes.get(qtype)
        return cls(written, qt, rx)

    @property
    def pattern(self) -> str:
        """The pattern llama-quantize compiles: NAME lower-cased."""
        return self.written.lower()

    @property
    def type(self) -> str:
        return self.qtype.name

    @property
    def arg(self) -> str:
        """The argument of --tensor-type (and a token of --tensor-type-file)."""
        return f"{self.written}={self.qtype.name}"

    def matches(self, name: str) -> bool:
        return self.regex.search(name) is not None


def parse_tensor_type_file(text: str, source: str = "tensor type file") -> list[TensorTypeRule]:
    """parse_tensor_type_file: whitespace-separated NAME=TYPE tokens, no comments."""
    n = sum(1 for _ in re.finditer(r"\S+", text))      # counted before a list of them is made
    if n > MAX_RULES:
        raise RecipeError(f"{source}: {n:,} patterns, more than the {MAX_RULES:,} a recipe may have")
    rules = []
    for tok in text.split():
        try:
            rules.append(TensorTypeRule.parse(tok))
        except PrismError as e:
            raise RecipeError(f"{source}: {e}") from None
    return rules


# -- writing patterns ---------------------------------------------------------------------------------

def escape(text: str) -> str:
    """A regex matching `text` literally, that survives llama-quantize's NAME handling.

    The NAME is lower-cased, split at its first '=', and a tensor-type file splits on whitespace.
    Upper-case letters, '=' and whitespace are therefore written as \\xHH, which ECMAScript and
    Python read alike. There is no \\D-style escape.
    """
    out = []
    for c in text:
        if not c.isascii():
            raise RecipeError(f"tensor name {text!r} is not ASCII; llama-quantize patterns cannot name it safely")
        if c in "\\^$.|?*+()[]{}":
            out.append("\\" + c)
        elif c.isupper() or c == "=" or c.isspace() or not c.isprintable():
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def _parts(name: str) -> tuple[str, ...]:
    return tuple(name.split("."))


def class_pattern(key: str) -> str:
    """`^blk\\.[0-9]+\\.ffn_down\\.weight$` for the class key blk.#.ffn_down.weight (taxonomy.classify's key)."""
    return "^" + r"\.".join("[0-9]+" if p == "#" else escape(p) for p in key.split(".")) + "$"


def anchored_patterns(key: str, names: Sequence[str]) -> list[str]:
    """Anchored patterns for some tensors of one class: one alternation over the layer index."""
    holes = [i for i, p in enumerate(key.split(".")) if p == "#"]
    if len(holes) != 1:
        return ["^" + escape(n) + "$" for n in names]
    h = holes[0]
    nums = sorted({_parts(n)[h] for n in names}, key=int)
    head = r"\.".join(escape(p) for p in key.split(".")[:h])
    tail = r"\.".join(escape(p) for p in key.split(".")[h + 1:])
    alt = nums[0] if len(nums) == 1 else "(" + "|".join(nums) + ")"
    return ["^" + r"\.".join(x for x in (head, alt, tail) if x) + "$"]
