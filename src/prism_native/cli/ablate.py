"""`ablate`: measure the true marginal damage of each class (or layer) with llama-perplexity.

One file per class (or layer) at each low type, everything else at the high type; KLD against the
input model minus the all-high file's KLD is that unit's damage. The output feeds `fit-weights`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..research import ablate
from .options import (add_analysis_arguments, add_measure_arguments, add_model_argument, check_measure_arguments,
                      imatrix_for, load_analysis, measure_setup, measure_tools, type_list)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--from", dest="results", metavar="RESULTS",
                   help="analyze results file (default: MODEL.prism.json if it matches, else analyze)")
    p.add_argument("--by", choices=ablate.BY, default="class", help="one unit per class or per layer "
                   "(default %(default)s)")
    p.add_argument("--only", default="", metavar="NAME,...", help="just these classes or layer numbers")
    p.add_argument("--low", default="Q3_K,Q4_K", metavar="TYPE,...",
                   help="types a unit is lowered to, one file each (default %(default)s; fallbacks apply)")
    p.add_argument("--high", default="Q8_0", metavar="TYPE", help="type of everything else (default %(default)s)")
    p.add_argument("--json-out", metavar="FILE", help="ablation file (default DIR/ablation-BY.json)")
    add_measure_arguments(p)
    add_analysis_arguments(p)


def run(args: argparse.Namespace) -> int:
    check_measure_arguments(args)
    low = list(type_list(args.low, "--low", native=False))     # llama-quantize writes these files
    high = type_list(args.high, "--high", native=False)[0]
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    tools = measure_tools(args)
    scored = load_analysis(args)
    model, analysis = scored.model, scored.analysis
    unit_list = ablate.units(analysis, args.by, only)
    setup = measure_setup(args, model, imatrix_for(args, analysis), tools)
    out = Path(args.json_out) if args.json_out else Path(args.output) / f"ablation-{args.by}.json"
    data = ablate.run(setup, analysis, unit_list, low, high, args.by)
    ablate.save(data, out)
    print(f"{'unit':<24} {'low':<7} {'KLD':>9} {'damage':>9} {'MiB':>8}")
    for r in data.records:
        print(f"{r.unit:<24} {r.low:<7} {r.kld:>9.5f} {r.damage:>9.5f} {r.file_bytes / 2**20:>8.2f}")
    print(f"all {data.high}: KLD {data.base_kld:.5f}; written: {out}")
    return 0
