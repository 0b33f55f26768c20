"""llama-quantize recipes: build them correct by construction, simulate them, render and parse them.

Rules mirrored from llama.cpp commit 0c1e5709: src/llama-quant.cpp (`llama_tensor_get_type`,
`tensor_type_fallback`) and tools/quantize/quantize.cpp (`parse_tensor_type`, `try_parse_ftype`):
- `--tensor-type NAME=TYPE`: NAME is lower-cased, compiled as an ECMAScript regex and tested with
  regex_search (unanchored). The first matching pattern wins, and the shape fallback still runs.
- `--token-embedding-type` and `--output-tensor-type` are checked before any pattern and skip the
  fallback. For tied embeddings (no output.weight), token_embd goes through the output branch of
  the heuristic mix.
- Patterns apply only when the ftype's default type is quantized.

The builder emits only anchored, escaped, lower-case patterns through `--tensor-type`, so that
every quantizable tensor matches exactly the pattern meant for it. token_embd and output get one
too, so that the fallback protects them.
Every recipe is run through the simulator before it is returned.
"""
from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from . import qtypes
from .errors import PrismError

TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")
OUTPUT_NAME = "output.weight"

# ftype argument (QUANT_OPTIONS in quantize.cpp) -> (llama_ftype value, default tensor type from
# llama_ftype_get_default_type). COPY keeps every tensor as it is.
FTYPES: dict[str, tuple[int, str]] = {
    "Q1_0": (40, "Q1_0"), "Q2_0": (41, "Q2_0"), "Q4_0": (2, "Q4_0"), "Q4_1": (3, "Q4_1"),
    "MXFP4_MOE": (38, "MXFP4"), "Q5_0": (8, "Q5_0"), "Q5_1": (9, "Q5_1"),
    "IQ2_XXS": (19, "IQ2_XXS"), "IQ2_XS": (20, "IQ2_XS"), "IQ2_S": (28, "IQ2_XS"), "IQ2_M": (29, "IQ2_S"),
    "IQ1_S": (24, "IQ1_S"), "IQ1_M": (31, "IQ1_M"), "TQ1_0": (36, "TQ1_0"), "TQ2_0": (37, "TQ2_0"),
    "Q2_K": (10, "Q2_K"), "Q2_K_S": (21, "Q2_K"), "IQ3_XXS": (23, "IQ3_XXS"), "IQ3_S": (26, "IQ3_S"),
    "IQ3_M": (27, "IQ3_S"), "Q3_K": (12, "Q3_K"), "IQ3_XS": (22, "IQ3_S"), "Q3_K_S": (11, "Q3_K"),
    "Q3_K_M": (12, "Q3_K"), "Q3_K_L": (13, "Q3_K"), "IQ4_NL": (25, "IQ4_NL"), "IQ4_XS": (30, "IQ4_XS"),
    "Q4_K": (15, "Q4_K"), "Q4_K_S": (14, "Q4_K"), "Q4_K_M": (15, "Q4_K"), "Q5_K": (17, "Q5_K"),
    "Q5_K_S": (16, "Q5_K"), "Q5_K_M": (17, "Q5_K"), "Q6_K": (18, "Q6_K"), "Q8_0": (7, "Q8_0"),
    "F16": (1, "F16"), "BF16": (32, "BF16"), "F32": (0, "F32"), "COPY": (0, "F32"),
}
_FTYPE_ORDER = tuple(FTYPES)     # try_parse_ftype takes the first entry with a matching number

# tensor_type_fallback: requested type -> type written when the row length is not a block multiple
_FALLBACK = {
    **dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
    **dict.fromkeys(("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"),
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}
_BLOCK_EXTRA = {"Q2_0": 64}      # ggml types the gguf package does not know yet

# tensor_requires_imatrix (token_embd and output are exempt; Q2_K only inside a Q2_K_S file)
_NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS")

_UNQUANTIZED = ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64")


def type_name(t: str) -> str:
    """Canonical upper-case ggml type name; PrismError for names llama-quantize would reject."""
    key = t.strip().upper()
    if key in _BLOCK_EXTRA or key in qtypes.all_types():
        return key
    raise PrismError(f"unknown quant type '{t}'")


def _block_size(t: str) -> int:
    return _BLOCK_EXTRA.get(t) or qtypes.get(t).block_size


def is_quantized(t: str) -> bool:
    return t not in _UNQUANTIZED


def fallback_type(requested: str, n_per_row: int) -> str:
    """The type llama-quantize writes for `requested` on rows of `n_per_row` values."""
    if n_per_row % _block_size(requested) == 0:
        return requested
    if requested in _FALLBACK:
        written = _FALLBACK[requested]
    elif _block_size(requested) <= 32:
        written = requested
    else:
        raise PrismError(f"llama-quantize has no fallback for {requested} on rows of {n_per_row}")
    return written if n_per_row % _block_size(written) == 0 else "F16"


def _stoi(arg: str) -> int | None:
    """std::stoi: optional blanks and sign, then the longest digit prefix ("8b.gguf" -> 8)."""
    m = re.match(r"\s*[+-]?[0-9]+", arg)
    return int(m.group(0)) if m else None


def parse_ftype(arg: str) -> str | None:
    """try_parse_ftype: an ftype name (any case) or a number -> canonical name; None if neither."""
    key = arg.upper()
    if key in FTYPES:
        return key
    num = _stoi(arg)
    return next((n for n in _FTYPE_ORDER if FTYPES[n][0] == num), None)


# ---------------------------------------------------------------------------------------------
# inputs and the simulator


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as llama-quantize sees it. `quantizable` mirrors tensor_allows_quantization."""

    name: str
    n_per_row: int
    quantizable: bool = True
    source_type: str = "F16"


@dataclass(frozen=True)
class Override:
    """One `--tensor-type NAME=TYPE`, NAME as written (llama-quantize lower-cases it)."""

    pattern: str
    type: str

    @property
    def arg(self) -> str:
        return f"{self.pattern}={self.type}"


def parse_override(token: str) -> Override:
    """parse_tensor_type: split at the first '=', both sides non-empty, TYPE a ggml type name."""
    name, sep, qtype = token.partition("=")
    if not sep:
        raise PrismError(f"malformed tensor type '{token}' (expected NAME=TYPE)")
    if not name:
        raise PrismError(f"missing tensor name in '{token}'")
    if not qtype:
        raise PrismError(f"missing quantization type in '{token}'")
    return Override(name, type_name(qtype))


def parse_tensor_type_file(text: str) -> list[Override]:
    """parse_tensor_type_file: whitespace-separated NAME=TYPE tokens, no comments."""
    return [parse_override(tok) for tok in text.split()]


@dataclass(frozen=True)
class Resolution:
    """What llama-quantize does with one tensor.

    source is one of:
    - pattern: a --tensor-type pattern matched; `pattern` is its index;
    - token-embedding-type, output-tensor-type: those flags, without fallback;
    - output-rule: the mix's output/tied-embedding rule;
    - mix: the ftype's heuristic mix (requested is None when no `mix` callback was given);
    - default: --pure, or an unquantized ftype;
    - kept: not quantizable, or COPY.
    """

    name: str
    requested: str | None
    written: str | None
    source: str
    pattern: int | None = None


@dataclass(frozen=True)
class PartialMatch:
    """A pattern caught a tensor only by cutting through a name token (attn_q inside attn_qkv)."""

    pattern: int
    tensor: str
    matched: str


@dataclass(frozen=True)
class Simulation:
    overrides: tuple[Override, ...]
    tensors: tuple[Resolution, ...]
    unused: tuple[int, ...]           # patterns matching no tensor that reaches the pattern list
    shadowed: tuple[int, ...]         # patterns whose every match was taken by an earlier one
    partial: tuple[PartialMatch, ...]
    lowercased: tuple[int, ...]       # patterns that llama-quantize's lower-casing changes
    misfit: tuple[str, ...] = ()      # tensors given a type their rows cannot take (no fallback ran)

    def by_name(self) -> dict[str, Resolution]:
        return {r.name: r for r in self.tensors}

    def problems(self) -> list[str]:
        """One line per diagnostic, for printing."""
        p = self.overrides
        out = [f"pattern '{p[i].pattern}' matches no tensor" for i in self.unused]
        out += [f"pattern '{p[i].pattern}' is shadowed: every tensor it matches is taken earlier"
                for i in self.shadowed]
        out += [f"pattern '{p[m.pattern].pattern}' catches {m.tensor} through '{m.matched}', "
                f"part of a longer name" for m in self.partial]
        out += [f"pattern '{p[i].pattern}' contains upper-case letters; llama-quantize lower-cases it "
                f"to '{p[i].pattern.lower()}'" for i in self.lowercased]
        got = self.by_name()
        out += [f"{n} gets {got[n].written} from --{got[n].source}, which skips the fallback, but its rows "
                f"are not a multiple of the block size" for n in self.misfit]
        return out


MixFn = Callable[[Sequence[TensorSpec]], Mapping[str, str]]


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


def _compile(o: Override) -> re.Pattern[str]:
    try:
        return re.compile(o.pattern.lower())
    except re.error as e:
        raise PrismError(f"pattern '{o.pattern}' is not a valid regex: {e}") from None


def _output_rule(t: TensorSpec, ftype: str, default: str, output_tensor_type: str | None) -> str:
    """The mix's rule for output.weight, and for token_embd when embeddings are tied (LQ L488-511)."""
    if output_tensor_type is not None:
        return output_tensor_type
    if ftype == "MXFP4_MOE" or t.n_per_row % _block_size(default) != 0:
        return "Q8_0"
    if ftype in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
        return "Q5_K"
    return default if default == "Q8_0" else "Q6_K"


def simulate(tensors: Sequence[TensorSpec], overrides: Sequence[Override], *, ftype: str = "Q8_0",
             token_embedding_type: str | None = None, output_tensor_type: str | None = None,
             pure: bool = False, leave_output_tensor: bool = False,
             mix: MixFn | None = None) -> Simulation:
    """The type llama-quantize gives every tensor, with pattern diagnostics (llama_tensor_get_type).

    `mix(tensors)` is called once, with the tensors left to the ftype's heuristic mix in file order,
    because the mix's layer counters only advance over those. Without it their type is None.
    """
    ftype_name = parse_ftype(ftype)
    if ftype_name is None:
        raise PrismError(f"invalid ftype '{ftype}'")
    default = FTYPES[ftype_name][1]
    rxs = [_compile(o) for o in overrides]
    tied = not any(t.name == OUTPUT_NAME for t in tensors)
    use_patterns = is_quantized(default) and ftype_name != "COPY"

    def first_match(name: str) -> int | None:
        return next((i for i, rx in enumerate(rxs) if rx.search(name)), None)

    res: dict[str, Resolution] = {}
    reaching: list[TensorSpec] = []       # tensors that consult the pattern list
    to_mix: list[TensorSpec] = []
    for t in tensors:
        quantizable = t.quantizable and not (leave_output_tensor and t.name == OUTPUT_NAME)
        if not quantizable or ftype_name == "COPY":
            res[t.name] = Resolution(t.name, None, t.source_type, "kept")
            continue
        if token_embedding_type is not None and t.name in TOKEN_EMBD_NAMES:
            # per_layer_token_embd alone may be claimed by an explicit pattern
            if not (t.name == "per_layer_token_embd.weight" and first_match(t.name) is not None):
                res[t.name] = Resolution(t.name, token_embedding_type, token_embedding_type,
                                         "token-embedding-type")
                continue
        if output_tensor_type is not None and t.name == OUTPUT_NAME:
            res[t.name] = Resolution(t.name, output_tensor_type, output_tensor_type, "output-tensor-type")
            continue
        if not use_patterns:
            res[t.name] = Resolution(t.name, default, default, "default")
            continue
        reaching.append(t)
        hit = first_match(t.name)
        if hit is not None:
            req, src = overrides[hit].type, "pattern"
        elif pure:
            req, src = default, "default"
        elif t.name == OUTPUT_NAME or (tied and t.name in TOKEN_EMBD_NAMES):
            req, src = _output_rule(t, ftype_name, default, output_tensor_type), "output-rule"
        else:
            to_mix.append(t)
            continue
        res[t.name] = Resolution(t.name, req, fallback_type(req, t.n_per_row), src, hit)

    mixed = dict(mix(to_mix)) if (mix is not None and to_mix) else {}
    for t in to_mix:
        req = mixed.get(t.name)
        res[t.name] = Resolution(t.name, req, None if req is None else fallback_type(req, t.n_per_row), "mix")

    matched: list[list[str]] = [[] for _ in overrides]
    for t in reaching:
        for i, rx in enumerate(rxs):
            if rx.search(t.name):
                matched[i].append(t.name)
    unused = tuple(i for i, m in enumerate(matched) if not m)
    shadowed = tuple(i for i, m in enumerate(matched) if m and all(res[n].pattern != i for n in m))
    partial = []
    for t in reaching:
        r = res[t.name]
        if r.pattern is not None:
            text = _partial(rxs[r.pattern], t.name)
            if text is not None:
                partial.append(PartialMatch(r.pattern, t.name, text))
    lowercased = tuple(i for i, o in enumerate(overrides) if o.pattern != o.pattern.lower())
    misfit = tuple(t.name for t in tensors if res[t.name].source in ("token-embedding-type", "output-tensor-type")
                   and t.n_per_row % _block_size(res[t.name].written or "F16") != 0)
    return Simulation(tuple(overrides), tuple(res[t.name] for t in tensors), unused, shadowed,
                      tuple(partial), lowercased, misfit)


# ---------------------------------------------------------------------------------------------
# building a recipe


def escape(text: str) -> str:
    """A regex matching `text` literally, that survives llama-quantize's NAME handling.

    The NAME is lower-cased, split at its first '=', and a tensor-type file splits on whitespace.
    Upper-case letters, '=' and whitespace are therefore written as \\xHH, which ECMAScript and
    Python read alike. There is no \\D-style escape.
    """
    out = []
    for c in text:
        if not c.isascii():
            raise PrismError(f"tensor name {text!r} is not ASCII; llama-quantize patterns cannot name it safely")
        if c in "\\^$.|?*+()[]{}":
            out.append("\\" + c)
        elif c.isupper() or c == "=" or c.isspace() or not c.isprintable():
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def _parts(name: str) -> tuple[str, ...]:
    return tuple(name.split("."))


def class_key(name: str) -> str:
    """The tensor's class: its name with every all-digit dotted part (the layer index) as '#'."""
    return ".".join("#" if p.isdigit() else p for p in _parts(name))


def class_pattern(key: str) -> str:
    """`^blk\\.[0-9]+\\.ffn_down\\.weight$` for the class key blk.#.ffn_down.weight."""
    return "^" + r"\.".join("[0-9]+" if p == "#" else escape(p) for p in key.split(".")) + "$"


def _override_patterns(key: str, names: Sequence[str]) -> list[str]:
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


def _base_type(types: Iterable[str]) -> str:
    """The ftype argument: the most common planned type that is its own ftype's default.

    Patterns are ignored unless the default is quantized, so an unquantized type is chosen only
    when it is the sole planned type, in which case no patterns are needed.
    """
    counts = Counter(types)
    own = [t for t, _ in counts.most_common() if is_quantized(t) and FTYPES.get(t, (0, ""))[1] == t]
    if own:
        return own[0]
    if len(counts) == 1:
        (t,) = counts
        if t in FTYPES and FTYPES[t][1] == t:
            return t
    quantized = [t for t in counts if is_quantized(t)]
    if quantized:
        return "Q8_0"     # any quantized default works: every tensor has its own pattern
    raise PrismError(f"llama-quantize cannot mix only unquantized types ({', '.join(sorted(counts))})")


@dataclass(frozen=True)
class Recipe:
    overrides: tuple[Override, ...]
    base_type: str                    # the ftype positional argument
    planned: dict[str, str]           # quantizable tensor -> requested type
    written: dict[str, str]           # quantizable tensor -> type in the output file
    requires_imatrix: tuple[str, ...] = field(default=())

    def _arg_groups(self, model_in: str, model_out: str, imatrix: str | None, allow_requantize: bool,
                    tensor_type_file: str | None, program: str, nthreads: int | None) -> list[list[str]]:
        if self.requires_imatrix and imatrix is None:
            raise PrismError(f"the recipe puts {self.planned[self.requires_imatrix[0]]} on "
                             f"{self.requires_imatrix[0]}, which llama-quantize only does with --imatrix")
        if parse_ftype(model_out) is not None:
            raise PrismError(f"output path '{model_out}' reads as an ftype to llama-quantize; rename it")
        if Path(model_in) == Path(model_out):
            raise PrismError("input and output model paths are the same")
        groups = [[program]]
        if tensor_type_file is not None:
            groups.append(["--tensor-type-file", tensor_type_file])
        else:
            groups += [["--tensor-type", o.arg] for o in self.overrides]
        if imatrix is not None:
            groups.append(["--imatrix", imatrix])
        if allow_requantize:
            groups.append(["--allow-requantize"])
        groups.append([model_in, model_out, self.base_type] + ([] if nthreads is None else [str(int(nthreads))]))
        return groups

    def argv(self, model_in: str, model_out: str, *, imatrix: str | None = None, allow_requantize: bool = False,
             tensor_type_file: str | None = None, program: str = "llama-quantize",
             nthreads: int | None = None) -> list[str]:
        """The command as an argument list, for subprocess."""
        groups = self._arg_groups(model_in, model_out, imatrix, allow_requantize, tensor_type_file, program, nthreads)
        return [a for g in groups for a in g]

    def shell(self, model_in: str, model_out: str, *, imatrix: str | None = None, allow_requantize: bool = False,
              tensor_type_file: str | None = None, program: str = "llama-quantize", nthreads: int | None = None,
              multiline: bool = True) -> str:
        """The copy-paste command, one option per line when `multiline`.

        With `tensor_type_file`, the patterns are read from that file instead of the command line.
        """
        groups = self._arg_groups(model_in, model_out, imatrix, allow_requantize, tensor_type_file, program, nthreads)
        sep = " \\\n  " if multiline else " "
        return sep.join(" ".join(shlex.quote(a) for a in g) for g in groups)

    def tensor_type_file(self) -> str:
        """Contents for --tensor-type-file: one NAME=TYPE token per line, no comments."""
        return "".join(o.arg + "\n" for o in self.overrides)

    def to_dict(self) -> dict[str, object]:
        return {
            "base_type": self.base_type,
            "tensor_types": [{"pattern": o.pattern, "type": o.type} for o in self.overrides],
            "planned": dict(self.planned),
            "written": dict(self.written),
            "requires_imatrix": list(self.requires_imatrix),
        }


def build_recipe(tensors: Sequence[TensorSpec], plan: Mapping[str, str]) -> Recipe:
    """Patterns giving every quantizable tensor its planned (requested) type, verified by simulation.

    Per-tensor overrides come first. They are grouped per class and type into one alternation over
    the layer index. Then comes one pattern per class, for the class's most common type.
    """
    quantizable = [t for t in tensors if t.quantizable]
    names = {t.name for t in quantizable}
    missing = [t.name for t in quantizable if t.name not in plan]
    if missing:
        raise ValueError(f"build_recipe: no planned type for {', '.join(missing[:5])}")
    stray = [n for n in plan if n not in names]
    if stray:
        raise ValueError(f"build_recipe: planned type for a tensor that is not quantizable: {stray[0]}")
    planned = {t.name: type_name(plan[t.name]) for t in quantizable}

    classes: dict[str, list[str]] = {}
    for t in quantizable:
        classes.setdefault(class_key(t.name), []).append(t.name)
    base = _base_type(planned.values())

    overrides: list[Override] = []
    class_rules: list[Override] = []
    if is_quantized(base):
        for key, members in classes.items():
            counts = Counter(planned[n] for n in members)
            top = max(counts.values())
            main = next(planned[n] for n in members if counts[planned[n]] == top)
            for ty in sorted({planned[n] for n in members} - {main}):
                odd = [n for n in members if planned[n] == ty]
                overrides += [Override(p, ty) for p in _override_patterns(key, odd)]
            class_rules.append(Override(class_pattern(key), main))
    overrides += class_rules

    sim = simulate(tensors, overrides, ftype=base)
    _verify(sim, planned, "pattern" if is_quantized(base) else "default")
    got = sim.by_name()
    written = {n: got[n].written or "" for n in planned}
    needs = tuple(n for n in planned if planned[n] in _NEEDS_IMATRIX
                  and n not in TOKEN_EMBD_NAMES and n != OUTPUT_NAME)
    return Recipe(tuple(overrides), base, planned, written, needs)


def _verify(sim: Simulation, planned: Mapping[str, str], source: str) -> None:
    got = sim.by_name()
    for name, want in planned.items():
        r = got[name]
        if r.source != source or r.requested != want:
            raise PrismError(f"internal error: recipe gives {name} {r.requested} ({r.source}), planned {want}")
    problems = sim.problems()
    if problems:
        raise PrismError(f"internal error: recipe has a pattern problem: {problems[0]}")


# ---------------------------------------------------------------------------------------------
# parsing an existing command line


@dataclass
class QuantizeCommand:
    """An llama-quantize invocation, option by option, in command-line order where it matters."""

    type_args: list[tuple[str, str]] = field(default_factory=list)  # ("tensor-type", NAME=TYPE) | ("tensor-type-file", path)
    token_embedding_type: str | None = None
    output_tensor_type: str | None = None
    pure: bool = False
    allow_requantize: bool = False
    leave_output_tensor: bool = False
    dry_run: bool = False
    keep_split: bool = False
    imatrix: str | None = None
    include_weights: list[str] = field(default_factory=list)
    exclude_weights: list[str] = field(default_factory=list)
    prune_layers: str | None = None
    override_kv: list[str] = field(default_factory=list)
    max_buffer_size: str | None = None
    model_in: str = ""
    model_out: str | None = None      # None: llama-quantize picks ggml-model-<FTYPE>.gguf
    ftype: str = ""
    nthreads: int | None = None
    ignored: list[str] = field(default_factory=list)   # positional arguments llama-quantize never reads

    def overrides(self, read: Callable[[str], str] = lambda p: Path(p).read_text()) -> list[Override]:
        """--tensor-type and --tensor-type-file entries merged in command-line order."""
        out: list[Override] = []
        for kind, value in self.type_args:
            out += [parse_override(value)] if kind == "tensor-type" else parse_tensor_type_file(read(value))
        return out

    def simulate(self, tensors: Sequence[TensorSpec], *, mix: MixFn | None = None,
                 read: Callable[[str], str] = lambda p: Path(p).read_text()) -> Simulation:
        return simulate(tensors, self.overrides(read), ftype=self.ftype,
                        token_embedding_type=self.token_embedding_type,
                        output_tensor_type=self.output_tensor_type, pure=self.pure,
                        leave_output_tensor=self.leave_output_tensor, mix=mix)


_FLAGS = {"--pure": "pure", "--allow-requantize": "allow_requantize", "--leave-output-tensor": "leave_output_tensor",
          "--dry-run": "dry_run", "--keep-split": "keep_split"}
_VALUED = ("--tensor-type", "--tensor-type-file", "--token-embedding-type", "--output-tensor-type", "--imatrix",
           "--include-weights", "--exclude-weights", "--prune-layers", "--override-kv", "--max-buffer-size")


def _looks_like_program(arg: str) -> bool:
    return Path(arg).name in ("llama-quantize", "quantize", "llama-quantize.exe")


def parse_command(argv: Sequence[str]) -> QuantizeCommand:
    """Parse llama-quantize arguments (with or without the program name) the way quantize.cpp does.

    Options come first; every argument that starts with '--' is one. Then come the input, an
    optional output, the ftype and an optional thread count. The output is omitted when the
    argument after the input already parses as an ftype.
    """
    args = list(argv)
    if args and _looks_like_program(args[0]):
        args = args[1:]
    cmd = QuantizeCommand()
    i = 0
    while i < len(args) and args[i].startswith("--"):
        a = args[i]
        if a in _FLAGS:
            setattr(cmd, _FLAGS[a], True)
            i += 1
            continue
        if a not in _VALUED:
            hint = " (llama-quantize takes the value as the next argument, not after '=')" if "=" in a else ""
            raise PrismError(f"llama-quantize does not accept option '{a}'{hint}")
        if i + 1 >= len(args):
            raise PrismError(f"option {a} needs a value")
        v = args[i + 1]
        i += 2
        if a == "--tensor-type":
            parse_override(v)                       # fail early, as llama-quantize does
            cmd.type_args.append(("tensor-type", v))
        elif a == "--tensor-type-file":
            cmd.type_args.append(("tensor-type-file", v))
        elif a == "--token-embedding-type":
            cmd.token_embedding_type = type_name(v)
        elif a == "--output-tensor-type":
            cmd.output_tensor_type = type_name(v)
        elif a == "--imatrix":
            cmd.imatrix = v
        elif a == "--include-weights":
            cmd.include_weights.append(v)
        elif a == "--exclude-weights":
            cmd.exclude_weights.append(v)
        elif a == "--prune-layers":
            cmd.prune_layers = v
        elif a == "--override-kv":
            cmd.override_kv.append(v)
        else:
            cmd.max_buffer_size = v
    if cmd.include_weights and cmd.exclude_weights:
        raise PrismError("llama-quantize does not accept --include-weights together with --exclude-weights")
    pos = args[i:]
    if len(pos) < 2:
        raise PrismError("llama-quantize needs at least an input model and an ftype")
    cmd.model_in = pos[0]
    ft = parse_ftype(pos[1])
    if ft is not None:
        rest = pos[2:]
    else:
        if len(pos) < 3:
            raise PrismError("missing ftype after the output path")
        cmd.model_out = pos[1]
        ft = parse_ftype(pos[2])
        if ft is None:
            raise PrismError(f"invalid ftype '{pos[2]}'")
        rest = pos[3:]
    cmd.ftype = ft
    if rest:
        cmd.nthreads = _stoi(rest[0])
        if cmd.nthreads is None:
            raise PrismError(f"invalid thread count '{rest[0]}'")
        cmd.ignored = rest[1:]
    return cmd
