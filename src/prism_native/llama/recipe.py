"""llama-quantize recipes: build them correct by construction, simulate them, render and parse them.

The type every tensor gets is rules.decide's (llama.cpp src/llama-quant.cpp, `llama_tensor_get_type`);
this module adds what a recipe needs on top of it:
- the pattern diagnostics: patterns that match nothing, patterns shadowed by an earlier one, matches
  that cut through a name token (`attn_q` inside `attn_qkv`), patterns that llama-quantize's
  lower-casing changes, and dedicated-flag types the rows cannot take (those flags skip the fallback);
- the builder, which emits only anchored, escaped, lower-case patterns through `--tensor-type`, so
  that every quantizable tensor matches exactly the pattern meant for it (token_embd and output get
  one too, so that the fallback protects them). Every recipe is run through the simulator before it
  is returned;
- rendering as a command or a --tensor-type-file, and parsing an existing command
  (tools/quantize/quantize.cpp: option order, `parse_tensor_type`, `try_parse_ftype`).
"""
from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .. import qtypes
from ..errors import PrismError
from ..read.model import Hparams, TensorInfo
from .rules import (FTYPE_ALIASES, FTYPES, Decision, QuantizeOptions, TensorTypeRule, decide, get_ftype,
                    hparams_from_names, is_quantized, not_quantized_reason, parse_ftype, stoi)

__all__ = ["Override", "PartialMatch", "QuantizeCommand", "Recipe", "Resolution", "Simulation", "TensorSpec",
           "anchored_patterns", "build_recipe", "class_key", "class_pattern", "escape", "parse_command", "parse_ftype",
           "parse_override", "parse_tensor_type_file", "simulate"]


def _quantized(type_name: str) -> bool:
    return is_quantized(qtypes.get(type_name))


def _own_ftype(type_name: str) -> bool:
    """`type_name` is also an ftype whose default tensor type is itself (Q4_K: yes, IQ2_S: no)."""
    f = FTYPES.get(FTYPE_ALIASES.get(type_name, type_name))
    return f is not None and f.default == type_name


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise PrismError(f"cannot read tensor type file '{path}': {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------
# inputs and the simulator


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as llama-quantize sees it; it serves as a tensor for rules.decide.

    `quantizable` mirrors tensor_allows_quantization. `ne` is the ggml shape when known (ne0 ==
    n_per_row); without it a quantizable tensor reads as a 2-D matrix and any other as 1-D, since the
    type rules only look at the number of dimensions and, for MXFP4_MOE, at ne2 (the experts).
    """

    name: str
    n_per_row: int
    quantizable: bool = True
    source_type: str = "F16"
    ne: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        if self.ne:
            return self.ne
        return (self.n_per_row, 2) if self.quantizable else (self.n_per_row,)

    @property
    def ggml_type(self) -> int:
        return qtypes.get(self.source_type).ggml_type

    @classmethod
    def of(cls, t: TensorInfo, arch: str) -> "TensorSpec":
        """The spec of a tensor of an opened model."""
        return cls(t.name, t.n_per_row, not_quantized_reason(t.name, t.n_dims, arch) is None, t.type_name,
                   t.shape)


@dataclass(frozen=True)
class Override:
    """One `--tensor-type NAME=TYPE`, NAME as written (llama-quantize lower-cases it)."""

    pattern: str
    type: str

    @property
    def arg(self) -> str:
        return f"{self.pattern}={self.type}"


def parse_override(token: str) -> Override:
    """parse_tensor_type (as rules.TensorTypeRule.parse checks it), keeping NAME as written."""
    rule = TensorTypeRule.parse(token)
    return Override(token.partition("=")[0], rule.qtype.name)


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
    - mix: the ftype's heuristic mix;
    - default: --pure, or an unquantized ftype;
    - kept: not quantizable (`reason`), or COPY.
    requested is the type before the row-length fallback (None when kept), written the type in the file.
    """

    name: str
    requested: str | None
    written: str | None
    source: str
    pattern: int | None = None
    reason: str | None = None          # why llama-quantize keeps the tensor, when kept
    requires_imatrix: bool = False     # llama-quantize refuses to write it without --imatrix


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
    matched: tuple[tuple[str, ...], ...] = ()  # per pattern: the tensors reaching the pattern list it matches

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


def _resolution(d: Decision) -> Resolution:
    if not d.quantized:
        return Resolution(d.name, None, d.target.name, "kept", reason=d.reason)
    return Resolution(d.name, (d.wanted or d.target).name, d.target.name, d.rule, d.pattern,
                      requires_imatrix=d.requires_imatrix)


def simulate(tensors: Sequence[TensorSpec], overrides: Sequence[Override], *, ftype: str = "Q8_0",
             token_embedding_type: str | None = None, output_tensor_type: str | None = None,
             pure: bool = False, leave_output_tensor: bool = False, imatrix: bool = False,
             hparams: Hparams | None = None) -> Simulation:
    """The type llama-quantize gives every tensor (rules.decide), with pattern diagnostics.

    `hparams` are the model's (Model.hparams). Without them they come from the tensor names
    (rules.hparams_from_names): exact under --pure or when patterns name every tensor, but the mix
    then ignores GQA, expert counts and the architecture. `imatrix` is whether --imatrix is given
    (a few mixes differ with one).
    """
    ft = parse_ftype(ftype)
    if ft is None:
        raise PrismError(f"invalid ftype '{ftype}'")
    type_rules = tuple(TensorTypeRule.make(o.pattern, o.type) for o in overrides)
    opts = QuantizeOptions(ftype=ft, pure=pure, tensor_types=type_rules, output_tensor_type=output_tensor_type,
                           token_embedding_type=token_embedding_type, leave_output_tensor=leave_output_tensor,
                           imatrix=imatrix)
    hp = hparams if hparams is not None else hparams_from_names(t.name for t in tensors)
    decided = {d.name: d for d in decide(tensors, hp, opts)}
    for t in tensors:
        if not t.quantizable and decided[t.name].quantized:
            raise ValueError(f"TensorSpec {t.name} says quantizable=False, but llama-quantize quantizes "
                             f"a tensor of shape {t.shape}")
    res = {name: _resolution(d) for name, d in decided.items()}

    # the tensors that consult the pattern list: quantized, not taken by a dedicated flag, and the
    # ftype's default type is quantized
    patterns_apply = is_quantized(qtypes.get(get_ftype(ft).default))
    reaching = [t.name for t in tensors if patterns_apply and decided[t.name].quantized
                and res[t.name].source not in ("token-embedding-type", "output-tensor-type")]
    matched: list[list[str]] = [[n for n in reaching if r.matches(n)] for r in type_rules]
    unused = tuple(i for i, m in enumerate(matched) if not m)
    shadowed = tuple(i for i, m in enumerate(matched) if m and all(res[n].pattern != i for n in m))
    partial = []
    for n in reaching:
        i = res[n].pattern
        if i is not None:
            text = _partial(type_rules[i].regex, n)
            if text is not None:
                partial.append(PartialMatch(i, n, text))
    lowercased = tuple(i for i, o in enumerate(overrides) if o.pattern != o.pattern.lower())
    misfit = tuple(t.name for t in tensors if decided[t.name].quantized and not decided[t.name].fits)
    return Simulation(tuple(overrides), tuple(res[t.name] for t in tensors), unused, shadowed,
                      tuple(partial), lowercased, misfit, tuple(tuple(m) for m in matched))



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


def _base_type(types: Iterable[str]) -> str:
    """The ftype argument: the most common planned type that is its own ftype's default.

    Patterns are ignored unless the default is quantized, so an unquantized type is chosen only
    when it is the sole planned type, in which case no patterns are needed.
    """
    counts = Counter(types)
    own = [t for t, _ in counts.most_common() if _quantized(t) and _own_ftype(t)]
    if own:
        return own[0]
    if len(counts) == 1:
        (t,) = counts
        if _own_ftype(t):
            return t
    quantized = [t for t in counts if _quantized(t)]
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


def build_recipe(tensors: Sequence[TensorSpec], plan: Mapping[str, str], *, hparams: Hparams | None = None) -> Recipe:
    """Patterns giving every quantizable tensor its planned (requested) type, verified by simulation.

    Per-tensor overrides come first. They are grouped per class and type into one alternation over
    the layer index. Then comes one pattern per class, for the class's most common type.
    `hparams` (the model's) only matter for architecture-specific exclusions from quantization.
    """
    quantizable = [t for t in tensors if t.quantizable]
    names = {t.name for t in quantizable}
    missing = [t.name for t in quantizable if t.name not in plan]
    if missing:
        raise ValueError(f"build_recipe: no planned type for {', '.join(missing[:5])}")
    stray = [n for n in plan if n not in names]
    if stray:
        raise ValueError(f"build_recipe: planned type for a tensor that is not quantizable: {stray[0]}")
    planned = {t.name: qtypes.get(plan[t.name]).name for t in quantizable}

    classes: dict[str, list[str]] = {}
    for t in quantizable:
        classes.setdefault(class_key(t.name), []).append(t.name)
    base = _base_type(planned.values())

    overrides: list[Override] = []
    class_rules: list[Override] = []
    patterned = _quantized(base)
    if patterned:
        for key, members in classes.items():
            counts = Counter(planned[n] for n in members)
            top = max(counts.values())
            main = next(planned[n] for n in members if counts[planned[n]] == top)
            for ty in sorted({planned[n] for n in members} - {main}):
                odd = [n for n in members if planned[n] == ty]
                overrides += [Override(p, ty) for p in anchored_patterns(key, odd)]
            class_rules.append(Override(class_pattern(key), main))
    overrides += class_rules

    sim = simulate(tensors, overrides, ftype=base, hparams=hparams)
    _verify(sim, planned, "pattern" if patterned else "default")
    got = sim.by_name()
    written = {n: got[n].written or "" for n in planned}
    needs = tuple(n for n in planned if got[n].requires_imatrix)
    return Recipe(tuple(overrides), base, planned, written, needs)


def _verify(sim: Simulation, planned: Mapping[str, str], source: str) -> None:
    got = sim.by_name()
    kept = next((got[n] for n in planned if got[n].source == "kept"), None)
    if kept is not None:
        raise ValueError(f"build_recipe: {kept.name} is listed as quantizable, but llama-quantize keeps it "
                         f"({kept.reason})")
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

    def overrides(self, read: Callable[[str], str] = _read_text) -> list[Override]:
        """--tensor-type and --tensor-type-file entries merged in command-line order."""
        out: list[Override] = []
        for kind, value in self.type_args:
            out += [parse_override(value)] if kind == "tensor-type" else parse_tensor_type_file(read(value))
        return out

    def simulate(self, tensors: Sequence[TensorSpec], *, hparams: Hparams | None = None,
                 read: Callable[[str], str] = _read_text) -> Simulation:
        return simulate(tensors, self.overrides(read), ftype=self.ftype,
                        token_embedding_type=self.token_embedding_type,
                        output_tensor_type=self.output_tensor_type, pure=self.pure,
                        leave_output_tensor=self.leave_output_tensor, imatrix=self.imatrix is not None,
                        hparams=hparams)


_FLAGS = {"--pure": "pure", "--allow-requantize": "allow_requantize", "--leave-output-tensor": "leave_output_tensor",
          "--dry-run": "dry_run", "--keep-split": "keep_split"}
_VALUED = ("--tensor-type", "--tensor-type-file", "--token-embedding-type", "--output-tensor-type", "--imatrix",
           "--include-weights", "--exclude-weights", "--prune-layers", "--override-kv", "--max-buffer-size")


def _looks_like_program(arg: str) -> bool:
    return Path(arg).name in ("llama-quantize", "quantize", "llama-quantize.exe")


def parse_command(argv: Sequence[str], *, input_optional: bool = False) -> QuantizeCommand:
    """Parse llama-quantize arguments (with or without the program name) the way quantize.cpp does.

    Options come first; every argument that starts with '--' is one. Then come the input, an
    optional output, the ftype and an optional thread count. The output is omitted when the
    argument after the input already parses as an ftype. With `input_optional` (the caller knows the
    model), a lone ftype after the options is accepted too; model_in is then "".
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
            cmd.token_embedding_type = qtypes.get(v).name
        elif a == "--output-tensor-type":
            cmd.output_tensor_type = qtypes.get(v).name
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
    if input_optional and len(pos) == 1:
        if parse_ftype(pos[0]) is None:
            raise PrismError(f"invalid ftype '{pos[0]}' (the arguments end with at least an ftype)")
        pos = ["", *pos]
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
        cmd.nthreads = stoi(rest[0])
        if cmd.nthreads is None:
            raise PrismError(f"invalid thread count '{rest[0]}'")
        cmd.ignored = rest[1:]
    return cmd
