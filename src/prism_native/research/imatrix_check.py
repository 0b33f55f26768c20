"""How well one importance matrix ranks columns like another: per tensor (per expert matrix), Spearman's
rank correlation between the two importance vectors. Used to validate the data-free estimate
(measure/importance.py) against llama-imatrix's matrix of real text (docs/metrics.md)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from ..read.imatrix import Imatrix
from ..read.model import Model
from ..read.taxonomy import classify


@dataclass(frozen=True)
class Agreement:
    name: str
    cls: str
    layer: int | None
    spearman: float          # mean over the tensor's matrices (experts)
    top_recall: float        # share of the real top 2% columns (at least 4) among the estimate's top 2%
    n_mat: int


def compare(estimate: Imatrix, real: Imatrix, model: Model) -> list[Agreement]:
    """Every tensor of the model both matrices hold, in name order; constant vectors (an expert that
    real text never reached has weights 1) are skipped: nothing to rank."""
    out = []
    for name in sorted(set(estimate.entries) & set(real.entries)):
        a, b = estimate.entries[name], real.entries[name]
        if a.size != b.size or name not in model:
            continue
        t = model.tensor(name)
        n_mat = t.shape[2] if len(t.shape) > 2 else 1
        rhos, recalls = [], []
        for x, y in zip(a.reshape(n_mat, -1), b.reshape(n_mat, -1)):
            if np.ptp(y) == 0 or np.ptp(x) == 0:
                continue
            rhos.append(float(spearmanr(x, y).statistic))
            k = max(4, len(y) // 50)
            recalls.append(len(set(np.argsort(x)[-k:]) & set(np.argsort(y)[-k:])) / k)
        if rhos:
            t = classify(name)
            out.append(Agreement(name, t.cls, t.layer, float(np.mean(rhos)), float(np.mean(recalls)), n_mat))
    return out


def by_class(rows: list[Agreement], what: str = "spearman") -> dict[str, float]:
    """Mean Spearman (or top_recall) per tensor class."""
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r.cls, []).append(getattr(r, what))
    return {c: float(np.mean(v)) for c, v in sorted(out.items())}
