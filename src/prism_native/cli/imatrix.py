"""`imatrix`: a data-free importance matrix, estimated from the weights alone, in llama-imatrix's GGUF format.

    prism-native imatrix MODEL.gguf -o OUT.imatrix.gguf
    llama-quantize --imatrix OUT.imatrix.gguf MODEL.gguf OUT.gguf IQ3_XXS

The method and its assumptions: measure/importance.py and docs/metrics.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..measure.importance import EstimateOptions, estimate_importance
from .options import add_model_argument, resolve_model

_MAX_WARNINGS = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("-o", "--output", metavar="OUT.imatrix.gguf",
                   help="output file (default: MODEL.imatrix.gguf in the working directory)")
    p.add_argument("--output-tensor", action="store_true",
                   help="also estimate output.weight (llama-imatrix records it only with --process-output)")
    p.add_argument("--means", action="store_true", help="propagate the channels' means too (default: second "
                   "moments of zero-mean channels)")
    p.add_argument("--attn-mix", type=float, default=EstimateOptions.attn_mix, metavar="R",
                   help="variance of the value vectors kept by attention's average (default %(default)s)")
    p.add_argument("--zipf", type=float, default=EstimateOptions.zipf_exponent, metavar="S",
                   help="token prior p(id) ~ 1/(id+10)^S over the embedding's rows (default %(default)s)")
    p.add_argument("--temper", type=float, default=EstimateOptions.temper, metavar="B",
                   help="write importance^B: shrinks the estimate toward uniform (1: as estimated, 0: uniform; "
                        "default %(default)s, see docs/metrics.md)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary")


def options(args: argparse.Namespace) -> EstimateOptions:
    if not 0.0 <= args.attn_mix <= 1.0:
        raise UsageError("--attn-mix must be in [0, 1]")
    if not 0.0 <= args.zipf <= 4.0:
        raise UsageError("--zipf must be in [0, 4]")
    if not 0.0 <= args.temper <= 1.0:
        raise UsageError("--temper must be in [0, 1]")
    return EstimateOptions(zipf_exponent=args.zipf, attn_mix=args.attn_mix, means=args.means,
                           output=args.output_tensor, temper=args.temper)


def print_warnings(warnings: list[str]) -> None:
    for w in warnings[:_MAX_WARNINGS]:
        print(f"warning: {w}", file=sys.stderr)
    if len(warnings) > _MAX_WARNINGS:
        print(f"warning: ... and {len(warnings) - _MAX_WARNINGS} more", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    model = resolve_model(args)
    out = Path(args.output) if args.output else Path(f"{model.path.name.removesuffix('.gguf')}.imatrix.gguf")
    est = estimate_importance(model, opts)
    print_warnings(est.warnings)
    path = est.save(out, model.parts)
    if not args.quiet:
        n_uniform = len(est.uniform)
        print(f"{model.name}: {len(est.entries)} importance entries estimated from the weights in "
              f"{est.seconds:.1f} s{f' ({n_uniform} uniform)' if n_uniform else ''}; wrote {path}")
    return 0
