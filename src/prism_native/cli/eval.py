"""`eval`: quantize with llama.cpp (its ftypes and prism_native plans) and measure perplexity and KL
divergence against the full-precision model; writes results.csv/.json/.md and pareto.png."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PrismError, UsageError
from ..llama.command import QuantizeCommand
from ..research.evaluate import evaluate, parse_baselines, prism_planner
from ..research.report import markdown, write_all
from .options import (add_analysis_arguments, add_measure_arguments, add_model_argument, add_plan_arguments, bpw_list,
                      check_measure_arguments, imatrix_for, load_analysis, measure_setup, measure_tools, plan_types,
                      resolve_model)

DEFAULT_BASELINES = "Q3_K_M,Q4_K_M,IQ4_XS"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--bpw", default="", metavar="B,...",
                   help="prism_native plans at these bits per weight (over the quantized tensors), e.g. 3.0,3.5,4.0")
    p.add_argument("--sizes-of", default="", metavar="TYPE,...",
                   help="prism_native plans whose size budget is the real file size of these baselines, "
                        "e.g. Q3_K_M,Q4_K_M")
    p.add_argument("--baselines", default=DEFAULT_BASELINES, metavar="TYPE,...",
                   help="llama-quantize types to compare with; TYPE:pure for --pure (one type everywhere); "
                        "'frontier' = every built-in mix from IQ2_XXS to Q6_K (those llama-quantize refuses "
                        "without an imatrix only with --imatrix) and four --pure types; '' for none "
                        "(default %(default)s)")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=FILE",
                   help="also measure a llama-quantize command of your own (FILE holds it as shell text, e.g. a "
                        "model card's recipe) under NAME; NAME may be given to --sizes-of. Repeatable")
    add_measure_arguments(p)
    add_plan_arguments(p)
    add_analysis_arguments(p)


def run(args: argparse.Namespace) -> int:
    check_measure_arguments(args)
    bpws = bpw_list(args.bpw)
    baselines = parse_baselines(args.baselines)
    recipes = _recipes(args.recipe)
    names = {name for name, _ in recipes}
    listed = [s.strip() for s in args.sizes_of.split(",") if s.strip()]
    sizes_of = [s for s in listed if s in names] + parse_baselines(",".join(s for s in listed if s not in names))
    tools = measure_tools(args)
    if bpws or sizes_of:
        types = plan_types(args)
        scored = load_analysis(args)
        model, analysis = scored.model, scored.analysis
        planner = prism_planner(model, analysis, types=types, max_overrides=args.max_overrides,
                                distortion=args.distortion)
    else:
        model, analysis, planner = resolve_model(args), None, None
    setup = measure_setup(args, model, imatrix_for(args, analysis), tools)
    results = evaluate(setup, baselines, bpws, sizes_of, planner, recipes)
    written = write_all(results, setup.out_dir)
    print(markdown(results))
    print("written: " + ", ".join(str(p) for p in written))
    return 0


def _recipes(items: list[str]) -> list[tuple[str, QuantizeCommand]]:
    """--recipe NAME=FILE -> (NAME, the command FILE holds); '#' comments and line continuations allowed."""
    out: list[tuple[str, QuantizeCommand]] = []
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name.strip() or not file:
            raise UsageError(f"--recipe wants NAME=FILE (got '{item}')")
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--recipe {name}: cannot read {file}: {getattr(e, 'strerror', None) or e}") from None
        try:
            out.append((name.strip(), QuantizeCommand.parse_shell(text, file, input_optional=True)))
        except PrismError as e:
            raise UsageError(f"--recipe {name}: {e}") from None
    return out
