"""Fit the composite sensitivity's weights to measured damage (ablation files), and check them held out.

The allocator predicts the damage of a unit u (a class or a layer) at a low type t as

    P(u, t) = sum over tensors i of u:  exp(w . z_i) * (e_i(t) - e_i(high)) * n_i^beta

with z_i the tensor's robust z-scores (score.robust_z over the model's tensors), e_i the measured
relative error of the type llama-quantize writes, n_i its parameters; beta = 1 is the "params"
distortion, beta = 0 "relative". Ablation measures the true damage M(u, t) (KLD increase). The fit
minimises, over all records of all models,  sum (log P + c_model - log M)^2 + lam * |w|^2, where the
free offset c_model absorbs each model's KLD scale (only ranks and ratios within a model matter to
the allocator). Records whose predicted or measured damage is not positive (a lossless requantization,
damage inside the noise) cannot be scored in log space and are left out, and counted.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import FileFormatError, UsageError
from ..plan.score import Weights, class_index, combine, effective_params, error_cost, metric_records, z_matrix
from . import ablate

METRICS = tuple(Weights.__dataclass_fields__)


# unfitted literature priors (AlphaPruning's direction for alpha, llama.cpp's use_more_bits for
# position), the baseline every fit is scored against
LITERATURE_PRIORS = Weights(alpha=-0.30, dominance=0.15, imbalance=0.15, fragility=0.25, boundary=0.10,
                            position=0.25)
ERRORS_ONLY = Weights(**{k: 0.0 for k in Weights().to_json()})     # distortion = measured error alone


@dataclass
class ModelData:
    """One model's ablation records, as arrays."""

    name: str
    z: np.ndarray                  # tensors x metrics, robust z-scores
    n: np.ndarray                  # parameters per tensor
    cls: np.ndarray                # class index per tensor
    units: list[str]
    lows: list[str]
    members: list[np.ndarray]      # per record: tensor indices
    lo: list[np.ndarray]           # per record: those tensors' relative errors at the low type
    hi: list[np.ndarray]           # ... and at the high type
    damage: np.ndarray             # per record: measured KLD increase
    noise: np.ndarray              # per record: standard error of the KLD
    dropped: list[str] = field(default_factory=list)


def others(data: Sequence[ModelData], d: ModelData) -> list[ModelData]:
    """The data of every model but d (leave one model out)."""
    return [o for o in data if o is not d]


def model_data(ab: dict[str, Any], min_snr: float = 2.0) -> ModelData:
    """Arrays from a (merged) ablation file; records with damage below min_snr standard errors are
    dropped (their log is noise)."""
    tensors = ab["tensors"]
    index = {t["name"]: i for i, t in enumerate(tensors)}
    z = z_matrix(metric_records(tensors), METRICS)
    # the allocator's parameter count (older files without "shape" count every row, without "fan_out" once)
    n = np.array([effective_params(t["cls"], t.get("shape"), t["n_params"], t.get("fan_out", 1.0)) for t in tensors], dtype=np.float64)
    cls = class_index([t["cls"] for t in tensors])
    high = ab["high"]
    d = ModelData(ab.get("model_name") or ab["model"].get("name", "model"), z, n, cls, [], [], [], [], [],
                  np.zeros(0), np.zeros(0))
    dmg, noise = [], []
    for r in ab["records"]:
        idx = np.array([index[name] for name in r["tensors"]])
        lo = np.array([_err(tensors[i], r["low"]) for i in idx])
        hi = np.array([_err(tensors[i], high) for i in idx])
        err = math.hypot(r["kld_err"], ab["base"]["kld_err"])
        label = f"{r['unit']} at {r['low']}"
        if not (r["damage"] > min_snr * err):
            d.dropped.append(f"{label}: damage {r['damage']:.2e} within {min_snr:g} standard errors")
            continue
        if not np.any(lo > hi):
            d.dropped.append(f"{label}: measured error is zero (lossless requantization)")
            continue
        d.units.append(r["unit"])
        d.lows.append(r["low"])
        d.members.append(idx)
        d.lo.append(lo)
        d.hi.append(hi)
        dmg.append(r["damage"])
        noise.append(err)
    d.damage, d.noise = np.array(dmg), np.array(noise)
    return d


def models_from_files(paths: Sequence[str | Path], min_snr: float = 2.0) -> list[ModelData]:
    """One ModelData per model from ablation files; a model's files (by class, by layer) are merged. Those
    made with an imatrix join with their own errors (imatrix-weighted) and their types marked ", imatrix"."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    folder: dict[str, str] = {}
    for p in paths:
        ab = ablate.load(p)
        key = json.dumps(ab["model"], sort_keys=True)
        by_model.setdefault(key, []).append(ab)
        stem = re.sub(r"-?ablation(-[a-z]+)?$", "", Path(p).stem)    # austen-llama-ablation-class.json
        folder.setdefault(key, stem or Path(p).resolve().parent.name)
    data = {k: _joined([model_data(ablate.merge(ps), min_snr) for flag in (False, True)
                        if (ps := [ab for ab in parts if bool(ab.get("imatrix")) == flag])])
            for k, parts in by_model.items()}
    names = Counter(d.name for d in data.values())
    for k, d in data.items():       # models that share general.name are told apart by file or folder
        if names[d.name] > 1:
            d.name = f"{d.name} ({folder[k]})"
    return list(data.values())


def _joined(parts: list[ModelData]) -> ModelData:
    """A model's records without and with an imatrix as one ModelData (one offset: the same model and text)."""
    d = parts[0]
    for im in parts[1:]:
        d.units += im.units
        d.lows += [f"{t}, imatrix" for t in im.lows]
        d.members += im.members
        d.lo += im.lo
        d.hi += im.hi
        d.damage = np.concatenate([d.damage, im.damage])
        d.noise = np.concatenate([d.noise, im.noise])
        d.dropped += [f"{w} (imatrix)" for w in im.dropped]
    return d


def _err(t: dict[str, Any], req: str) -> float:
    e = t["errors"].get(req)
    if e is None:
        raise FileFormatError(f"the ablation's analysis did not measure {req} on {t['name']}")
    return float(e["rel_error"] or 0.0)


def predict(d: ModelData, w: np.ndarray, beta: float, growth: float = 0.0) -> np.ndarray:
    """log P for every record of one model, with the allocator's sensitivities (score.combine) and its
    error cost (score.error_cost) of the given growth."""
    s = combine(d.z, w, METRICS, d.n, d.cls) * d.n ** beta
    return np.log(np.array([float(np.dot(s[i], np.maximum(error_cost(lo, growth) - error_cost(hi, growth), 0.0)))
                            for i, lo, hi in zip(d.members, d.lo, d.hi)]))


def _residuals(data: Sequence[ModelData], w: np.ndarray, beta: float, growth: float = 0.0) -> list[np.ndarray]:
    out = []
    for d in data:
        r = predict(d, w, beta, growth) - np.log(d.damage)
        out.append(r - r.mean())              # the per-model offset, solved in closed form
    return out


@dataclass
class Fit:
    weights: Weights
    beta: float
    lam: float
    rms_log: float                  # in-sample, natural log units

    def to_json(self) -> dict[str, Any]:
        return {"weights": self.weights.to_json(), "beta": self.beta, "lambda": self.lam, "rms_log": self.rms_log}


def fit(data: Sequence[ModelData], lam: float = 1.0, beta: float | None = None,
        fixed: Mapping[str, float] | None = None) -> Fit:
    """Least squares in log space with a ridge on w; beta fitted in [0, 1] unless given; weights named
    in `fixed` are held at their value."""
    k = len(METRICS)
    n_rec = sum(len(d.damage) for d in data)
    if n_rec < 2:
        raise UsageError("too few usable ablation records to fit (need 2 or more)")

    def loss(x: np.ndarray) -> float:
        w, b = x[:k], (x[k] if beta is None else beta)
        res = np.concatenate(_residuals(data, w, b))
        return float(res @ res) / n_rec + lam * float(w @ w) / k

    x0 = np.zeros(k + (beta is None))
    if beta is None:
        x0[k] = 1.0
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(METRICS)
    if unknown:
        raise UsageError(f"cannot fix unknown weight {sorted(unknown)[0]} (weights: {', '.join(METRICS)})")
    bounds = [(fixed[m], fixed[m]) if m in fixed else (-3.0, 3.0) for m in METRICS] + \
        ([(0.0, 1.0)] if beta is None else [])
    x0[:k] = [fixed.get(m, 0.0) for m in METRICS]
    from scipy import optimize      # imported here: every CLI command would pay for it at start-up

    res = optimize.minimize(loss, x0, method="L-BFGS-B", bounds=bounds)
    w = res.x[:k]
    b = float(res.x[k]) if beta is None else float(beta)
    rms = float(np.sqrt(np.mean(np.concatenate(_residuals(data, w, b)) ** 2)))
    return Fit(Weights(**{m: round(float(v), 3) for m, v in zip(METRICS, w)}), round(b, 3), lam, rms)


def held_out_rms(data: Sequence[ModelData], lam: float, beta: float | None,
                 fixed: Mapping[str, float] | None) -> float:
    """Mean over models of the rms log error of a fit on the other models (leave one model out)."""
    errs = [score(d, f.weights, f.beta).rms_log for d in data for f in [fit(others(data, d), lam, beta, fixed)]]
    return float(np.mean(errs))


def choose_lambda(data: Sequence[ModelData], grid: Sequence[float], beta: float | None = None,
                  fixed: Mapping[str, float] | None = None) -> tuple[float, dict[float, float]]:
    """The ridge penalty of `grid` whose leave-one-model-out fits predict the left-out model best (mean
    rms log error), with every candidate's figure. One candidate, or fewer than three models (a left-out
    fit would see one model only), returns the first without cross-validation."""
    if len(grid) == 1 or len(data) < 3:
        return grid[0], {}
    cv = {lam: held_out_rms(data, lam, beta, fixed) for lam in grid}
    return min(grid, key=lambda lam: (cv[lam], -lam)), cv


@dataclass
class Score:
    spearman: float           # rank agreement of predicted and measured damage
    pairs: float              # share of record pairs ordered alike
    rms_log: float            # after the model's offset

    def to_json(self) -> dict[str, float]:
        return {"spearman": self.spearman, "pairs": self.pairs, "rms_log": self.rms_log}


def score(d: ModelData, weights: Weights, beta: float) -> Score:
    w = np.array([getattr(weights, m) for m in METRICS])
    p = predict(d, w, beta)
    m = np.log(d.damage)
    r = (p - m) - (p - m).mean()
    i, j = np.triu_indices(len(p), 1)
    pairs = float(np.mean(np.sign(p[i] - p[j]) == np.sign(m[i] - m[j]))) if len(i) else math.nan
    from scipy import stats

    rho = float(stats.spearmanr(p, m).statistic) if len(p) > 2 else math.nan
    return Score(rho, pairs, float(np.sqrt(np.mean(r ** 2))))


# -- fit-weights: the fit, and every scheme scored on every model -----------------------------------


@dataclass
class ScoreRow:
    """One scheme's weights scored on one model."""

    scheme: str
    model: str
    score: Score
    weights: Weights
    beta: float

    def to_json(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "model": self.model, **self.score.to_json(), "weights": self.weights.to_json(),
                "beta": self.beta}


@dataclass
class FitReport:
    """The fit on all models (its lambda chosen by leave-one-model-out cross-validation), the fits that
    leave each model out, and the scores of every scheme: the literature priors, the defaults, errors only,
    the fits in and out of sample, and the fit on files it was not fitted to (`check`)."""

    data: list[ModelData]
    lam: float
    cv: dict[float, float]          # lambda -> mean held-out rms log (empty: not cross-validated)
    overall: Fit
    held: dict[str, Fit]            # model name -> the fit on the other models
    rows: list[ScoreRow]

    def to_json(self) -> dict[str, Any]:
        return {"fit": self.overall.to_json(), "held_out_fits": {k: v.to_json() for k, v in self.held.items()},
                "scores": [r.to_json() for r in self.rows]}


def fit_report(files: Sequence[str | Path], grid: Sequence[float], beta: float | None = None,
               fixed: Mapping[str, float] | None = None, min_snr: float = 2.0,
               check: Sequence[str | Path] = ()) -> FitReport:
    """Fit the weights to ablation `files` and score every scheme on every model (leave one model out)."""
    data = models_from_files(files, min_snr)
    lam, cv = choose_lambda(data, grid, beta, fixed)
    overall = fit(data, lam, beta, fixed)
    schemes: dict[str, tuple[Weights, float]] = {
        "literature priors, params": (LITERATURE_PRIORS, 1.0),
        "current defaults, params": (Weights(), 1.0),
        "errors only, params (w = 0, beta = 1)": (ERRORS_ONLY, 1.0),
        "errors only, relative (w = 0, beta = 0)": (ERRORS_ONLY, 0.0),
        "fitted on all models (in-sample)": (overall.weights, overall.beta),
    }
    held = {d.name: fit(rest, choose_lambda(rest, grid, beta, fixed)[0], beta, fixed)
            for d in data for rest in [others(data, d)] if sum(len(o.damage) for o in rest) >= 2}
    rows = [ScoreRow(name, d.name, score(d, w, b), w, b) for name, (w, b) in schemes.items() for d in data]
    rows += [ScoreRow("fitted on the other models (held out)", d.name, score(d, f.weights, f.beta), f.weights, f.beta)
             for d in data if (f := held.get(d.name)) is not None]
    for d in models_from_files(check, min_snr) if check else []:
        rows += [ScoreRow(scheme, d.name, score(d, w, overall.beta), w, overall.beta)
                 for scheme, w in (("check, not fitted: fitted on all models", overall.weights),
                                   ("check, not fitted: errors only", ERRORS_ONLY))]
    return FitReport(data, lam, cv, overall, held, rows)


# -- fit-growth: the error cost's growth at large errors, with the weights held -----------------------


GROWTH_BOUND = 100.0      # kappa's search range [0, bound]: a Q1_0 error (0.35) then costs up to 2e5 times itself


def growth_rms(data: Sequence[ModelData], weights: Weights, beta: float, growth: float) -> float:
    """rms log error of the predicted damage over the records of `data` (each model's offset removed)."""
    w = np.array([getattr(weights, m) for m in METRICS])
    res = np.concatenate(_residuals(data, w, beta, growth))
    return float(np.sqrt(np.mean(res ** 2)))


def fit_growth(data: Sequence[ModelData], weights: Weights, beta: float, bound: float = GROWTH_BOUND) -> float:
    """kappa in [0, bound] that minimises the rms log error with the weights and beta held: a coarse grid
    (log-spaced, and 0), then a bounded refinement around its best point."""
    if sum(len(d.damage) for d in data) < 2:
        raise UsageError("too few usable ablation records to fit (need 2 or more)")
    grid = np.concatenate([[0.0], np.geomspace(0.01, bound, 61)])
    rms = [growth_rms(data, weights, beta, g) for g in grid]
    k = int(np.argmin(rms))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    from scipy import optimize      # imported here: every CLI command would pay for it at start-up

    res = optimize.minimize_scalar(lambda g: growth_rms(data, weights, beta, g), bounds=(lo, hi), method="bounded")
    best = float(res.x) if res.fun < rms[k] else float(grid[k])
    return round(best, 3)


@dataclass
class GrowthRow:
    """One model: kappa fitted without it, and the rms log error of its records, linear and with that kappa."""

    model: str
    growth_without: float
    rms_linear: float
    rms_held_out: float

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "growth_fitted_without": self.growth_without, "rms_log_linear": self.rms_linear,
                "rms_log_held_out": self.rms_held_out}


@dataclass
class GrowthReport:
    data: list[ModelData]
    weights: Weights
    beta: float
    growth: float                    # fitted on every model
    rows: list[GrowthRow]            # leave one model out
    check: list[GrowthRow]           # files in no fit, scored with `growth` (and linear)

    def to_json(self) -> dict[str, Any]:
        return {"growth": self.growth, "beta": self.beta, "weights": self.weights.to_json(),
                "held_out": [r.to_json() for r in self.rows], "check": [r.to_json() for r in self.check]}


def growth_report(files: Sequence[str | Path], weights: Weights, beta: float, min_snr: float = 2.0,
                  check: Sequence[str | Path] = ()) -> GrowthReport:
    """Fit kappa on `files` (the weights and beta held) and on every subset that leaves one model out;
    score each left-out model with its fold's kappa, and the `check` files with the all-model one."""
    data = models_from_files(files, min_snr)
    growth = fit_growth(data, weights, beta)
    rows = []
    for d in data:
        if rest := others(data, d):
            g = fit_growth(rest, weights, beta)
            rows.append(GrowthRow(d.name, g, growth_rms([d], weights, beta, 0.0), growth_rms([d], weights, beta, g)))
    checked = [GrowthRow(d.name, growth, growth_rms([d], weights, beta, 0.0), growth_rms([d], weights, beta, growth))
               for d in (models_from_files(check, min_snr) if check else [])]
    return GrowthReport(data, weights, beta, growth, rows, checked)


def damage_per_error(d: ModelData, weights: Weights, beta: float) -> dict[str, dict[str, float]]:
    """Measured damage over the linear prediction (sum s n^beta (e_low - e_high)), per unit and low type,
    scaled so that the model's median record is 1: flat across a unit's types when damage grows as e does."""
    w = np.array([getattr(weights, m) for m in METRICS])
    ratio = d.damage / np.exp(predict(d, w, beta, 0.0))
    ratio /= float(np.median(ratio))
    out: dict[str, dict[str, float]] = {}
    for u, t, r in zip(d.units, d.lows, ratio):
        out.setdefault(u, {})[t] = float(r)
    return out
