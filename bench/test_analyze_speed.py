"""analyze (default mode) vs llama-quantize Q3_K_M on a synthetic model with 7B-9B layer shapes.

The model has PRISM_BENCH_LAYERS (default 2) layers of Llama-3-8B shapes (hidden 4096, FFN 14336,
GQA 8) and a 32000-token vocabulary, in F16. llama-quantize is found through $PRISM_LLAMA_QUANTIZE or
PATH (skipped otherwise); both tools get the same threads ($PRISM_BENCH_THREADS, default all cores).
The ratio analyze / llama-quantize goes to extra_info and should stay <= 1.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from benchutil import LAYERS, THREADS


def test_analyze_vs_llama_quantize_q3_k_m(benchmark, model_8b, tmp_path):
    from prism_native.tools.binaries import locate_tool
    from prism_native.measure.analyze import Settings, analyze
    from prism_native.read.model import open_model

    binary = locate_tool("llama-quantize")
    if binary is None:
        pytest.skip("no llama-quantize (set PRISM_LLAMA_QUANTIZE)")
    t0 = time.perf_counter()
    subprocess.run([str(binary), str(model_8b), str(tmp_path / "q3km.gguf"), "Q3_K_M", str(THREADS)],
                   check=True, capture_output=True)
    t_quant = time.perf_counter() - t0
    (tmp_path / "q3km.gguf").unlink()
    model = open_model(model_8b)
    benchmark.pedantic(lambda: analyze(model, Settings(threads=THREADS)), rounds=1, iterations=1)
    t_an = benchmark.stats.stats.min
    benchmark.extra_info.update({"llama_quantize_q3_k_m_s": t_quant, "analyze_default_s": t_an,
                                 "ratio_analyze_over_quantize": t_an / t_quant, "threads": THREADS,
                                 "layers": LAYERS})
    print(f"\nanalyze {t_an:.1f} s, llama-quantize Q3_K_M {t_quant:.1f} s, ratio {t_an / t_quant:.2f} "
          f"({THREADS} threads, {LAYERS} layers)")
