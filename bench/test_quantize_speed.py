"""Single-thread quantization speed: our scalar and SIMD paths against ggml_quantize_chunk, per type,
and the fused error kernel against ggml quantizing the same tensor to one type. The low-bit types
are also timed on THREADS threads, against ggml on as many threads.

extra_info of every benchmark: values, Mvalues_per_s and, where the reference was timed in the
same session, speedup_vs_ggml / speedup_vs_scalar (reference time / this time).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from benchutil import THREADS, Timings, run_timed

import prism_native
from prism_native import _native, qtypes
from prism_native.quant import quant_errors, quantize

CPU = prism_native.cpu_features()
ACTIVE = CPU["active"]
CASES = ("none", "imat")
# ggml and scalar first: later paths of the same type report ratios against them
PATHS = ("ggml", "scalar", "default", "avx2")
# ggml_quantize_chunk aborts on these without an imatrix (ggml_quantize_requires_imatrix)
NEEDS_IMATRIX = {d["name"] for d in _native.type_traits() if d.get("requires_imatrix")}
# ggml's low-bit half (issue 31), timed on THREADS threads as well
LOW_BIT = ("IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0", "Q2_0", "Q1_0",
           "MXFP4", "NVFP4")
FUSED_GROUPS = {
    "K": ("Q2_K", "Q3_K", "Q4_K", "Q6_K"),       # the planner's usual candidate set
    "IQ4+Q8_0": ("IQ4_NL", "IQ4_XS", "Q8_0"),
}


def implemented_types() -> list[str]:
    return sorted((t.name for t in qtypes.all_types().values() if t.native),
                  key=lambda n: qtypes.get(n).ggml_type)


def _isa(path: str) -> str:
    return "" if path == "default" else path


def _quantize_cases():
    for t in implemented_types():
        for case in CASES:
            for path in PATHS:
                yield pytest.param(t, case, path, id=f"{t}-{case}-{path}")


def _runner(tname: str, path: str, x: np.ndarray, im, ggml):
    if path == "ggml":
        return lambda: ggml.quantize(tname, x, im)
    return lambda: quantize(x, tname, im, nthreads=1, isa=_isa(path))


def _skip_reason(path: str, ggml) -> str | None:
    if path == "ggml" and ggml is None:
        return "PRISM_GGML_LIB not set"
    if path == "avx2" and ("avx2" not in CPU["usable"] or ACTIVE == "avx2"):
        return "avx2 not usable here, or already the default"
    return None


def _speed_info(benchmark, nvalues: int, best: float | None) -> None:
    benchmark.extra_info["values"] = nvalues
    if best:
        benchmark.extra_info["Mvalues_per_s"] = round(nvalues / best / 1e6, 3)


def _setup(benchmark, tensor, imatrix, ggml, tname: str, case: str, path: str, threads: int):
    """Skips what cannot run; names the benchmark; returns the case's importance weights (or None)."""
    reason = _skip_reason(path, ggml)
    if reason:
        pytest.skip(reason)
    if case == "none" and tname in NEEDS_IMATRIX:
        pytest.skip(f"{tname} needs an imatrix (ggml refuses it without one)")
    benchmark.group = f"quantize {tname} {case}" + (f" {threads} threads" if threads > 1 else "")
    benchmark.extra_info.update(type=tname, case=case, path=path, isa=ACTIVE if path == "default" else path,
                                shape=list(tensor.shape), threads=threads)
    return imatrix if case == "imat" else None


@pytest.mark.parametrize("tname,case,path", list(_quantize_cases()))
def test_quantize(benchmark, timings: Timings, tensor, imatrix, ggml, tname, case, path):
    im = _setup(benchmark, tensor, imatrix, ggml, tname, case, path, 1)
    best = run_timed(benchmark, _runner(tname, path, tensor, im, ggml))
    _speed_info(benchmark, tensor.size, best)
    if best is None:
        return
    timings.record((tname, case, path), best)
    if path == "ggml":
        return
    if ggml is not None:
        ref = timings.get((tname, case, "ggml"), _runner(tname, "ggml", tensor, im, ggml))
        benchmark.extra_info["speedup_vs_ggml"] = round(ref / best, 2)
    if path != "scalar":
        ref = timings.get((tname, case, "scalar"), _runner(tname, "scalar", tensor, im, ggml))
        benchmark.extra_info["speedup_vs_scalar"] = round(ref / best, 2)


def _threaded_cases():
    for t in LOW_BIT:
        for case in CASES:
            for path in ("ggml", "default"):
                yield pytest.param(t, case, path, id=f"{t}-{case}-{path}-t{THREADS}")


def _threaded_runner(tname: str, path: str, x: np.ndarray, im, ggml):
    if path != "ggml":
        return lambda: quantize(x, tname, im, nthreads=THREADS)
    # ggml_quantize_chunk on THREADS Python threads, one contiguous slice of rows each (ctypes releases
    # the GIL), as llama-quantize divides a tensor between its threads
    parts = np.array_split(x, THREADS)

    def run():
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(lambda p: ggml.quantize(tname, p, im), parts))
    return run


@pytest.mark.parametrize("tname,case,path", list(_threaded_cases()))
def test_quantize_threads(benchmark, timings: Timings, tensor, imatrix, ggml, tname, case, path):
    """THREADS threads: ours (nthreads=THREADS, the GIL released) against ggml on as many threads."""
    if tname not in implemented_types():
        pytest.skip(f"{tname} not implemented")
    im = _setup(benchmark, tensor, imatrix, ggml, tname, case, path, THREADS)
    best = run_timed(benchmark, _threaded_runner(tname, path, tensor, im, ggml))
    _speed_info(benchmark, tensor.size, best)
    if best is None:
        return
    timings.record((tname, case, f"{path}-t{THREADS}"), best)
    if path != "ggml" and ggml is not None:
        ref = timings.get((tname, case, f"ggml-t{THREADS}"), _threaded_runner(tname, "ggml", tensor, im, ggml))
        benchmark.extra_info["speedup_vs_ggml"] = round(ref / best, 2)


@pytest.mark.parametrize("path", ("default", "avx2"))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("group", list(FUSED_GROUPS))
def test_fused_errors(benchmark, timings: Timings, tensor, imatrix, ggml, group, case, path):
    """quant_errors (quantize + dequantize + error and boundary statistics, every type of the group,
    one pass, one thread; default ISA and AVX2) against ggml_quantize_chunk to each single type."""
    types = FUSED_GROUPS[group]
    missing = [t for t in types if not qtypes.get(t).native]
    if missing:
        pytest.skip(f"not implemented yet: {', '.join(missing)}")
    if path == "avx2" and ("avx2" not in CPU["usable"] or ACTIVE == "avx2"):
        pytest.skip("avx2 not usable here, or already the default")
    im = imatrix if case == "imat" else None
    benchmark.group = f"fused errors {group}"
    isa = ACTIVE if path == "default" else path
    benchmark.extra_info.update(types=list(types), case=case, isa=isa, shape=list(tensor.shape), threads=1)
    best = run_timed(benchmark, lambda: quant_errors(tensor, types, im, nthreads=1, isa=_isa(path)))
    _speed_info(benchmark, tensor.size, best)
    if best is None or ggml is None:
        return
    total = 0.0
    for t in types:
        ref = timings.get((t, case, "ggml"), _runner(t, "ggml", tensor, im, ggml))
        benchmark.extra_info[f"speedup_vs_ggml_{t}"] = round(ref / best, 2)
        total += ref
    benchmark.extra_info["speedup_vs_ggml_all_types"] = round(total / best, 2)
