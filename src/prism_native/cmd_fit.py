"""`fit-weights`: fit the composite's weights to ablation files and show how well they predict damage
on models they were not fitted on (leave one model out)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import ablate
from .errors import PrismError
from .fit import Fit, ModelData, Score, fit, model_data, score
from .score import Weights

# the unfitted weights of the first version (AlphaPruning's direction for alpha, llama.cpp's
# use_more_bits for position), kept as the baseline every fit is scored against
LITERATURE_PRIORS = Weights(alpha=-0.30, dominance=0.15, imbalance=0.15, fragility=0.25, boundary=0.10,
                            position=0.25)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ablations", nargs="+", metavar="ABLATION.json",
                   help="files from `ablate`; files of the same model (by class, by layer) are merged")
    p.add_argument("--lambda", dest="lam", type=float, default=0.3,
                   help="ridge penalty on the weights (default %(default)s)")
    p.add_argument("--beta", default="1", help="size exponent of the distortion: 1 = params (default, as "
                   "plan's default), 0 = relative, or 'fit' to fit it in [0, 1]")
    p.add_argument("--fix", default="", metavar="K=V,...",
                   help="hold these weights at a value instead of fitting them, e.g. position=0")
    p.add_argument("--min-snr", type=float, default=2.0,
                   help="drop records whose damage is within this many standard errors of zero (default %(default)s)")
    p.add_argument("--check", nargs="+", default=[], metavar="ABLATION.json",
                   help="also score the fitted weights on these files, without fitting to them "
                        "(e.g. the by-layer ablations of the same models)")
    p.add_argument("--json-out", metavar="FILE", help="write the fit and every score as JSON")


def _beta(text: str) -> float | None:
    if text == "fit":
        return None
    try:
        b = float(text)
    except ValueError:
        raise PrismError(f"--beta wants a number in [0, 1] or 'fit' (got '{text}')") from None
    if not 0.0 <= b <= 1.0:
        raise PrismError("--beta must lie in [0, 1]")
    return b


def _models(paths: list[str], min_snr: float) -> list[ModelData]:
    by_model: dict[str, list[dict[str, Any]]] = {}
    for p in paths:
        ab = ablate.load(p)
        by_model.setdefault(json.dumps(ab["model"], sort_keys=True), []).append(ab)
    return [model_data(ablate.merge(parts), min_snr) for parts in by_model.values()]


def run(args: argparse.Namespace) -> int:
    beta = _beta(args.beta)
    parsed = Weights.parse(args.fix).as_dict()            # validates names and numbers
    fixed = {k: parsed[k] for k in (i.partition("=")[0].strip() for i in args.fix.split(",") if i.strip())}
    data = _models(args.ablations, args.min_snr)
    for d in data:
        print(f"{d.name}: {len(d.damage)} usable records, {len(d.dropped)} left out")
        for why in d.dropped:
            print(f"  left out: {why}")
    schemes: dict[str, tuple[Weights, float] | None] = {
        "literature priors, params": (LITERATURE_PRIORS, 1.0),
        "current defaults, params": (Weights(), 1.0),
        "errors only, params (w = 0, beta = 1)": (Weights(**{k: 0.0 for k in Weights().as_dict()}), 1.0),
        "errors only, relative (w = 0, beta = 0)": (Weights(**{k: 0.0 for k in Weights().as_dict()}), 0.0),
    }
    overall = fit(data, args.lam, beta, fixed)
    schemes["fitted on all models (in-sample)"] = (overall.weights, overall.beta)
    rows: list[dict[str, Any]] = []
    held: dict[str, Fit] = {}
    for d in data:
        others = [o for o in data if o is not d]
        if others and sum(len(o.damage) for o in others) >= 2:
            held[d.name] = fit(others, args.lam, beta, fixed)
    print(f"\n{'scheme':<44} {'model':<24} {'spearman':>8} {'pairs':>6} {'rms log':>8}")
    for name, wb in list(schemes.items()) + [("fitted on the other models (held out)", None)]:
        for d in data:
            if wb is None and d.name not in held:
                continue
            w, b = wb if wb is not None else (held[d.name].weights, held[d.name].beta)
            s: Score = score(d, w, b)
            rows.append({"scheme": name, "model": d.name, **s.as_dict(), "weights": w.as_dict(), "beta": b})
            print(f"{name:<44} {d.name[:24]:<24} {s.spearman:>8.3f} {s.pairs:>6.3f} {s.rms_log:>8.3f}")
    checks = _models(args.check, args.min_snr) if args.check else []
    for d in checks:
        sc = score(d, overall.weights, overall.beta)
        base = score(d, Weights(**{k: 0.0 for k in Weights().as_dict()}), overall.beta)
        rows.append({"scheme": "check: fitted on all models", "model": d.name, **sc.as_dict()})
        rows.append({"scheme": "check: errors only", "model": d.name, **base.as_dict()})
        print(f"{'check (not fitted): ' + d.name[:24]:<44} {len(d.damage):>3} records: fitted "
              f"{sc.spearman:.3f} / {sc.pairs:.3f}, errors only {base.spearman:.3f} / {base.pairs:.3f}")
    print(f"\nfitted on all models: beta {overall.beta:g}, weights "
          + ",".join(f"{k}={v:g}" for k, v in overall.weights.as_dict().items()))
    for name, f in held.items():
        print(f"fitted without {name}: beta {f.beta:g}, weights "
              + ",".join(f"{k}={v:g}" for k, v in f.weights.as_dict().items()))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"fit": overall.as_dict(), "held_out_fits": {k: v.as_dict() for k, v in held.items()},
             "scores": rows, "files": args.ablations, "lambda": args.lam, "min_snr": args.min_snr,
             "left_out": {d.name: d.dropped for d in data}}, indent=1))
    return 0
