"""`eval`: quantize with llama.cpp (its ftypes and prism_native plans) and measure perplexity and KL
divergence against the full-precision model; writes results.csv/.json/.md and pareto.png."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

from ..measure.results import Analysis
from .analyze import add_analysis_arguments, add_model_argument, resolve_model
from .plan import add_plan_arguments, load_analysis
from ..errors import PrismError
from ..research.report import markdown, write_all
from ..research.evaluate import IMATRIX, MODEL_IN, MODEL_OUT, SERIES_PRISM, Method, Setup, evaluate, parse_baselines
from ..read.model import Model
from ..llama.quantize_tool import find_binary
from ..llama.tools import find_tool
from ..llama.perplexity import Perplexity
from ..plan.planner import Budget, imatrix_extra_kv, make_plan, needs_requantize

DEFAULT_BASELINES = "Q3_K_M,Q4_K_M,IQ4_XS"


def add_measure_arguments(p: argparse.ArgumentParser) -> None:
    """What every llama-perplexity measurement needs (eval and ablate share them, and the cache)."""
    p.add_argument("--text", required=True, metavar="FILE", help="evaluation text (plain UTF-8)")
    p.add_argument("--llama-cpp", metavar="DIR",
                   help="llama.cpp build or install holding llama-quantize and llama-perplexity "
                        "(DIR, DIR/bin or DIR/build/bin; default: PATH)")
    p.add_argument("-o", "--output", default="eval-results", metavar="DIR",
                   help="results and cache directory (default %(default)s)")
    p.add_argument("--ctx", type=int, default=512, help="llama-perplexity context (default %(default)s)")
    p.add_argument("--chunks", type=int, default=32,
                   help="chunks of --ctx tokens to evaluate (default %(default)s; fewer if the text is short)")
    p.add_argument("--keep", action="store_true",
                   help="keep the quantized files and the full-precision logits in DIR/cache")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--bpw", default="", metavar="B,...",
                   help="prism_native plans at these bits per weight (over the quantized tensors), e.g. 3.0,3.5,4.0")
    p.add_argument("--sizes-of", default="", metavar="TYPE,...",
                   help="prism_native plans whose size budget is the real file size of these baselines, "
                        "e.g. Q3_K_M,Q4_K_M")
    p.add_argument("--baselines", default=DEFAULT_BASELINES, metavar="TYPE,...",
                   help="llama-quantize types to compare with; TYPE:pure for --pure (one type everywhere); "
                        "'frontier' = every K-quant mix, Q4_0, IQ4_XS and four --pure types; '' for none "
                        "(default %(default)s)")
    add_measure_arguments(p)
    add_plan_arguments(p)
    add_analysis_arguments(p)


def _floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PrismError(f"--bpw wants numbers separated by commas, e.g. 3.0,3.5,4.0 (got '{text}')") from None
    bad = [v for v in vals if not 0 < v < 64]
    if bad:
        raise PrismError(f"--bpw {bad[0]:g} is not a bits-per-weight figure")
    return vals


def tools(args: argparse.Namespace) -> tuple[Path, Path]:
    """llama-quantize ($PRISM_LLAMA_QUANTIZE or PATH unless --llama-cpp) and llama-perplexity."""
    quantize = (find_binary() if args.llama_cpp is None else None) or find_tool("llama-quantize", args.llama_cpp)
    return quantize, find_tool("llama-perplexity", args.llama_cpp)


def imatrix_for(args: argparse.Namespace, analysis: Analysis | None) -> str | None:
    """One imatrix for baselines and plans alike, so that they are compared on equal terms."""
    planned = analysis.imatrix["path"] if analysis is not None and analysis.imatrix else None
    if planned and args.imatrix and Path(planned).resolve() != Path(args.imatrix).resolve():
        raise PrismError(f"the analysis used the imatrix {planned}, not {args.imatrix}")
    if analysis is not None and args.imatrix and not planned:
        raise PrismError(f"{args.results}: analysed without an imatrix; analyze again with --imatrix {args.imatrix}")
    return planned or args.imatrix


def _planner(model: Model, analysis: Analysis, args: argparse.Namespace) -> Callable[[Budget, str], Method]:
    types = tuple(t.strip().upper() for t in args.types.split(",") if t.strip())
    if args.max_overrides < 0:
        raise PrismError("--max-overrides must be >= 0")
    im = analysis.imatrix
    extra = imatrix_extra_kv(analysis)
    requant = needs_requantize(model, analysis)

    def plan(budget: Budget, label: str) -> Method:
        p = make_plan(model, analysis, budget, types=types, max_overrides=args.max_overrides, extra_kv=extra,
                      distortion=args.distortion)
        argv = p.recipe.argv(MODEL_IN, MODEL_OUT, imatrix=IMATRIX if im else None, allow_requantize=requant)
        return Method(f"prism_native {label}", SERIES_PRISM, tuple(argv[1:]), label, p.size.file_bytes,
                      int(budget.value) if budget.kind == "size" else None)
    return plan


def check_measure_arguments(args: argparse.Namespace) -> None:
    if not Path(args.text).is_file():
        raise PrismError(f"--text {args.text}: no such file")
    if args.ctx < 16 or args.chunks < 1:
        raise PrismError("--ctx must be >= 16 and --chunks >= 1")


def make_setup(args: argparse.Namespace, model: Model, quantize: Path, perplexity: Path,
               imatrix: str | None) -> Setup:
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise PrismError(f"-o {out_dir}: not a directory")
    threads = args.threads or os.cpu_count() or 1
    return Setup(model, quantize, Perplexity(perplexity, Path(args.text), args.ctx, args.chunks, threads), out_dir,
                 imatrix, args.keep, args.quiet)


def run(args: argparse.Namespace) -> int:
    check_measure_arguments(args)
    bpws = _floats(args.bpw)
    baselines = parse_baselines(args.baselines)
    sizes_of = parse_baselines(args.sizes_of)
    quantize, perplexity = tools(args)
    if bpws or sizes_of:
        model, analysis = load_analysis(args)
        planner = _planner(model, analysis, args)
    else:
        model, analysis, planner = resolve_model(args), None, None
    setup = make_setup(args, model, quantize, perplexity, imatrix_for(args, analysis))
    results = evaluate(setup, baselines, bpws, sizes_of, planner)
    written = write_all(results, setup.out_dir)
    print(markdown(results))
    print("written: " + ", ".join(str(p) for p in written))
    return 0
