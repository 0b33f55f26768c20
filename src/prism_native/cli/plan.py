"""`plan`: the best type per class under a budget, as a ready llama-quantize command."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..measure.analyze import Analysis, finish, model_identity
from .analyze import (add_analysis_arguments, add_model_argument, default_output, resolve_model,
                          run_analysis)
from ..errors import PrismError
from ..read.model import Model, open_model
from ..plan.planner import (DEFAULT_DISTORTION, DEFAULT_TYPES, Budget, Plan, fmt_bytes, imatrix_extra_kv, make_plan,
                   needs_requantize, parse_size)
from ..plan.score import Weights


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by plan and eval (which plans too)."""
    p.add_argument("--from", dest="results", metavar="RESULTS",
                   help="reuse an analyze results file (default: MODEL.prism.json if it matches, else analyze)")
    p.add_argument("--types", default=",".join(DEFAULT_TYPES),
                   help="candidate types (default %(default)s; Q8_0 and the 32-block types allowed)")
    p.add_argument("--max-overrides", type=int, default=64,
                   help="single tensors that may get a type other than their class's (default %(default)s)")
    p.add_argument("--distortion", default=DEFAULT_DISTORTION, metavar="MODEL",
                   help="allocator's distortion per tensor, s x rel.error x params^beta: 'params' (beta 1), "
                        "'relative' (beta 0) or beta itself (default %(default)s)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    b = p.add_mutually_exclusive_group()
    b.add_argument("--bpw", type=float, help="bits per weight over the quantized tensors")
    b.add_argument("--size", help="whole output file size, e.g. 4.2GiB or 3.9GB")
    b.add_argument("--sweep", metavar="A:B:STEP", help="one recipe per bpw from A to B, e.g. 3.0:5.0:0.25")
    add_plan_arguments(p)
    p.add_argument("--out", metavar="OUT.gguf", help="output path written into the command")
    p.add_argument("--tensor-type-file", metavar="FILE",
                   help="also write the patterns to FILE and show the --tensor-type-file command")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    add_analysis_arguments(p)


def load_analysis(args: argparse.Namespace) -> tuple[Model, Analysis]:
    if args.results:
        analysis = Analysis.load(args.results)
        if args.model or args.example:
            model = resolve_model(args)
        else:
            path = Path(analysis.model["path"])
            if not path.exists():
                raise PrismError(f"{args.results}: its model {path} is gone; pass MODEL")
            model = open_model(path)
        if model_identity(model) != analysis.model:
            raise PrismError(f"{args.results} was measured on another file than {model.path}")
        if not analysis.complete:
            raise PrismError(f"{args.results} is a partial analysis; run analyze again to finish it")
        finish(analysis, Weights.parse(args.weights))    # the weights may be newer than the file
        return model, analysis
    model = resolve_model(args)
    out = default_output(model)
    analysis = run_analysis(model, args, out)
    print(f"# analysis saved to {out}; later plans of this model reuse it", file=sys.stderr)
    return model, analysis


def budgets_from_args(args: argparse.Namespace) -> list[Budget]:
    """--bpw, --size or --sweep (absent on commands without it) as budgets."""
    if args.bpw is not None:
        if not 0 < args.bpw < 64:
            raise PrismError(f"--bpw {args.bpw} is not a bits-per-weight figure")
        return [Budget("bpw", args.bpw)]
    if args.size is not None:
        return [Budget("size", parse_size(args.size))]
    if getattr(args, "sweep", None):
        try:
            a, b, step = (float(v) for v in args.sweep.split(":"))
        except ValueError:
            raise PrismError(f"--sweep wants A:B:STEP, e.g. 3.0:5.0:0.25 (got '{args.sweep}')") from None
        if step <= 0 or b < a:
            raise PrismError("--sweep needs A <= B and STEP > 0")
        n = int(round((b - a) / step)) + 1
        return [Budget("bpw", round(a + i * step, 6)) for i in range(n)]
    raise PrismError("give a budget: --bpw B, --size SIZE or --sweep A:B:STEP")


def _out_path(model: Model, args: argparse.Namespace, budget: Budget) -> str:
    """--out, or NAME-prism-<budget>.gguf in the working directory (never beside a read-only input)."""
    if args.out and not args.sweep:
        return args.out
    stem = (Path(args.out).name if args.out else model.path.name).removesuffix(".gguf")
    tag = f"{budget.value:g}bpw" if budget.kind == "bpw" else f"{budget.value / 2**30:.2f}GiB"
    return f"{stem}-prism-{tag}.gguf"


def _command(plan: Plan, model: Model, analysis: Analysis, args: argparse.Namespace, out: str,
             type_file: str | None = None) -> str:
    requant = needs_requantize(model, analysis)
    imatrix = analysis.imatrix["path"] if analysis.imatrix else None
    return plan.recipe.shell(str(model.path), out, imatrix=imatrix, allow_requantize=requant,
                             tensor_type_file=type_file)


def _print_plan(plan: Plan, model: Model, analysis: Analysis, args: argparse.Namespace, out: str) -> None:
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
    print(_command(plan, model, analysis, args, out))
    if args.tensor_type_file:
        Path(args.tensor_type_file).write_text(plan.recipe.tensor_type_file())
        print("\n# or, with the patterns in a file:")
        print(_command(plan, model, analysis, args, out, args.tensor_type_file))


def run(args: argparse.Namespace) -> int:
    budgets = budgets_from_args(args)
    types = tuple(t.strip().upper() for t in args.types.split(",") if t.strip())
    if args.max_overrides < 0:
        raise PrismError("--max-overrides must be >= 0")
    model, analysis = load_analysis(args)
    extra = imatrix_extra_kv(analysis)
    plans = [make_plan(model, analysis, b, types=types, max_overrides=args.max_overrides, extra_kv=extra,
                      distortion=args.distortion)
             for b in budgets]
    if args.json:
        out = []
        for p in plans:
            d = p.to_json()
            o = _out_path(model, args, p.budget)
            d["command"] = _command(p, model, analysis, args, o)
            d["argv"] = p.recipe.argv(str(model.path), o, imatrix=analysis.imatrix["path"] if analysis.imatrix else None,
                                      allow_requantize=needs_requantize(model, analysis))
            out.append(d)
        json.dump(out[0] if len(out) == 1 else out, sys.stdout, indent=1)
        print()
        return 0
    for i, p in enumerate(plans):
        if i:
            print()
        _print_plan(p, model, analysis, args, _out_path(model, args, p.budget))
    return 0
