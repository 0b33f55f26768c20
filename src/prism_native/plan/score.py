"""Composite sensitivity: one documented combination of the normalised per-tensor metrics.

Each measured metric is standardised across the model's quantizable tensors with a robust z-score
(median and 1.4826*MAD, clipped to +-3, so one outlier tensor cannot dominate), signed so that larger
means "more sensitive"; the structural indicators (head, embedding, first, linear, tied) are 0/1. They combine as
s = exp(sum_k w_k z_k), pooled per class except for the within-class metrics (position, depth, first).
s is a multiplier (1 = typical tensor) on the measured quantization error in the allocator's distortion
D(t) = s * g(rel_error(t)) * n_eff^beta, n_eff the parameters times fan_out (the heads that read each row), g(e) =
e * exp(kappa * e^2) the error cost. The weights, beta and kappa live here, in one place, and can be
overridden (CLI --weights key=value,..., --distortion); docs/metrics.md explains each term.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

import numpy as np

from ..errors import UsageError
from ..measure.analyze import nanmean
from ..measure.results import Analysis
from ..read.model import Model


# beta of the allocator's distortion s * g(e) * n_params^beta, fitted with Weights' defaults
FITTED_BETA = 0.775
# kappa of the error cost g(e) = e * exp(kappa * e^2): how damage outgrows the relative error e at the low-bit
# types (e 0.1-0.35), fitted on low-type class ablations with Weights' defaults and FITTED_BETA (docs/metrics.md)
FITTED_GROWTH = 21.07
_MAX_EXPONENT = 100.0      # e beyond sqrt(100 / kappa) (no type measured there) priced as that: finite for the allocator


def error_cost(e, growth: float = FITTED_GROWTH):
    """g(e) = e * exp(growth * e^2), the distortion's measure of a relative error e (a float or an array):
    linear where the composite was fitted (Q3_K, Q4_K: e <= 0.03), growing fast at the 1-2 bit types' errors."""
    return e * np.exp(np.minimum(growth * np.square(e), _MAX_EXPONENT))


MAX_WEIGHT = 25.0     # |z| <= 3 over ~10 terms: exp stays finite


@dataclass(frozen=True)
class Weights:
    # Fitted to measured damage on six small models trained here from scratch and converted to F16
    # (scripts/train_test_model.py: llama, Qwen3, Qwen2 with 384-wide rows, Qwen3.5 hybrid, tied llama, Qwen3 MoE):
    # fit-weights on their class and layer ablations, ridge lambda 0.001 (chosen by leave-one-model-out cross-validation),
    # beta fitted (FITTED_BETA), K/V counted once per query head they serve (fan_out); head and embedding
    # sit at the fit's bound of 3. Only the
    # structural terms are fitted; the measured metrics are held at 0 because they did not carry held
    # out (on F16 weights every class rounds to about the same relative error; the damage is set by
    # where a tensor sits). docs/metrics.md "Composite score" has the data and the held-out tests.
    # A positive weight: that tensor does more damage per unit of error.
    alpha: float = 0.0            # PL-Alpha-Hill: measured and reported, no held-out support
    dominance: float = 0.0        # top singular value share: measured and reported, no held-out support
    imbalance: float = 0.0        # row/column norm spread: measured and reported, no held-out support
    fragility: float = 0.0        # error growth from 4 to 2 bits: measured, weight not supported
    boundary: float = 0.0         # values on a rounding decision: measured, weight not supported
    position: float = 0.0         # first/last layers of a class: measured, weight not supported
    depth: float = 0.0            # where the layer sits in its class's chain, 0 (first) to 1 (last)
    head: float = 3.0             # the output head: the tensor that makes the logits (tied: token_embd)
    embedding: float = 3.0        # the token embedding: each row is a token's whole input
    first: float = 2.261          # the first blocks (layer < n_layer / 8, at least block 0), as use_more_bits
    linear: float = 0.465         # on the value path: output reaches the residual stream through linear maps only
    tied: float = -2.116          # tied embeddings: token_embd is head and embedding at once (not both in full)
    key: float = 0.0              # attention keys (q.k, then the softmax): better held out on 4 of 5, not on qwen3

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
                raise UsageError(f"bad --weights item '{item}' (keys: {', '.join(sorted(known))})")
            try:
                vals[key] = float(val)
            except ValueError:
                raise UsageError(f"bad --weights value '{val}' for {key}") from None
            if not abs(vals[key]) <= MAX_WEIGHT:      # NaN too
                raise UsageError(f"--weights {key}={val} is outside [-{MAX_WEIGHT}, {MAX_WEIGHT}] "
                                 "(larger weights overflow the score's exponential)")
        return cls(**vals)

    def to_json(self) -> dict[str, float]:
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


# Metrics that act per tensor inside its class. The others are pooled: every tensor of a class gets
# the class's parameter-weighted mean of exp(sum w z) over them. Pooled scores ranked the measured
# damage of whole layers better than per-tensor ones (docs/metrics.md, "The weights are fitted").
WITHIN_CLASS = ("position", "depth", "first")
# Metrics that are facts of the model's graph, not of a tensor's values (they are not z-scored: 0 or 1)
STRUCTURAL = ("head", "embedding", "first", "linear", "tied", "key")
_EMBEDDINGS = ("token_embd", "per_layer_token_embd")
# Vocabulary rows that carry a text's damage. The weights were fitted on models of 4096 tokens; by
# Zipf's law the most frequent few thousand tokens make up most of any text, so in a larger vocabulary
# the rarer rows add parameters (size) but little damage. The distortion of an embedding or output
# matrix counts its parameters as if it had at most this many rows.
ACTIVE_VOCAB = 4096


def effective_params(cls: str, shape: Sequence[int] | None, n_params: int, fan_out: float = 1.0) -> float:
    """The parameter count the distortion uses: n_params times the tensor's fan_out (heads per row), but an
    embedding/output matrix of V > ACTIVE_VOCAB rows (ggml ne1) counts ACTIVE_VOCAB of them."""
    if (cls in _EMBEDDINGS or cls == "output") and shape is not None and len(shape) > 1 and shape[1] > ACTIVE_VOCAB:
        return n_params * ACTIVE_VOCAB / shape[1]
    return float(n_params) * fan_out


def fan_out(model: Model, cls: str, layer: int | None) -> float:
    """How many heads read each row of the tensor, averaged over its rows; for a routed expert, the share
    of tokens it sees (1 for every other tensor).

    Grouped-query attention is multi-head attention whose K and V rows are repeated for the
    n_head / n_head_kv query heads of a group, rounding error included: a K or V weight does the work
    (and the damage) of that many weights of the equivalent multi-head model, so the distortion counts
    it that many times. A fused attn_qkv repeats its K and V rows alike; Gated DeltaNet's fused q/k/v
    (ssm keys present) broadcasts its q and k heads over ssm.time_step_rank / ssm.group_count value
    heads instead (llama_model::load_tensors, QWEN35 / QWEN3NEXT).

    Routed experts (ffn_*_exps) are the other way round: a token uses expert_used_count of the
    expert_count experts, so an expert weight does the work of that share of a dense weight (shared
    experts, _shexp, see every token and count once)."""
    if layer is None:
        return 1.0
    if cls.endswith("_exps"):
        n_e, n_used = model.layer_kv("expert_count", layer), model.layer_kv("expert_used_count", layer)
        return n_used / n_e if 0 < n_used <= n_e else 1.0
    if cls == "attn_qkv" and model.layer_kv("ssm.group_count", layer):
        n_k, n_v = model.layer_kv("ssm.group_count", layer), model.layer_kv("ssm.time_step_rank", layer)
        if n_v < n_k or n_v % n_k:
            return 1.0
        return (2 * n_v + n_v) / (2 * n_k + n_v)       # rows of q, k (n_k heads each) and v (n_v), one head size
    n_head, n_kv = model.layer_kv("attention.head_count", layer), model.layer_kv("attention.head_count_kv", layer)
    if n_kv <= 0 or n_head < n_kv or n_head % n_kv:
        return 1.0
    g = n_head / n_kv
    if cls in ("attn_k", "attn_v"):
        return g
    if cls == "attn_qkv":
        return 3 * n_head / (n_head + 2 * n_kv)        # rows of q (n_head heads), k and v (n_kv each)
    return 1.0


# Block tensors whose output reaches the residual stream through linear maps only: the value path of
# attention (V, fused QKV, the output projection), the FFN's down projection, the SSM's output. Noise
# in the others passes a softmax (Q, K), an activation or a gate (ffn_gate/up, attn_gate, ssm_alpha/
# beta) first. llama.cpp's mixes favour the same tensors (attn_v, ffn_down) by rule of thumb.
_LINEAR_PATH = ("attn_v", "attn_qkv", "attn_output", "attn_v_b", "ffn_down", "ffn_down_exps", "ffn_down_shexp",
                "ffn_down_chexps", "ssm_out")


# Attention key projections (MLA's per-head key part too): a key's error moves q.k for every query of
# its group, and the softmax turns score errors into weight errors exponentially.
_KEYS = ("attn_k", "attn_k_b")


def structural_metrics(classes: Sequence[str], layers: Sequence[int | None]) -> list[dict[str, float]]:
    """head, embedding, first, linear, tied and key per tensor, from the classes and layers of all the model's
    quantizable tensors (without an output class the embeddings are tied and token_embd is also the head)."""
    tied = "output" not in classes
    known = [il for il in layers if il is not None]
    n_first = max(1, (max(known) + 1) // 8) if known else 0
    return [{"head": float(c == "output" or (tied and c == "token_embd")), "embedding": float(c in _EMBEDDINGS),
             "first": float(il is not None and il < n_first), "linear": float(c in _LINEAR_PATH),
             "tied": float(tied and c == "token_embd"), "key": float(c in _KEYS)}
            for c, il in zip(classes, layers)]


def pooled(s: np.ndarray, n: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Each tensor's value replaced by its class's parameter-weighted mean."""
    num = np.bincount(cls, weights=s * n)
    den = np.bincount(cls, weights=n)
    return (num / den)[cls]


def combine(z: np.ndarray, w: np.ndarray, names: Sequence[str], n: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Sensitivities from z-scores (tensors x metrics), weights, parameters and class indices."""
    within = np.array([m in WITHIN_CLASS for m in names], dtype=bool)
    return pooled(np.exp(z[:, ~within] @ w[~within]), n, cls) * np.exp(z[:, within] @ w[within])


def z_matrix(metrics: Sequence[Mapping[str, float | None]], names: Sequence[str]) -> np.ndarray:
    """Robust z-scores, tensors x metrics (a missing or None metric is NaN, hence neutral); the
    structural metrics stay 0/1."""
    def val(m: Mapping[str, float | None], k: str) -> float:
        v = m.get(k)
        return math.nan if v is None else float(v)
    if not metrics:
        return np.zeros((0, len(names)))
    cols = []
    for k in names:
        v = [val(m, k) for m in metrics]
        cols.append(np.nan_to_num(np.array(v)) if k in STRUCTURAL else robust_z(v))
    return np.column_stack(cols)


def metric_records(records: Sequence[Mapping[str, object]]) -> list[dict[str, float | None]]:
    """The composite's inputs per tensor: each record's own metrics (a TensorResult as a dict, or the
    "metrics" of an ablation file's tensor row, with "cls") and the structural ones."""
    out = []
    layers = [r.get("layer") for r in records]
    for r, st in zip(records, structural_metrics([str(r["cls"]) for r in records], layers)):  # type: ignore[arg-type]
        own = r["metrics"] if "metrics" in r else r
        m: dict[str, float | None] = {k: own.get(k) for k in Weights().to_json() if k not in STRUCTURAL}  # type: ignore[union-attr]
        m.update(st)
        out.append(m)
    return out


def class_index(classes: Sequence[str]) -> np.ndarray:
    """Class names -> small integers (for pooled)."""
    labels = {c: i for i, c in enumerate(sorted(set(classes)))}
    return np.array([labels[c] for c in classes], dtype=np.int64)


def tensor_sensitivity(records: Sequence[Mapping[str, object]], weights: Weights) -> np.ndarray:
    """Composite sensitivity of every tensor from its record (a TensorResult as a dict: metrics, cls,
    n_params)."""
    names = list(weights.to_json())
    w = np.array([weights.to_json()[k] for k in names])
    params = np.array([float(r["n_params"]) for r in records])  # type: ignore[arg-type]
    classes = [str(r["cls"]) for r in records]
    return combine(z_matrix(metric_records(records), names), w, names, params, class_index(classes))


def class_sensitivity(sens: Sequence[float], params: Sequence[int]) -> float:
    p = np.asarray(params, dtype=np.float64)
    return float(np.dot(np.asarray(sens, dtype=np.float64), p) / p.sum()) if p.sum() > 0 else 1.0


def score_analysis(analysis: Analysis, weights: Weights) -> None:
    """Set the composite sensitivity of every tensor of an analysis (and record the weights used)."""
    rs = list(analysis.tensors.values())
    sens = tensor_sensitivity([asdict(r) for r in rs], weights)
    for r, s in zip(rs, sens):
        r.sensitivity = float(s)
    analysis.weights = weights.to_json()


@dataclass(frozen=True)
class ClassSummary:
    """One class of an analysis: its tensors, parameters, mean metrics and sensitivity."""

    cls: str
    tensors: int
    params: int
    share: float          # of the quantizable parameters
    alpha: float
    dominance: float
    imbalance: float
    osqe4: float
    fragility: float
    boundary: float
    sensitivity: float    # parameter-weighted


def class_table(analysis: Analysis) -> list[ClassSummary]:
    """One row per class, sorted by sensitivity, highest first."""
    total = analysis.n_params or 1
    rows = []
    for cls, rs in analysis.by_class().items():
        p = [r.n_params for r in rs]
        rows.append(ClassSummary(
            cls, len(rs), sum(p), sum(p) / total, nanmean(r.alpha for r in rs), nanmean(r.dominance for r in rs),
            nanmean(r.imbalance for r in rs), nanmean(r.osqe["4"] for r in rs), nanmean(r.fragility for r in rs),
            nanmean(r.boundary for r in rs), class_sensitivity([r.sensitivity for r in rs], p)))
    rows.sort(key=lambda c: -c.sensitivity)
    return rows
