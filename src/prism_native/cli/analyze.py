"""`analyze`: measure every quantizable tensor and write the results file that `plan` reuses."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ..files import check_destination
from ..measure.results import Analysis
from ..plan.score import class_table
from .options import add_analysis_arguments, add_model_argument, default_output, resolve_model, run_analysis


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    add_analysis_arguments(p)
    p.add_argument("-o", "--output", metavar="FILE", help="results file (default: MODEL.prism.json in "
                   "the working directory); an interrupted run resumes from it")
    p.add_argument("--no-resume", action="store_true", help="measure everything again")


def print_class_table(analysis: Analysis, file: TextIO | None = None) -> None:
    file = file or sys.stdout
    hdr = f"{'class':<22} {'n':>4} {'share':>6} {'alpha':>6} {'dom':>6} {'imbal':>6} {'osqe4':>8} {'frag':>5} {'bound':>6} {'sens':>6}"
    print(hdr, file=file)
    print("-" * len(hdr), file=file)
    for r in class_table(analysis):
        print(f"{r['class']:<22} {r['tensors']:>4} {r['share']*100:>5.1f}% {r['alpha']:>6.2f} {r['dominance']:>6.3f} "
              f"{r['imbalance']:>6.3f} {r['osqe4']:>8.2e} {r['fragility']:>5.2f} {r['boundary']:>6.3f} "
              f"{r['sensitivity']:>6.2f}", file=file)


def run(args: argparse.Namespace) -> int:
    model = resolve_model(args)
    out = Path(args.output) if args.output is not None else default_output(model)
    check_destination(args.output if args.output is not None else out,     # -o '' is refused as empty
                      [*model.parts, *([args.imatrix] if args.imatrix else [])])
    analysis = run_analysis(model, args, out)
    print(f"{model.name}: {len(analysis.tensors)} tensors measured "
          f"({'exact' if args.exact else 'default'} mode{', imatrix' if args.imatrix else ''}); results: {out}")
    print_class_table(analysis)
    return 0
