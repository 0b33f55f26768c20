#!/usr/bin/env python3
"""Measured damage per unit error of each tensor class against a first-order prediction in absolute units
(docs/metrics.md, "What did not carry": the blocks in the same absolute unit as the head).

Prediction: a head error costs H = 1/2 mean_v |gamma * w_v|^2 per unit of relative error (head_noise.py); a
block tensor's error adds e * sum_ij W_ij^2 E[x_j^2] of noise energy to the stream (its inputs from the
data-free importance estimate, untempered), costing H * noise / |h_L|^2 when it reaches the final norm as an
isotropic perturbation of the estimated final stream. Measured: an `ablate MODEL --by class` file.

    python scripts/block_noise.py MODEL.gguf ABLATION-CLASS.json [--low Q3_K]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from prism_native.measure import importance
from prism_native.read.model import open_model


def predicted(model_path: str) -> tuple[float, dict[str, float]]:
    """H, and per class the stream noise per unit relative error over the final stream's energy."""
    model = open_model(model_path)
    est = importance._Estimator(model, importance.EstimateOptions(temper=1.0, threads=1))
    energy: list[float] = []
    block = est.block

    def recording(il, h):
        out = block(il, h)
        energy.append(float(out.sq.sum()))
        return out

    est.block = recording
    est.run()
    head = "output.weight" if "output.weight" in model else "token_embd.weight"
    w = np.asarray(model.read(head), dtype=np.float64)
    g2 = np.asarray(model.read("output_norm.weight"), dtype=np.float64) ** 2
    h = 0.5 * float(np.mean((w * w) @ g2))
    noise: dict[str, float] = {}
    for name, (sq, _) in est.sq.items():
        wt = np.asarray(model.read(name), dtype=np.float64)
        if wt.ndim != 2:
            continue                                   # expert stacks: not modelled here
        cls = name.split(".")[-2]
        noise[cls] = noise.get(cls, 0.0) + float(((wt * wt) @ sq[0]).sum()) / energy[-1]
    return h, noise


def measured(ablation: str, low: str) -> dict[str, float]:
    a = json.loads(open(ablation).read())
    rel = {t["name"]: (t["errors"][low]["rel_error"], t["n_params"]) for t in a["tensors"] if low in t["errors"]}
    out = {}
    for r in a["records"]:
        if r["low"] != low:
            continue
        e = sum(rel[t][0] * rel[t][1] for t in r["tensors"]) / sum(rel[t][1] for t in r["tensors"])
        out[r["unit"].split()[-1]] = r["damage"] / e
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("ablation")
    p.add_argument("--low", default="Q3_K")
    a = p.parse_args(argv)
    h, noise = predicted(a.model)
    print(f"{a.model}: H = {h:.4f}")
    for cls, m in sorted(measured(a.ablation, a.low).items()):
        pred = h if cls in ("output", "token_embd") else h * noise.get(cls, float("nan"))
        print(f"  {cls:12s} measured {m:9.4g} per unit error, predicted {pred:9.4g}, ratio {m / pred:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
