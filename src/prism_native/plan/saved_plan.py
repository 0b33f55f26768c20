"""A plan saved as JSON: what `plan --json` prints (plan_json), read back as the recipe it carries
(load_saved_plan).

The recipe (its ftype argument and --tensor-type patterns) is what gets carried out: the types are
decided again on the model being quantized, and must come out as the plan says (`written`), so a plan
made for another model, or edited into something else, is refused instead of silently differing.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import qtypes
from ..errors import PrismError, RecipeError
from ..llama.command import QuantizeCommand
from ..llama.patterns import MAX_RULES, TensorTypeRule
from ..read.bounded import MiB, load_json
from ..read.model import Model
from .planner import Plan
from .recipe import Recipe

MAX_BYTES = 32 * MiB      # a plan lists each tensor a few times: ~300 bytes per tensor
MAX_DEPTH = 16            # `plan --json` nests 5 levels deep


@dataclass(frozen=True)
class SavedPlan:
    path: Path
    recipe: Recipe
    command: QuantizeCommand | None     # the plan's argv (input model, --imatrix, --allow-requantize)


def plan_json(plan: Plan, command: QuantizeCommand) -> dict[str, Any]:
    """The saved form of a plan: its figures and recipe (Plan.to_json) and the llama-quantize command that
    carries it out, as shell text and as argv (read back as SavedPlan.command)."""
    d = plan.to_json()
    d["command"], d["argv"] = command.shell(), command.argv()
    return d


def _fail(path: Path, what: str) -> RecipeError:
    return RecipeError(f"{path}: {what}")


def _type_name(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"{where}: type must be a string, got {value!r}")
    try:
        return qtypes.get(value).name
    except PrismError:
        raise _fail(path, f"{where}: unknown type '{value}'") from None


def _type_map(path: Path, key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"{key} is not an object of tensor names and types")
    return {str(k): _type_name(path, f"{key}[{k}]", v) for k, v in value.items()}


def load_saved_plan(path: str | Path) -> SavedPlan:
    """Read `plan --json` output (one plan; a sweep's list only when it holds one)."""
    p = Path(path)
    d = load_json(p, "saved plan", MAX_BYTES, MAX_DEPTH, RecipeError)
    if isinstance(d, list):
        if len(d) != 1:
            raise _fail(p, f"holds {len(d)} plans (a --sweep); save one plan with plan --bpw B --json")
        d = d[0]
    r = d.get("recipe") if isinstance(d, dict) else None
    if not isinstance(r, dict) or "base_type" not in r or not isinstance(r.get("tensor_types"), list):
        raise _fail(p, "no recipe in it (expected the JSON that plan --json prints)")
    if len(r["tensor_types"]) > MAX_RULES:
        raise _fail(p, f"{len(r['tensor_types'])} tensor_types, more than the {MAX_RULES} a plan may have")
    base = _type_name(p, "base_type", r["base_type"])
    overrides = []
    for i, o in enumerate(r["tensor_types"]):
        if not isinstance(o, dict) or not isinstance(o.get("pattern"), str):
            raise _fail(p, f"tensor_types[{i}] is not a {{pattern, type}} object")
        try:
            rule = TensorTypeRule.make(o["pattern"], _type_name(p, f"tensor_types[{i}] ('{o['pattern']}')",
                                                                 o.get("type")))
        except PrismError as e:
            raise _fail(p, f"tensor_types[{i}]: {e}") from None
        overrides.append(rule)
    requires = r.get("requires_imatrix")
    requires = [] if requires is None else requires
    if not isinstance(requires, list) or not all(isinstance(x, str) for x in requires):
        raise _fail(p, "requires_imatrix is not a list of tensor names")
    recipe = Recipe(tuple(overrides), base, _type_map(p, "planned", r.get("planned")),
                    _type_map(p, "written", r.get("written")), tuple(requires))
    argv = d.get("argv")
    command = None
    if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
        try:
            command = QuantizeCommand.parse(argv)
        except PrismError as e:
            raise _fail(p, f"its argv is not a llama-quantize command: {e}") from None
    return SavedPlan(p, recipe, command)


def check_against(plan: SavedPlan, model: Model, got: Mapping[str, str]) -> None:
    """Refuse a plan that names tensors the model lacks, or whose types the model does not get (`got`:
    tensor name -> the type the job writes)."""
    named = list(dict.fromkeys([*plan.recipe.planned, *plan.recipe.written]))
    missing = [n for n in named if n not in model]
    if missing:
        raise _fail(plan.path, f"names {len(missing)} tensor(s) that {model.path.name} lacks "
                               f"({', '.join(missing[:3])}); it was made for another model")
    wrong = [n for n, w in plan.recipe.written.items() if got[n] != w]
    if wrong:
        n = wrong[0]
        raise _fail(plan.path, f"{len(wrong)} tensor(s) would not get the plan's type on {model.path.name} "
                               f"(e.g. {n}: {got[n]}, the plan says {plan.recipe.written[n]})")
