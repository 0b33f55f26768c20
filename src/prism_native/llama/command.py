"""One llama-quantize invocation (tools/quantize/quantize.cpp main): parsed from its arguments the way
quantize.cpp reads them, or built from options, and rendered as an argument list or copy-paste shell text.
Recipes, baselines, eval and ablate all make one of these; the type decision reads its `options()`."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .. import qtypes
from ..errors import RecipeError
from ..read.bounded import MiB, read_text
from ..read.model import Hparams
from .decide import TensorSpec
from .ftypes import parse_ftype, stoi
from .options import QuantizeOptions
from .patterns import TensorTypeRule, parse_tensor_type_file
from .simulate import Simulation, simulate

PROGRAM = "llama-quantize"
MAX_TYPE_FILE = 8 * MiB       # a --tensor-type-file: room for patterns.MAX_RULES long patterns


def _read_text(path: str) -> str:
    return read_text(path, "tensor type file", MAX_TYPE_FILE, RecipeError)


@dataclass
class QuantizeCommand:
    """An llama-quantize invocation, option by option; --tensor-type and --tensor-type-file keep their
    command-line order (the first matching pattern wins)."""

    ftype: str = ""
    model_in: str = ""
    model_out: str | None = None      # None: llama-quantize picks ggml-model-<FTYPE>.gguf
    nthreads: int | None = None
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
    ignored: list[str] = field(default_factory=list)   # positional arguments llama-quantize never reads
    program: str = PROGRAM

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def of(cls, opts: QuantizeOptions, model_in: str | Path, model_out: str | Path | None = None, *,
           imatrix: str | Path | None = None, **kw: object) -> "QuantizeCommand":
        """The command that gives llama-quantize `opts` (its `imatrix` flag needs the file: `imatrix`)."""
        if opts.imatrix and imatrix is None:
            raise ValueError("QuantizeCommand.of: options say --imatrix but no imatrix file is given")
        return cls(ftype=opts.ftype, model_in=str(model_in), model_out=None if model_out is None else str(model_out),
                   type_args=[("tensor-type", r.arg) for r in opts.tensor_types],
                   token_embedding_type=opts.token_embedding_type,
                   output_tensor_type=opts.output_tensor_type, pure=opts.pure,
                   leave_output_tensor=opts.leave_output_tensor,
                   imatrix=None if imatrix is None else str(imatrix), **kw)  # type: ignore[arg-type]

    # -- reading -----------------------------------------------------------------------------------
    def overrides(self, read: Callable[[str], str] = _read_text) -> list[TensorTypeRule]:
        """--tensor-type and --tensor-type-file entries merged in command-line order."""
        out: list[TensorTypeRule] = []
        for kind, value in self.type_args:
            out += [TensorTypeRule.parse(value)] if kind == "tensor-type" else parse_tensor_type_file(read(value), value)
        return out

    def options(self, read: Callable[[str], str] = _read_text) -> QuantizeOptions:
        """The flags that decide tensor types."""
        return QuantizeOptions(ftype=self.ftype, pure=self.pure, tensor_types=tuple(self.overrides(read)),
                               output_tensor_type=self.output_tensor_type,
                               token_embedding_type=self.token_embedding_type,
                               leave_output_tensor=self.leave_output_tensor, imatrix=self.imatrix is not None)

    def simulate(self, tensors: Sequence[TensorSpec], *, hparams: Hparams | None = None,
                 read: Callable[[str], str] = _read_text) -> Simulation:
        return simulate(tensors, self.options(read), hparams=hparams)

    # -- rendering ---------------------------------------------------------------------------------
    def groups(self) -> list[list[str]]:
        """The arguments grouped as one option (with its value) per group, the positionals last."""
        if self.model_out is not None and parse_ftype(self.model_out) is not None:
            raise RecipeError(f"output path '{self.model_out}' reads as an ftype to llama-quantize; rename it")
        if self.model_out is not None and Path(self.model_in) == Path(self.model_out):
            raise RecipeError("input and output model paths are the same")
        g: list[list[str]] = [[self.program]]
        flag = lambda on, name: g.append([name]) if on else None  # noqa: E731
        value = lambda v, name: g.append([name, v]) if v is not None else None  # noqa: E731
        flag(self.dry_run, "--dry-run")
        flag(self.pure, "--pure")
        flag(self.leave_output_tensor, "--leave-output-tensor")
        value(self.output_tensor_type, "--output-tensor-type")
        value(self.token_embedding_type, "--token-embedding-type")
        g += [[f"--{kind}", v] for kind, v in self.type_args]
        value(self.imatrix, "--imatrix")
        flag(self.allow_requantize, "--allow-requantize")
        flag(self.keep_split, "--keep-split")
        g += [["--include-weights", v] for v in self.include_weights]
        g += [["--exclude-weights", v] for v in self.exclude_weights]
        value(self.prune_layers, "--prune-layers")
        g += [["--override-kv", v] for v in self.override_kv]
        value(self.max_buffer_size, "--max-buffer-size")
        pos = [self.model_in] + ([] if self.model_out is None else [self.model_out]) + [self.ftype]
        g.append(pos + ([] if self.nthreads is None else [str(int(self.nthreads))]))
        return g

    def argv(self) -> list[str]:
        """The command as an argument list, for subprocess (the program first)."""
        return [a for grp in self.groups() for a in grp]

    def shell(self, multiline: bool = True) -> str:
        """The copy-paste command, one option per line when `multiline`."""
        sep = " \\\n  " if multiline else " "
        return sep.join(" ".join(shlex.quote(a) for a in grp) for grp in self.groups())

    # -- parsing -----------------------------------------------------------------------------------
    @classmethod
    def parse(cls, argv: Sequence[str], *, input_optional: bool = False) -> "QuantizeCommand":
        """Parse llama-quantize arguments (with or without the program name) the way quantize.cpp does.

        Options come first; every argument that starts with '--' is one. Then come the input, an
        optional output, the ftype and an optional thread count. The output is omitted when the
        argument after the input already parses as an ftype. With `input_optional` (the caller knows the
        model), the input may be left out: positionals that start with an ftype that is not a file name
        ('Q4_K_M', 'Q4_K_M -1', 'Q4_K_M 8') are read as llama-quantize reads them after the input; model_in
        is then "".
        """
        args = list(argv)
        cmd = cls()
        if args and _looks_like_program(args[0]):
            cmd.program = args[0]
            args = args[1:]
        i = 0
        while i < len(args) and args[i].startswith("--"):
            a = args[i]
            if a in _FLAGS:
                setattr(cmd, _FLAGS[a], True)
                i += 1
                continue
            if a not in _VALUED:
                hint = " (llama-quantize takes the value as the next argument, not after '=')" if "=" in a else ""
                raise RecipeError(f"llama-quantize does not accept option '{a}'{hint}")
            if i + 1 >= len(args):
                raise RecipeError(f"option {a} needs a value")
            v = args[i + 1]
            i += 2
            if a == "--tensor-type":
                TensorTypeRule.parse(v)                 # fail early, as llama-quantize does
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
            raise RecipeError("llama-quantize does not accept --include-weights together with --exclude-weights")
        cmd._positionals(args[i:], input_optional)
        return cmd

    def _positionals(self, pos: list[str], input_optional: bool) -> None:
        if input_optional and len(pos) == 1 and parse_ftype(pos[0]) is None:
            raise RecipeError(f"invalid ftype '{pos[0]}' (the arguments end with at least an ftype)")
        if input_optional and pos and parse_ftype(pos[0]) is not None and not Path(pos[0]).is_file():
            pos = ["", *pos]
        if len(pos) < 2:
            raise RecipeError("llama-quantize needs at least an input model and an ftype")
        self.model_in = pos[0]
        ft = parse_ftype(pos[1])
        if ft is not None:
            rest = pos[2:]
        else:
            if len(pos) < 3:
                raise RecipeError("missing ftype after the output path")
            self.model_out = pos[1]
            ft = parse_ftype(pos[2])
            if ft is None:
                raise RecipeError(f"invalid ftype '{pos[2]}'")
            rest = pos[3:]
        self.ftype = ft
        if rest:
            self.nthreads = stoi(rest[0])
            if self.nthreads is None:
                raise RecipeError(f"invalid thread count '{rest[0]}'")
            self.ignored = rest[1:]


_FLAGS = {"--pure": "pure", "--allow-requantize": "allow_requantize", "--leave-output-tensor": "leave_output_tensor",
          "--dry-run": "dry_run", "--keep-split": "keep_split"}
_VALUED = ("--tensor-type", "--tensor-type-file", "--token-embedding-type", "--output-tensor-type", "--imatrix",
           "--include-weights", "--exclude-weights", "--prune-layers", "--override-kv", "--max-buffer-size")


def _looks_like_program(arg: str) -> bool:
    return Path(arg).name in ("llama-quantize", "quantize", "llama-quantize.exe")
