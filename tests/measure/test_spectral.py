"""Spectral / structural metrics against independent computations (numpy.linalg.svd in float64)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from prism_native.errors import PrismError
from prism_native.measure import (SpectralConfig, hill_alpha, matrix_imbalance, spectral_method, spectral_metrics,
                                  spectral_position, tail_size)


def _svd_lambdas(w: np.ndarray) -> np.ndarray:
    return np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2  # descending


def _reference_hill(lam: np.ndarray, k: int) -> float:
    return 1.0 + k / sum(math.log(lam[i] / lam[k]) for i in range(k))


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _planted(n: int, alpha: float, rng: np.random.Generator, rows: int | None = None) -> np.ndarray:
    """U diag(s) V^T whose s^2 are the exact quantiles of a Pareto law with density ~ lambda^-alpha."""
    m = rows or n
    lam = (np.arange(1, n + 1) / (n + 1)) ** (-1.0 / (alpha - 1.0))
    u = _orthogonal(m, rng)[:, :n]
    v = _orthogonal(n, rng)
    return ((u * np.sqrt(lam)) @ v.T).astype(np.float32)


def _heavy(m: int, n: int, rng: np.random.Generator, df: float = 3.0) -> np.ndarray:
    return (rng.standard_t(df, size=(m, n)) / math.sqrt(m)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Small LAPACK calls with several OpenBLAS threads on a busy 2-core box ran 20x slower (measured)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


RNG = np.random.default_rng(1234)
SHAPES = [(40, 60), (60, 40), (200, 200), (300, 128)]


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_metrics_match_svd(shape):
    w = _heavy(*shape, RNG)
    m = spectral_metrics(w, "exact")
    lam = _svd_lambdas(w)
    k = tail_size(min(shape))
    assert m.n_eigs == min(shape) and m.k == k and m.method == "exact"
    assert m.alpha == pytest.approx(_reference_hill(lam, k), rel=1e-3)
    assert m.spectral_norm == pytest.approx(math.sqrt(lam[0]), rel=1e-5)
    assert m.frobenius_sq == pytest.approx(lam.sum(), rel=1e-6)
    assert m.dominance == pytest.approx(lam[0] / lam.sum(), rel=1e-5)
    assert m.stable_rank == pytest.approx(lam.sum() / lam[0], rel=1e-5)
    assert m.alpha_weighted == pytest.approx(m.alpha * math.log10(lam[0]), rel=1e-3)


def test_default_equals_exact_for_small_matrices():
    w = _heavy(300, 500, RNG)
    assert spectral_metrics(w) == spectral_metrics(w, "exact")


def test_float32_matches_float64_to_three_digits():
    w = _heavy(256, 384, RNG)
    a = spectral_metrics(w, "exact")
    b = spectral_metrics(w, "exact", config=SpectralConfig(precision="float64"))
    for f in ("alpha", "spectral_norm", "dominance"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=5e-4)


def test_tail_size_policies():
    assert tail_size(50) == 10 and tail_size(4096) == 409
    assert tail_size(4096, "median") == 2047 and tail_size(4097, "median") == 2048
    assert tail_size(100, 7) == 7
    for bad in ("bogus", 0, -3):
        with pytest.raises(PrismError):
            tail_size(100, bad)


def test_median_policy_uses_alphapruning_xmin():
    w = _heavy(101, 80, RNG)
    lam = _svd_lambdas(w)
    k = tail_size(80, "median")
    assert lam[k] == pytest.approx(np.sort(lam)[80 // 2])  # AlphaPruning's x_min: lambda_asc[N // 2]
    assert spectral_metrics(w, "exact", k_policy="median").alpha == pytest.approx(_reference_hill(lam, k), rel=1e-3)


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_planted_power_law_is_recovered(alpha):
    # Hill's bias on exact quantiles is k / (k + 1 - ln(2 pi k) / 2) - 1 = +3.9% of (alpha - 1) at k = 50.
    w = _planted(500, alpha, np.random.default_rng(7))
    got = spectral_metrics(w, "exact").alpha
    assert got - 1 == pytest.approx((alpha - 1) * 1.039, rel=0.01)


def test_hill_on_weighted_measure_equals_unit_weights():
    lam = np.sort(RNG.pareto(2.0, 200) + 1)[::-1]
    a = hill_alpha(lam, None, 20, 0.0)
    assert a == pytest.approx(_reference_hill(lam, 20))
    # splitting every eigenvalue into two half-weight nodes describes the same distribution
    assert hill_alpha(np.repeat(lam, 2), np.full(400, 0.5), 20, 0.0) == pytest.approx(a)


KRYLOV = SpectralConfig(exact_max_dim=0, krylov_block=48, krylov_depth=8)


def test_randomised_quadrature_error_small_cases():
    # measured rms 1.6% on these (5 seeds) (see docs/metrics.md); sigma_1 converges to float32 accuracy
    errs = []
    for seed in range(3):
        w = _heavy(900, 1000, np.random.default_rng(seed))
        exact = spectral_metrics(w, "exact")
        est = spectral_metrics(w, config=KRYLOV, rng_seed=seed)
        assert est.method == "krylov"
        assert est.spectral_norm == pytest.approx(exact.spectral_norm, rel=1e-5)
        assert est.dominance == pytest.approx(exact.dominance, rel=1e-4)
        errs.append(est.alpha / exact.alpha - 1)
    assert max(abs(e) for e in errs) < 0.06
    assert math.sqrt(np.mean(np.square(errs))) < 0.04


def test_randomised_mode_recovers_planted_law():
    w = _planted(900, 3.0, np.random.default_rng(3))
    exact = spectral_metrics(w, "exact").alpha
    assert spectral_metrics(w, config=KRYLOV).alpha == pytest.approx(exact, rel=0.05)


def test_sampled_long_side_keeps_sigma1_exact():
    w = _heavy(20000, 96, RNG)
    cfg = SpectralConfig(gram_flop_budget=1e7, min_sample_ratio=8.0)
    est = spectral_metrics(w, config=cfg)
    exact = spectral_metrics(w, "exact")
    assert est.method == "sampled-exact" and est.sampled_lines == int(1e7 // 96 ** 2)
    assert est.spectral_norm == pytest.approx(exact.spectral_norm, rel=1e-5)
    assert est.dominance == pytest.approx(exact.dominance, rel=1e-4)
    assert est.alpha == pytest.approx(exact.alpha, rel=0.15)
    assert est.imbalance == exact.imbalance and est.frobenius_sq == exact.frobenius_sq


def test_sampled_krylov_sigma1_from_warm_start():
    """The full-matrix sigma_1 run starts from the sampled quadrature's top Ritz vectors."""
    w = _heavy(6000, 256, RNG)
    cfg = SpectralConfig(gram_flop_budget=1e8, min_sample_ratio=4.0, exact_max_dim=0, krylov_block=16,
                         krylov_depth=6)
    est = spectral_metrics(w.T, config=cfg)
    exact = spectral_metrics(w, "exact")
    assert est.method == "sampled-krylov" and est.sampled_lines == 1525
    assert est.spectral_norm == pytest.approx(exact.spectral_norm, rel=1e-5)


def test_line_norms_any_layout():
    from prism_native.measure.structure import line_norms
    w = RNG.standard_normal((37, 53)).astype(np.float32)
    for view in (w, w.T, w[::2, 1::3]):   # row-major, transposed view, strided copy
        got = line_norms(view)
        sq = view.astype(np.float64) ** 2
        np.testing.assert_allclose(got.row_sq, sq.sum(axis=1), rtol=1e-12)
        np.testing.assert_allclose(got.col_sq, sq.sum(axis=0), rtol=1e-12)
        assert got.frobenius_sq == pytest.approx(float(sq.sum()), rel=1e-12)


def test_randomised_mode_is_deterministic_per_seed():
    w = _heavy(700, 700, RNG)
    a, b = (spectral_metrics(w, config=KRYLOV, rng_seed=5) for _ in range(2))
    assert a == b


def test_spectral_method_for_model_shapes():
    assert spectral_method((4096, 4096)).method == "krylov"
    assert spectral_method((4096, 14336)).method == "krylov"
    assert spectral_method((14336, 4096)).sampled_lines == 0          # 4 N lines would be more than there are
    p = spectral_method((151936, 4096))                                 # embedding: 4 N sampled lines (biased, documented)
    assert p.method == "sampled-krylov" and p.sampled_lines == 4 * 4096
    assert spectral_method((151936, 4096), config=SpectralConfig(gram_flop_budget=3e12)).method == "krylov"
    assert spectral_method((151936, 4096), config=SpectralConfig(gram_flop_budget=6e11)).sampled_lines == int(6e11 // 4096 ** 2)
    assert spectral_method((576, 576)).method == "exact" and spectral_method((1, 4096)).method == "exact"
    assert spectral_method((151936, 4096), "exact").method == "exact"
    with pytest.raises(PrismError):
        spectral_method((4, 4), "fast")


def test_rank_deficiency():
    rng = np.random.default_rng(5)
    def low(r):
        return (rng.standard_normal((120, r)) @ rng.standard_normal((r, 100))).astype(np.float32)
    assert math.isnan(spectral_metrics(low(8)).alpha)          # rank 8 <= k = 10
    w = low(30)
    lam = _svd_lambdas(w)
    assert spectral_metrics(w).alpha == pytest.approx(_reference_hill(lam, 10), rel=1e-3)
    # Krylov path: the quadrature cannot resolve x_min near the zero eigenvalues -> exact fallback
    w = (rng.standard_normal((400, 12)) @ rng.standard_normal((12, 300))).astype(np.float32)
    m = spectral_metrics(w, config=SpectralConfig(exact_max_dim=0, krylov_block=8, krylov_depth=8),
                         k_policy=10)
    assert m.alpha == pytest.approx(_reference_hill(_svd_lambdas(w), 10), rel=1e-3)


def test_degenerate_shapes_and_zero_matrix():
    w = RNG.standard_normal((1, 64)).astype(np.float32)
    m = spectral_metrics(w)
    assert math.isnan(m.alpha) and m.dominance == pytest.approx(1.0)
    assert m.spectral_norm == pytest.approx(float(np.linalg.norm(w.astype(np.float64))), rel=1e-6)
    assert m.row_cv == 0.0
    z = spectral_metrics(np.zeros((30, 20), np.float32))
    assert z.spectral_norm == 0.0 and all(math.isnan(v) for v in (z.alpha, z.dominance, z.imbalance))
    assert math.isnan(spectral_metrics(np.zeros((2, 3)), config=KRYLOV).alpha)


def test_bad_inputs_raise_prism_error():
    for bad in (np.ones(5, np.float32), np.ones((0, 3), np.float32), np.ones((3, 3), np.int32)):
        with pytest.raises(PrismError):
            spectral_metrics(bad)
    w = np.ones((4, 4), np.float32)
    w[1, 2] = np.nan
    with pytest.raises(PrismError):
        spectral_metrics(w)
    with pytest.raises(PrismError):
        spectral_metrics(np.ones((4, 4), np.float32), config=SpectralConfig(precision="float16"))


def test_imbalance_hand_made():
    w = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)   # row norms 5, 0: CV 1; column norms 3, 4: CV 1/7
    m = spectral_metrics(w)
    assert m.row_cv == pytest.approx(1.0) and m.col_cv == pytest.approx(1 / 7)
    assert m.imbalance == pytest.approx(1.0) == matrix_imbalance(w)
    w = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)  # rows equal; columns sqrt2, 0, 0
    assert matrix_imbalance(w) == pytest.approx(math.sqrt(2.0))
    assert matrix_imbalance(np.ones((7, 9), np.float32)) == 0.0


def test_position_prior_toy_chain():
    s = np.exp([1.0, 2.0, -1.0, 0.5])
    p = spectral_position(s)
    ln = np.log(s)
    for i in range(4):
        assert p.log_before[i] == pytest.approx(ln[:i].sum())
        assert p.log_after[i] == pytest.approx(ln[i + 1:].sum())
        g = np.log1p(s)
        assert p.depth[i] == pytest.approx(g[:i].sum() / (g[:i].sum() + g[i + 1:].sum()))
    assert np.all(np.diff(p.depth) > 0) and p.depth[0] == 0.0 and p.depth[-1] == 1.0
    np.testing.assert_allclose(spectral_position([3.0] * 5).depth, np.linspace(0, 1, 5))
    assert spectral_position([2.0]).depth[0] == 0.5


def test_position_prior_edge_cases():
    p = spectral_position([0.0, 2.0, 2.0])
    assert p.log_after[0] == pytest.approx(2 * math.log(2.0)) and p.log_before[1] == -math.inf
    assert not np.any(np.isnan(p.depth))
    np.testing.assert_allclose(spectral_position([0.0, 0.0, 0.0]).depth, [0.0, 0.5, 1.0])
    for bad in ([], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(PrismError):
            spectral_position(bad)
