"""Composite sensitivity: one documented combination of the normalised per-tensor metrics.

Each metric is standardised across the model's quantizable tensors with a robust z-score (median and
1.4826*MAD, clipped to +-3, so one outlier tensor cannot dominate), signed so that larger means "more
sensitive", and combined as  s = exp(sum_k w_k z_k).  s is a multiplier (1 = typical tensor) on the
measured quantization error in the allocator's distortion  D(t) = s * rel_error(t) * n_params.
A class's sensitivity is the parameter-weighted mean of its tensors'. The weights live here, in one
place, and can be overridden (CLI --weights key=value,...); docs/metrics.md explains each term.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

import numpy as np

from .errors import PrismError


@dataclass(frozen=True)
class Weights:
    # Fitted to measured damage (fit-weights on the class ablations of SmolLM2-135M and Gemma-3-270M,
    # ridge lambda 0.3, beta 1; docs/metrics.md "Composite score" has the data, method and held-out
    # scores). A positive weight: larger metric = more damage per unit of relative error.
    alpha: float = 0.955          # light-tailed, random-like spectra (attn_v, ffn_up) took more damage
    dominance: float = -0.323     # a dominant direction (tied embeddings) costs less than its error says
    imbalance: float = 0.588      # uneven row/column norms: block scales fit badly
    fragility: float = 0.656      # error grows fast as bits drop
    boundary: float = 0.433       # many values sit on a rounding decision
    position: float = 0.37        # first and last layers of a class (depth from the position prior)

    @classmethod
    def parse(cls, text: str | None) -> "Weights":
        """'alpha=-0.3,position=0.5' -> Weights (unnamed keys keep their defaults)."""
        if not text:
            return cls()
        known = {f.name for f in fields(cls)}
        vals: dict[str, float] = {}
        for item in text.split(","):
            key, sep, val = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise PrismError(f"bad --weights item '{item}' (keys: {', '.join(sorted(known))})")
            try:
                vals[key] = float(val)
            except ValueError:
                raise PrismError(f"bad --weights value '{val}' for {key}") from None
        return cls(**vals)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def robust_z(values: Sequence[float]) -> np.ndarray:
    """(x - median) / (1.4826 MAD), clipped to [-3, 3]; NaN (metric unavailable) -> 0 (neutral)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    z = np.zeros_like(v)
    if ok.sum() < 2:
        return z
    med = np.median(v[ok])
    mad = 1.4826 * np.median(np.abs(v[ok] - med))
    if mad <= 0:
        sd = np.std(v[ok])
        mad = sd if sd > 0 else 1.0
    z[ok] = np.clip((v[ok] - med) / mad, -3.0, 3.0)
    return z


def tensor_sensitivity(metrics: Sequence[Mapping[str, float]], weights: Weights) -> np.ndarray:
    """Composite sensitivity of every tensor from its metric record (keys = Weights fields)."""
    n = len(metrics)
    log_s = np.zeros(n)
    for name, w in weights.as_dict().items():
        if w == 0.0:
            continue
        col = [float(m.get(name, math.nan)) for m in metrics]
        log_s += w * robust_z(col)
    return np.exp(log_s)


def class_sensitivity(sens: Sequence[float], params: Sequence[int]) -> float:
    p = np.asarray(params, dtype=np.float64)
    return float(np.dot(np.asarray(sens, dtype=np.float64), p) / p.sum()) if p.sum() > 0 else 1.0
