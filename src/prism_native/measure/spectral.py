"""Spectral and structural metrics of one weight matrix: the single entry point `spectral_metrics`.

W is (rows, n_per_row) as GGUF stores it. Every spectral quantity is transpose-invariant; the
eigenvalues lambda_i = sigma_i^2 (N = min(rows, n_per_row) of them) come from the Gram matrix of the
short side. Mode "exact" computes the whole spectrum; mode "default" switches to estimates for large
matrices by the explicit rule of `plan` (see docs/metrics.md for the measured errors and timings).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Literal

import numpy as np

from ..errors import UsageError
from .eigen import block_krylov_quadrature, exact_eigenvalues, gram, gram_operator, long_side_view, top_eigenvalue
from .hill import KPolicy, hill_fit, tail_size
from .structure import LineNorms, as_matrix, imbalance_from_norms, line_norms

Mode = Literal["default", "exact"]
_PRECISIONS = {"float32": np.float32, "float64": np.float64}
# Eigenvalues below ZERO_TOL * sqrt(N) * eps * lambda_max count as zero: float32 Grams of exactly
# rank-deficient matrices gave |noise| <= 5e-7 lambda_max at N = 4096 (this tolerance is 1.5e-4 there).
ZERO_TOL = 20.0
# sigma_1 run on the full matrix after a sampled spectrum: block, maximum depth, early-stop tolerance.
SIGMA1_BLOCK, SIGMA1_DEPTH, SIGMA1_RTOL = 8, 5, 1e-5


@dataclass(frozen=True)
class SpectralConfig:
    """Thresholds of the default mode (mode "exact" ignores all but `precision`)."""
    exact_max_dim: int = 3072        # N above this: block-Krylov quadrature instead of a full eigvalsh
    gram_flop_budget: float = 2e11   # L * N^2 above this: sample lines (biased, see docs: tall embeddings)
    min_sample_ratio: float = 4.0    # but never fewer than this * N sampled lines
    krylov_block: int = 32           # Gaussian probe block (quadrature variance ~ 1 / block)
    krylov_depth: int = 12           # Krylov steps (quadrature resolution)
    precision: str = "float32"       # Gram and eigensolver dtype; "float64" only to validate


@dataclass(frozen=True)
class SpectralMethod:
    """How the spectrum of one shape is obtained."""
    sampled_lines: int   # 0: the Gram uses every line of the long side; else that many, uniformly
    krylov: bool         # True: quadrature estimate of the bulk; False: exact eigvalsh

    @property
    def method(self) -> str:
        return ("sampled-" if self.sampled_lines else "") + ("krylov" if self.krylov else "exact")


def spectral_method(shape: tuple[int, int], mode: Mode = "default", config: SpectralConfig | None = None) -> SpectralMethod:
    """The default mode's choice rule, explicit: sample the long side when the Gram would cost more than
    the flop budget, use the Krylov quadrature when the short side exceeds exact_max_dim."""
    cfg = config or SpectralConfig()
    if mode not in ("default", "exact"):
        raise UsageError(f"unknown spectral mode {mode!r}; use 'default' or 'exact'")
    if mode == "exact":
        return SpectralMethod(0, False)
    long_side, n = max(shape), min(shape)
    lines = 0
    if long_side * n * n > cfg.gram_flop_budget:
        lines = max(math.ceil(cfg.min_sample_ratio * n), int(cfg.gram_flop_budget // (n * n)))
        lines = 0 if lines >= long_side else lines
    krylov = n > cfg.exact_max_dim and 2 * cfg.krylov_block * cfg.krylov_depth <= n
    return SpectralMethod(lines, krylov)


Operator = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LineSample:
    """A matrix W too large to hold whole, for its spectrum: the lines `lines` (sorted) of the long side
    X = long_side_view(W), their values (s x N float32), and `product(dtype, scale)`, the operator
    v -> (scale X)^T (scale X) v of the whole matrix, which the caller streams from the file."""
    shape: tuple[int, int]
    lines: np.ndarray
    values: np.ndarray
    product: Callable[[type, float], Operator]


def sample_lines(shape: tuple[int, int], mode: Mode, max_values: int, rng_seed: int = 0,
                 config: SpectralConfig | None = None) -> np.ndarray:
    """The lines of the long side that spectral_metrics samples for this shape: the plan's when it samples
    (the very ones it draws for a whole matrix: at most max(4 N, budget / N^2) lines, bounded by the short
    side alone), else a uniform sample of max_values // N lines (a slab) instead of the whole long side."""
    how = spectral_method(shape, mode, config)
    long_side, n = max(shape), min(shape)
    s = how.sampled_lines or min(long_side, max(1, max_values // n))
    return _draw_lines(np.random.default_rng(rng_seed), long_side, s)


def _draw_lines(rng: np.random.Generator, long_side: int, s: int) -> np.ndarray:
    return np.sort(rng.choice(long_side, s, replace=False))


@dataclass(frozen=True)
class SpectralMetrics:
    shape: tuple[int, int]   # (rows, n_per_row)
    n_eigs: int              # N = min(shape)
    k: int                   # Hill tail size used
    alpha: float             # PL-Alpha-Hill; NaN if the tail does not fit (N < k + 1, rank <= k, zero W)
    spectral_norm: float     # sigma_1
    frobenius_sq: float      # sum sigma_i^2 = ||W||_F^2 (exact, float64)
    dominance: float         # sigma_1^2 / ||W||_F^2 in (0, 1]; NaN for a zero matrix
    row_cv: float            # coefficient of variation of the row L2 norms
    col_cv: float            # coefficient of variation of the column L2 norms
    imbalance: float         # max(row_cv, col_cv); NaN for a zero matrix
    method: str              # SpectralMethod.method actually used ("+float64": the float32 eigensolver failed;
                             # "line-norm-bound": both failed, sigma_1 is the largest row/column norm)
    sampled_lines: int       # lines of the long side in the Gram (0 = all)
    undefined: tuple[tuple[str, str], ...] = ()   # (metric, why it is NaN)

    @property
    def alpha_weighted(self) -> float:
        """WeightWatcher's alpha * log10(lambda_max)."""
        return self.alpha * math.log10(self.spectral_norm ** 2) if self.spectral_norm > 0 else float("nan")

    @property
    def stable_rank(self) -> float:
        """||W||_F^2 / sigma_1^2 = 1 / dominance."""
        return 1.0 / self.dominance if self.dominance > 0 else float("nan")


def gram_scale(frobenius_sq: float, size: int) -> float:
    """A power of two that brings the mean square to about 1 when a float32 Gram could overflow (its
    entries reach ||W||_F^2) or lose its precision to underflow (subnormal products); 1.0 for every
    ordinary weight matrix, which is then used bit for bit as given. Every metric is scale-invariant
    but sigma_1, which is scaled back."""
    mean_sq = frobenius_sq / size
    if 2.0 ** -100 <= mean_sq and frobenius_sq <= 2.0 ** 100:
        return 1.0
    return 2.0 ** -round(math.log2(mean_sq) / 2)


def scaled_copy(a: np.ndarray, scale: float) -> np.ndarray:
    """a * scale in float32 (through float64); a itself for scale 1."""
    return a if scale == 1.0 else (a.astype(np.float64) * scale).astype(np.float32)


@dataclass(frozen=True)
class _Spectrum:
    alpha: float
    lam_max: float
    method: str
    why_no_alpha: str | None


def spectral_metrics(w: np.ndarray | LineSample, mode: Mode = "default", *, k_policy: KPolicy = "alphaquant",
                     rng_seed: int = 0, config: SpectralConfig | None = None,
                     norms: LineNorms | None = None) -> SpectralMetrics:
    """PL-Alpha-Hill, spectral norm, spectral dominance and matrix imbalance of one 2-D matrix of finite
    values (`norms`: its line norms, when the caller has them already).

    `w` may be a LineSample of a matrix too large to hold (with its `norms`, required then): the Gram is
    the sample's, scaled, and sigma_1 comes from the streamed product, as for a sampled plan.
    Deterministic for a given rng_seed. Pure numpy/LAPACK: the GIL is released during the heavy work, so
    tensors can be processed from a thread pool (limit BLAS threads with threadpoolctl if you do). An
    eigensolver that does not converge is retried in float64, then replaced by a bound (see `method`)."""
    cfg = config or SpectralConfig()
    if cfg.precision not in _PRECISIONS:
        raise UsageError(f"unknown precision {cfg.precision!r}; use one of {sorted(_PRECISIONS)}")
    sample = w if isinstance(w, LineSample) else None
    if sample is not None:
        shape, size = sample.shape, sample.shape[0] * sample.shape[1]
        if norms is None:
            raise UsageError("a line sample needs the line norms of the whole matrix")
    else:
        w = as_matrix(w)
        shape, size = w.shape, w.size
    n = min(shape)
    k = tail_size(n, k_policy)
    how = spectral_method(shape, mode, cfg)
    if sample is not None:
        how = replace(how, sampled_lines=sample.lines.size)
    norms = line_norms(w) if norms is None else norms
    imb = imbalance_from_norms(norms)
    fro = norms.frobenius_sq
    nan = float("nan")
    if fro == 0.0:
        zero = tuple((m, "zero matrix") for m in ("alpha", "dominance", "imbalance"))
        return SpectralMetrics(shape, n, k, nan, 0.0, 0.0, nan, imb.row_cv, imb.col_cv, imb.value,
                               how.method, how.sampled_lines, zero)
    scale = gram_scale(fro, size)

    if sample is not None:
        lines = _Lines(scaled_copy(sample.values, scale), np.arange(sample.lines.size), max(shape),
                       lambda dtype: sample.product(dtype, scale))
    else:
        x = long_side_view(scaled_copy(w, scale))
        drawn = _draw_lines(np.random.default_rng(rng_seed), x.shape[0], how.sampled_lines) if how.sampled_lines else None
        lines = _Lines(x, drawn, x.shape[0], lambda dtype: gram_operator(x, dtype))
    spec = _spectrum_or_bound(lines, n, k, how, cfg, rng_seed, norms, scale)
    undefined = (("alpha", spec.why_no_alpha),) if spec.why_no_alpha else ()
    lam = max(spec.lam_max, 0.0) / (scale * scale)
    return SpectralMetrics(shape, n, k, spec.alpha, math.sqrt(lam), fro, min(lam / fro, 1.0),
                           imb.row_cv, imb.col_cv, imb.value, spec.method, how.sampled_lines, undefined)


@dataclass(frozen=True)
class _Lines:
    """Where the Gram's lines come from: rows `lines` of x (None: every row), out of `population` lines
    of the long side, and the operator of the whole matrix (for sigma_1 after a sample)."""
    x: np.ndarray
    lines: np.ndarray | None
    population: int
    full: Callable[[type], Operator]

    def sampled(self) -> np.ndarray:
        whole = self.lines is None or self.lines.size == self.x.shape[0]
        return self.x if whole else self.x[self.lines]


def _spectrum_or_bound(x: _Lines, n: int, k: int, how: SpectralMethod, cfg: SpectralConfig, rng_seed: int,
                       norms: LineNorms, scale: float) -> _Spectrum:
    """_spectrum in the configured precision, else in float64 (method "+float64"), else the bound
    sigma_1 >= the largest row or column norm (method "line-norm-bound", no alpha)."""
    first = _PRECISIONS[cfg.precision]
    for dtype in dict.fromkeys((first, np.float64)):
        try:
            spec = _spectrum(x, n, k, how, cfg, rng_seed, dtype)
        except np.linalg.LinAlgError:
            continue
        return spec if dtype is first else replace(spec, method=spec.method + "+float64")
    bound = max(float(norms.row_sq.max()), float(norms.col_sq.max())) * scale * scale
    return _Spectrum(float("nan"), bound, "line-norm-bound", "the eigensolver did not converge (float32 nor float64)")


def _spectrum(src: _Lines, n: int, k: int, how: SpectralMethod, cfg: SpectralConfig, rng_seed: int,
              dtype: type) -> _Spectrum:
    """Alpha and lambda_max of X^T X in `dtype` (LinAlgError if LAPACK does not converge)."""
    rng = np.random.default_rng(rng_seed)
    if how.sampled_lines:   # the draw that chose the lines, so that rng continues as it did
        _draw_lines(rng, src.population, how.sampled_lines)
    lines = src.lines
    if how.krylov:
        # Products X^T (X V) instead of forming the Gram: 2*block*depth*L*N multiply-adds against L*N^2/2,
        # cheaper whenever N > 4*block*depth (the quadrature only runs for N > exact_max_dim).
        quad = block_krylov_quadrature(gram_operator(src.sampled(), dtype), n, cfg.krylov_block, cfg.krylov_depth,
                                       rng, dtype)
        nodes, weights, start = quad.nodes, quad.weights, quad.top_vectors[:, :SIGMA1_BLOCK]
        if lines is not None:
            nodes = nodes * (src.population / lines.size)   # the sampled Gram is rescaled to the full one
    else:
        nodes, weights, start = exact_eigenvalues(gram(src.x, lines, dtype, src.population)), None, None
    zero_tol = ZERO_TOL * math.sqrt(n) * float(np.finfo(dtype).eps) * float(nodes[0])
    alpha, why = hill_fit(nodes, weights, k, zero_tol)
    method = how.method
    if how.krylov and math.isnan(alpha):
        # The quadrature put x_min on the zero eigenvalues (rank <= ~k): settle it exactly.
        alpha, why = hill_fit(exact_eigenvalues(gram(src.x, lines, dtype, src.population)), None, k, zero_tol)
        method = how.method.replace("krylov", "exact")
    # A sampled Gram estimates the bulk; sigma_1 (and so dominance) is recomputed on the full matrix,
    # warm-started from the sampled run's top Ritz vectors: 3-5 products instead of 8 when lambda_1 is
    # separated, and at most 5 lose nothing against 8 from a random start in a tight top cluster
    # (docs/metrics.md).
    lam_max = (top_eigenvalue(src.full(dtype), n, rng, SIGMA1_BLOCK, SIGMA1_DEPTH, dtype, start,
                              SIGMA1_RTOL) if lines is not None else float(nodes[0]))
    return _Spectrum(alpha, lam_max, method, why)
