"""`fit-growth`: fit the error cost's growth kappa, g(e) = e exp(kappa e^2), to ablations at low types, the
composite's weights and beta held; every model scored with kappa fitted on the others (research.fit)."""
from __future__ import annotations

import argparse
import json

import numpy as np

from ..files import write_file
from ..plan.score import FITTED_BETA, Weights
from ..research.fit import damage_per_error, growth_report
from .fit import _beta, _fixed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ablations", nargs="+", metavar="ABLATION.json",
                   help="files from `ablate --low` with types of large error (Q2_K, Q1_0, IQ2_XXS, ...); a model's "
                        "files are merged")
    p.add_argument("--weights", default="", metavar="K=V,...",
                   help="composite weights held during the fit (default: the shipped ones)")
    p.add_argument("--beta", default=str(FITTED_BETA), help="size exponent held during the fit (default %(default)s)")
    p.add_argument("--min-snr", type=float, default=2.0,
                   help="drop records whose damage is within this many standard errors of zero (default %(default)s)")
    p.add_argument("--check", nargs="+", default=[], metavar="ABLATION.json",
                   help="also score kappa on these files without fitting to them (e.g. the zoo's Q3_K/Q4_K ablations)")
    p.add_argument("--json-out", metavar="FILE", help="write kappa, the held-out scores and the ratios as JSON")


def run(args: argparse.Namespace) -> int:
    beta = _beta(args.beta)
    weights = Weights(**{**Weights().to_json(), **_fixed(args.weights)})
    rep = growth_report(args.ablations, weights, FITTED_BETA if beta is None else beta, args.min_snr, args.check)
    ratios = {}
    for d in rep.data:
        print(f"{d.name}: {len(d.damage)} usable records, {len(d.dropped)} left out")
        ratios[d.name] = table = damage_per_error(d, rep.weights, rep.beta)
        mean_e = {t: float(np.mean([np.mean(lo) for lo, u in zip(d.lo, d.lows) if u == t])) for t in set(d.lows)}
        lows = sorted(mean_e, key=mean_e.get)
        print("  measured / linear prediction (median record = 1), types by rising error: " +
              ", ".join(f"{t} (e {mean_e[t]:.3f})" for t in lows))
        for unit, row in table.items():
            print(f"  {unit:<24} " + " ".join(f"{row[t]:>8.3f}" if t in row else f"{'-':>8}" for t in lows))
    print(f"\nkappa fitted on all models: {rep.growth:g}")
    print(f"{'model':<32} {'kappa without it':>16} {'rms log, linear':>16} {'held out':>9}")
    for r in rep.rows:
        print(f"{r.model[:32]:<32} {r.growth_without:>16g} {r.rms_linear:>16.3f} {r.rms_held_out:>9.3f}")
    for r in rep.check:
        print(f"check (not fitted): {r.model[:32]:<32} rms log linear {r.rms_linear:.3f}, "
              f"with kappa {rep.growth:g} {r.rms_held_out:.3f}")
    if args.json_out:
        write_file(args.json_out, json.dumps({**rep.to_json(), "files": args.ablations, "min_snr": args.min_snr,
                                              "ratios": ratios}, indent=1).encode(), inputs=[*args.ablations, *args.check])
    return 0
