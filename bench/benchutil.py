"""Timing helpers of the speed benchmarks (shared by bench/conftest.py and the bench modules)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

COLS = 4096
ROWS = int(os.environ.get("PRISM_BENCH_ROWS", "1024"))
ROUNDS = int(os.environ.get("PRISM_BENCH_ROUNDS", "3"))
LAYERS = int(os.environ.get("PRISM_BENCH_LAYERS", "2"))     # layers of the 8B-shape model (conftest.model_8b)
THREADS = int(os.environ.get("PRISM_BENCH_THREADS", str(os.cpu_count() or 1)))

Key = tuple  # (label, case, path), e.g. ("Q4_K", "imat", "ggml")


@dataclass
class Timings:
    """Best round time (seconds) of every benchmark run so far, so later ones can report ratios."""

    best: dict[Key, float] = field(default_factory=dict)

    def record(self, key: Key, seconds: float) -> None:
        self.best[key] = seconds

    def get(self, key: Key, fn: Optional[Callable[[], object]] = None) -> Optional[float]:
        """The recorded time, else (when fn is given) the best of ROUNDS direct timings of fn."""
        if key not in self.best and fn is not None:
            runs = []
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t0)
            self.best[key] = min(runs)
        return self.best.get(key)


def run_timed(benchmark, fn: Callable[[], object]) -> Optional[float]:
    """Runs fn under pytest-benchmark (ROUNDS rounds, one call each); returns the best round time."""
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.min)
