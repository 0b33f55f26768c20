"""`fit-weights`: fit the composite's weights to ablation files and show how well they predict damage
on models they were not fitted on (leave one model out; research.fit.fit_report)."""
from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from ..files import write_file
from ..plan.score import Weights
from ..research.fit import Fit, fit_report


# candidates of --lambda: the shipped weights' fit chose 0.001 among them (docs/metrics.md)
LAMBDA_GRID = "0.1,0.03,0.01,0.001"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ablations", nargs="+", metavar="ABLATION.json",
                   help="files from `ablate`; files of the same model (by class, by layer) are merged")
    p.add_argument("--lambda", dest="lam", default=LAMBDA_GRID, metavar="L[,L...]",
                   help="ridge penalty on the weights, or candidates to choose from by leave-one-model-out "
                        "cross-validation (the one whose fits predict the left-out model best; held-out "
                        "fits choose theirs among the other models only); default %(default)s")
    p.add_argument("--beta", default="fit", help="size exponent of the distortion: 'fit' fits it in [0, 1] "
                   "(default, as for the shipped weights), or a number: 1 = params, 0 = relative")
    p.add_argument("--fix", default="", metavar="K=V,...",
                   help="hold these weights at a value instead of fitting them, e.g. position=0")
    p.add_argument("--min-snr", type=float, default=2.0,
                   help="drop records whose damage is within this many standard errors of zero (default %(default)s)")
    p.add_argument("--check", nargs="+", default=[], metavar="ABLATION.json",
                   help="also score the fitted weights on these files, without fitting to them "
                        "(e.g. the by-layer ablations of the same models)")
    p.add_argument("--json-out", metavar="FILE", help="write the fit and every score as JSON")


def _lambdas(text: str) -> list[float]:
    try:
        grid = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--lambda wants numbers separated by commas (got '{text}')") from None
    if not grid or any(not v >= 0 for v in grid):
        raise UsageError("--lambda values must be numbers >= 0")
    return grid


def _beta(text: str) -> float | None:
    if text == "fit":
        return None
    try:
        b = float(text)
    except ValueError:
        raise UsageError(f"--beta wants a number in [0, 1] or 'fit' (got '{text}')") from None
    if not 0.0 <= b <= 1.0:
        raise UsageError("--beta must lie in [0, 1]")
    return b


def _fixed(text: str) -> dict[str, float]:
    parsed = Weights.parse(text).to_json()            # validates names and numbers
    return {k: parsed[k] for k in (i.partition("=")[0].strip() for i in text.split(",") if i.strip())}


def _weights_line(label: str, f: Fit) -> str:
    return f"{label}: beta {f.beta:g}, weights " + ",".join(f"{k}={v:g}" for k, v in f.weights.to_json().items())


def run(args: argparse.Namespace) -> int:
    beta = _beta(args.beta)
    fixed = _fixed(args.fix)
    grid = _lambdas(args.lam)
    rep = fit_report(args.ablations, grid, beta, fixed, args.min_snr, args.check)
    for d in rep.data:
        print(f"{d.name}: {len(d.damage)} usable records, {len(d.dropped)} left out")
        for why in d.dropped:
            print(f"  left out: {why}")
    if rep.cv:
        print("\nlambda (leave one model out, mean rms log): " +
              ", ".join(f"{k:g}: {v:.3f}" for k, v in rep.cv.items()) + f" -> {rep.lam:g}")
    print(f"\n{'scheme':<44} {'model':<24} {'spearman':>8} {'pairs':>6} {'rms log':>8}")
    for r in rep.rows:
        s = r.score
        print(f"{r.scheme:<44} {r.model[:24]:<24} {s.spearman:>8.3f} {s.pairs:>6.3f} {s.rms_log:>8.3f}")
    print("\n" + _weights_line("fitted on all models", rep.overall))
    for name, f in rep.held.items():
        print(_weights_line(f"fitted without {name}", f) + f" (lambda {f.lam:g})")
    if args.json_out:
        write_file(args.json_out, json.dumps(
            {**rep.to_json(), "files": args.ablations, "lambda": rep.lam,
             "lambda_cv": {f"{k:g}": v for k, v in rep.cv.items()}, "min_snr": args.min_snr,
             "fixed": fixed, "left_out": {d.name: d.dropped for d in rep.data}}, indent=1).encode(),
                   inputs=[*args.ablations, *args.check])
    return 0
