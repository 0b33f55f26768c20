"""The recipe that carries out a plan: llama-quantize --tensor-type patterns that give every quantizable
tensor exactly its planned type, correct by construction and checked by simulating llama-quantize.

Only anchored, escaped, lower-case patterns are emitted, so every quantizable tensor matches exactly the
pattern meant for it (token_embd and output get one too, so that the fallback protects them). Per-tensor
overrides come first, grouped per class and type into one alternation over the layer index; then one
pattern per class for its most common type.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .. import qtypes
from ..errors import RecipeError
from ..llama.command import QuantizeCommand
from ..llama.decide import TensorSpec
from ..llama.ftypes import FTYPE_ALIASES, FTYPES
from ..llama.options import QuantizeOptions
from ..llama.patterns import TensorTypeRule, anchored_patterns, class_pattern
from ..llama.simulate import Simulation, simulate
from ..read.model import Hparams
from ..read.taxonomy import classify


def _quantized(type_name: str) -> bool:
    return qtypes.get(type_name).quantized


def _own_ftype(type_name: str) -> bool:
    """`type_name` is also an ftype whose default tensor type is itself (Q4_K: yes, IQ2_S: no)."""
    f = FTYPES.get(FTYPE_ALIASES.get(type_name, type_name))
    return f is not None and f.default == type_name


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
    raise RecipeError(f"llama-quantize cannot mix only unquantized types ({', '.join(sorted(counts))})")


@dataclass(frozen=True)
class Recipe:
    overrides: tuple[TensorTypeRule, ...]
    base_type: str                    # the ftype positional argument
    planned: dict[str, str]           # quantizable tensor -> requested type
    written: dict[str, str]           # quantizable tensor -> type in the output file
    requires_imatrix: tuple[str, ...] = field(default=())

    def command(self, model_in: str | Path, model_out: str | Path, *, imatrix: str | Path | None = None,
                allow_requantize: bool = False, tensor_type_file: str | None = None,
                nthreads: int | None = None, program: str = "llama-quantize") -> QuantizeCommand:
        """The llama-quantize command for this recipe; with `tensor_type_file` the patterns are read
        from that file (write it with `tensor_type_file()`) instead of the command line."""
        if self.requires_imatrix and imatrix is None:
            raise RecipeError(f"the recipe puts {self.planned[self.requires_imatrix[0]]} on "
                              f"{self.requires_imatrix[0]}, which llama-quantize only does with --imatrix")
        types = ([("tensor-type-file", tensor_type_file)] if tensor_type_file is not None
                 else [("tensor-type", o.arg) for o in self.overrides])
        return QuantizeCommand(ftype=self.base_type, model_in=str(model_in), model_out=str(model_out),
                               nthreads=nthreads, type_args=types, allow_requantize=allow_requantize,
                               imatrix=None if imatrix is None else str(imatrix), program=program)

    def tensor_type_file(self) -> str:
        """Contents for --tensor-type-file: one NAME=TYPE token per line, no comments."""
        return "".join(o.arg + "\n" for o in self.overrides)

    def to_dict(self) -> dict[str, object]:
        return {
            "base_type": self.base_type,
            "tensor_types": [{"pattern": o.written, "type": o.type} for o in self.overrides],
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
        classes.setdefault(classify(t.name).key, []).append(t.name)
    base = _base_type(planned.values())

    overrides: list[TensorTypeRule] = []
    class_rules: list[TensorTypeRule] = []
    patterned = _quantized(base)
    if patterned:
        for key, members in classes.items():
            counts = Counter(planned[n] for n in members)
            top = max(counts.values())
            main = next(planned[n] for n in members if counts[planned[n]] == top)
            for ty in sorted({planned[n] for n in members} - {main}):
                odd = [n for n in members if planned[n] == ty]
                overrides += [TensorTypeRule.make(p, ty) for p in anchored_patterns(key, odd)]
            class_rules.append(TensorTypeRule.make(class_pattern(key), main))
    overrides += class_rules

    sim = simulate(tensors, QuantizeOptions(ftype=base, tensor_types=tuple(overrides)), hparams=hparams)
    _verify(sim, planned, "pattern" if patterned else "default")
    got = sim.by_name()
    written = {n: got[n].written or "" for n in planned}
    needs = tuple(n for n in planned if got[n].requires_imatrix)
    return Recipe(tuple(overrides), base, planned, written, needs)


def _verify(sim: Simulation, planned: Mapping[str, str], rule: str) -> None:
    """The recipe does what was planned: a failure here is a bug in build_recipe, not a user error."""
    got = sim.by_name()
    kept = next((got[n] for n in planned if not got[n].quantized), None)
    if kept is not None:
        raise ValueError(f"build_recipe: {kept.name} is listed as quantizable, but llama-quantize keeps it "
                         f"({kept.reason})")
    for name, want in planned.items():
        r = got[name]
        if r.rule != rule or r.requested != want:
            raise AssertionError(f"build_recipe: the recipe gives {name} {r.requested} ({r.rule}), planned {want}")
    problems = sim.problems()
    if problems:
        raise AssertionError(f"build_recipe: the recipe has a pattern problem: {problems[0]}")
