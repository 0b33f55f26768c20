"""`plan`: the best type per class under a budget, as a ready llama-quantize command."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import BudgetError
from ..files import check_destination, write_file
from ..llama.command import QuantizeCommand
from ..measure.results import Analysis
from ..plan.budget import Budget, fmt_bytes
from ..plan.dry_run import dry_run, format_text
from ..plan.planner import Plan, imatrix_extra_kv, make_plan, needs_requantize
from ..plan.plot import allocation_grid, check_plot_path, draw_allocation
from ..read.model import Model
from .options import (
    AUTO_IMATRIX,
    add_analysis_arguments,
    add_budget_arguments,
    add_model_argument,
    add_plan_arguments,
    budgets,
    default_output,
    load_analysis,
    plan_types,
    print_notes,
    resolve_model,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    add_budget_arguments(p)
    add_plan_arguments(p)
    p.add_argument("--out", metavar="OUT.gguf", help="output path written into the command")
    p.add_argument("--tensor-type-file", metavar="FILE",
                   help="also write the patterns to FILE and show the --tensor-type-file command")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw the allocation (layers x classes, coloured by bits per "
                   "weight) to FILE.png or FILE.svg; needs matplotlib (the `plot` extra)")
    p.add_argument("--dry-run", action="store_true",
                   help="from the header alone, in seconds: sizes, classes, the feasible output range, what "
                        "needs an imatrix (no tensor is read; the budget is optional)")
    add_analysis_arguments(p)


def _out_path(model: Model, args: argparse.Namespace, budget: Budget) -> str:
    """--out, or NAME-prism-<budget>.gguf in the working directory (never beside a read-only input)."""
    if args.out and not args.sweep:
        return args.out
    stem = (Path(args.out).name if args.out else model.path.name).removesuffix(".gguf")
    return f"{stem}-prism-{_tag(budget)}.gguf"


def _tag(budget: Budget) -> str:
    return f"{budget.value:g}bpw" if budget.kind == "bpw" else f"{budget.value / 2**30:.2f}GiB"


def _imatrix_file(model: Model, analysis: Analysis) -> str | None:
    """The imatrix the command names; for --imatrix auto, the file `prism-native imatrix` would write."""
    path = analysis.imatrix["path"] if analysis.imatrix else None
    return f"{model.path.name.removesuffix('.gguf')}.imatrix.gguf" if path == AUTO_IMATRIX else path


def _command(plan: Plan, model: Model, analysis: Analysis, out: str, type_file: str | None = None) -> QuantizeCommand:
    return plan.recipe.command(model.path, out, imatrix=_imatrix_file(model, analysis),
                               allow_requantize=needs_requantize(model, analysis), tensor_type_file=type_file)


def _print_plan(plan: Plan, model: Model, analysis: Analysis, args: argparse.Namespace, out: str,
                inputs: list[str | Path]) -> None:
    s = plan.size
    print(f"# {model.name}: {plan.budget.describe()}")
    hdr = f"{'class':<22} {'type':<7} {'written':<18} {'share':>6} {'bpw':>6} {'rel.err':>9} {'sens':>6} {'ovr':>4}"
    print(hdr)
    print("-" * len(hdr))
    for c in plan.classes:
        written = ",".join(f"{k}x{v}" if len(c["written"]) > 1 else k for k, v in c["written"].items())
        print(f"{c['class']:<22} {c['type']:<7} {written:<18} {c['share'] * 100:>5.1f}% {c['bpw']:>6.3f} "
              f"{c['rel_error']:>9.3e} {c['sensitivity']:>6.2f} {c['overrides']:>4}")
    for name, t in plan.allocation.overrides.items():
        print(f"  override {name} = {t}")
    print(f"predicted output: {fmt_bytes(s.file_bytes)}; tensor data {s.tensor_bytes:,} bytes; "
          f"{s.bpw_quantized:.4f} bpw over quantized tensors, {s.bpw:.4f} bpw as llama-quantize reports, "
          f"{s.bpw_file:.4f} bpw over the file")
    print()
    if analysis.imatrix and analysis.imatrix["path"] == AUTO_IMATRIX:
        print(f"# the data-free importance matrix first: prism-native imatrix {model.path} "
              f"-o {_imatrix_file(model, analysis)}")
    print(_command(plan, model, analysis, out).shell())
    if args.tensor_type_file is not None:
        write_file(args.tensor_type_file, plan.recipe.tensor_type_file().encode(), inputs)
        print("\n# or, with the patterns in a file:")
        print(_command(plan, model, analysis, out, args.tensor_type_file).shell())


def _plot_paths(path: Path, plans: list[Plan]) -> list[Path]:
    """FILE for one plan; FILE-<budget> for each of a sweep's."""
    if len(plans) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{_tag(p.budget)}{path.suffix}") for p in plans]


def _plot(path: Path, model: Model, plans: list[Plan], inputs: list) -> None:
    for p, out in zip(plans, _plot_paths(path, plans)):
        check_destination(out, inputs)
        draw_allocation(allocation_grid(p, model.name), out)
        print(f"allocation drawn in {out}", file=sys.stderr)


def _dry_run(args: argparse.Namespace) -> int:
    model = resolve_model(args)
    given = args.bpw is not None or args.size is not None or args.sweep
    budget = budgets(args)[0] if given else None
    d = dry_run(model, plan_types(args), budget, Path(args.out) if args.out else None,
                imatrix=bool(args.imatrix))
    if args.json:
        json.dump(d.to_json(), sys.stdout, indent=1)
        print()
    else:
        print(format_text(d))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    bs = budgets(args)
    types = plan_types(args)
    plot = check_plot_path(args.plot) if args.plot else None
    model, analysis = load_analysis(args)
    extra = imatrix_extra_kv(analysis)
    plans: list[Plan] = []
    skipped: list[BudgetError] = []
    for b in bs:
        try:
            plans.append(make_plan(model, analysis, b, types=types, max_overrides=args.max_overrides,
                                   extra_kv=extra, distortion=args.distortion))
        except BudgetError as e:
            if len(bs) == 1:
                raise
            skipped.append(e)   # a sweep draws the feasible part of its curve
    if not plans:
        raise skipped[0]
    for e in skipped:
        print(f"# skipped: {e}", file=sys.stderr)
    for p in plans:
        print_notes(p)
    inputs = [*model.parts, args.results or default_output(model),
              *([analysis.imatrix["path"]] if analysis.imatrix and analysis.imatrix["path"] != AUTO_IMATRIX else [])]
    if args.tensor_type_file is not None:     # refused before anything is printed
        check_destination(args.tensor_type_file, inputs)
    if plot is not None:
        _plot(plot, model, plans, inputs)
    if args.json:
        out = []
        for p in plans:
            d = p.to_json()
            cmd = _command(p, model, analysis, _out_path(model, args, p.budget))
            d["command"], d["argv"] = cmd.shell(), cmd.argv()
            out.append(d)
        json.dump(out[0] if len(out) == 1 else out, sys.stdout, indent=1)
        print()
        return 0
    for i, p in enumerate(plans):
        if i:
            print()
        _print_plan(p, model, analysis, args, _out_path(model, args, p.budget), inputs)
    return 0
