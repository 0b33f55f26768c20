"""Throughput at scale: a one-layer slice of DeepSeek-V3 and of Kimi-K2 (their real dimensions: hidden
7168, experts of 7168 x 2048, MLA attention, the shared expert and the router), BF16, split into several
files with the split keys, timed end to end in one run: `cat` of the input to /dev/null (the I/O
baseline), analyze, plan, quantize (ours, to the plan and to Q4_K_M) and llama-quantize Q4_K_M, each a
separate process with a cold page cache for the input (posix_fadvise DONTNEED on the input's files
only), with its peak resident memory and the bytes it read from the disk (GNU time's %M and %I: the
bytes read do not depend on the machine's load, the seconds do).

Heavy (gigabytes of disk, minutes): skipped unless PRISM_BENCH_MOE=1. PRISM_BENCH_MOE_EXPERTS sets the
routed experts of the slice ("16,24" by default: DeepSeek-V3's 256 and Kimi-K2's 384 divided by 16),
PRISM_BENCH_MOE_DIR where the files go (default: pytest's tmp). Results: extra_info of the benchmark and
PRISM_BENCH_MOE_OUT (JSON; default moe-scale.json in the working directory). docs/performance.md
extrapolates them to the whole models.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import synth
from support.moe_shapes import DEEPSEEK_V3, KIMI_K2, MoeShape

from prism_native.tools.binaries import locate_tool

pytestmark = pytest.mark.skipif(os.environ.get("PRISM_BENCH_MOE") != "1", reason="set PRISM_BENCH_MOE=1 (heavy)")
SRC = Path(__file__).resolve().parents[1] / "src"
EXPERTS = [int(x) for x in os.environ.get("PRISM_BENCH_MOE_EXPERTS", "16,24").split(",")]
THREADS = int(os.environ.get("PRISM_BENCH_THREADS", "2"))
SPLIT_TENSORS = 4           # tensors per part: the slice is a split set of several files
BUDGET = "4.5"              # bpw of the planned quantization
_RESULTS: dict[str, dict] = {}


def _fill(seed: int):
    """BF16 N(0, 0.02^2) for matrices, float32 for norms, router and biases; in 16 Mi-value chunks."""
    rng = np.random.default_rng(seed)

    def fill(name: str, shape: tuple[int, ...], nbytes: int):
        if len(shape) == 1 or "gate_inp" in name:
            yield (rng.standard_normal(nbytes // 4, dtype=np.float32) * 0.02).tobytes()
            return
        left = nbytes // 2
        while left:
            k = min(left, 1 << 24)
            bits = (rng.standard_normal(k, dtype=np.float32) * 0.02).view(np.uint32)
            yield (bits >> 16).astype(np.uint16).tobytes()
            left -= k
    return fill


def _drop_cache(paths: list[Path]) -> None:
    """Evict the input's pages (only these files) so that every step reads them from disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _timed(argv: list[str], inputs: list[Path], log: Path, env: dict | None = None) -> dict:
    """Wall and CPU seconds and peak RSS (MB) of one process, input cold; its output in `log`. GNU time
    measures: a child forked from this (large) Python process would report its parent's resident size
    as its own ru_maxrss until exec."""
    _drop_cache(inputs)
    stats = log.with_suffix(".time")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        r = subprocess.run(["/usr/bin/time", "-f", "%M %U %S %I", "-o", str(stats), *argv], stdout=out,
                           stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, f"{argv[:3]} failed: {log.read_text()[-2000:]}"
    rss_kb, user, sys_, blocks = stats.read_text().split()[-4:]
    return {"seconds": round(seconds, 2), "cpu_seconds": round(float(user) + float(sys_), 2),
            "peak_rss_mb": round(int(rss_kb) / 1024, 1), "read_gb": round(int(blocks) * 512 / 1e9, 3)}


def _llama_quantize_fits(table: dict) -> str | None:
    """None when llama-quantize can run here, else why not: it converts each tensor to one float32 buffer
    (llama_tensor_dequantize_impl) beside the quantized output, so the largest tensor bounds its memory."""
    largest = max(int(np.prod(shape)) for shape, _ in table.values())
    need = largest * 4 + largest                     # float32 copy + a Q4_K_M-or-larger output buffer
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/meminfo") as f:
        avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), avail)
    if need <= 0.9 * avail:
        return None
    return f"its largest tensor needs {need / 1e9:.1f} GB (float32 copy and output) of {avail / 1e9:.1f} GB available"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@pytest.mark.parametrize("shape,experts", [(DEEPSEEK_V3, EXPERTS[0]), (KIMI_K2, EXPERTS[-1])],
                         ids=["deepseek-v3", "kimi-k2"])
def test_moe_slice_end_to_end(benchmark, tmp_path_factory, shape: MoeShape, experts: int) -> None:
    quantize_bin = locate_tool("llama-quantize")
    if quantize_bin is None:
        pytest.skip("needs llama-quantize (PRISM_LLAMA_QUANTIZE)")
    root = Path(os.environ.get("PRISM_BENCH_MOE_DIR") or tmp_path_factory.mktemp("moe"))
    work = root / shape.name.split()[0].lower()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    one = dataclasses.replace(shape, n_dense=0)          # the slice: one MoE layer
    t0 = time.perf_counter()
    table = one.tensors(range(1), experts=experts, embeddings=False)
    parts = synth.write_layout(work / "slice.gguf", "deepseek2", one.kv(n_layer=1, experts=experts), table,
                               split_max_tensors=SPLIT_TENSORS, fill=_fill(experts))
    written = time.perf_counter() - t0
    first = str(parts[0])
    py = [sys.executable, "-m", "prism_native"]
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}"}
    res: dict = {"model": shape.name, "experts": experts, "experts_real": shape.n_expert, "parts": len(parts),
                 "input_bytes": sum(p.stat().st_size for p in parts), "threads": THREADS,
                 "write_seconds": round(written, 1), "load_before": _load()}
    res["cat"] = _timed(["sh", "-c", 'cat "$@" > /dev/null', "cat", *map(str, parts)], parts, work / "cat.log")
    res["analyze"] = _timed([*py, "analyze", first, "-o", str(work / "r.json"), "-t", str(THREADS), "-q",
                             "--no-resume"], parts, work / "analyze.log", env)
    res["plan"] = _timed([*py, "plan", first, "--from", str(work / "r.json"), "--bpw", BUDGET], parts,
                         work / "plan.log", env)
    res["dry_run"] = _timed([*py, "plan", "--dry-run", first, "--bpw", BUDGET], parts, work / "dry.log", env)
    res["quantize_plan"] = _timed([*py, "quantize", first, "--from", str(work / "r.json"), "--bpw", BUDGET,
                                   "-o", str(work / "plan.gguf"), "-t", str(THREADS), "-q"], parts,
                                  work / "quantize_plan.log", env)
    (work / "plan.gguf").unlink()
    res["quantize_q4km"] = _timed([*py, "quantize", first, "-o", str(work / "ours.gguf"), "-t", str(THREADS), "-q",
                                   "--", "Q4_K_M"], parts, work / "quantize_q4km.log", env)
    no_room = _llama_quantize_fits(table)
    if no_room is None:
        res["llama_quantize_q4km"] = _timed([str(quantize_bin), first, str(work / "llama.gguf"), "Q4_K_M",
                                             str(THREADS)], parts, work / "llama_quantize.log")
        res["identical_q4km"] = _same_bytes(work / "ours.gguf", work / "llama.gguf")
    else:
        res["llama_quantize_q4km"] = {"skipped": no_room}
    res["load_after"] = _load()
    per_tensor = json.loads((work / "r.json").read_text())["tensors"]
    res["analyze_tensor_seconds"] = {n: round(t["seconds"], 2) for n, t in per_tensor.items()}
    cat = res["cat"]["seconds"]
    job = res["analyze"]["seconds"] + res["plan"]["seconds"] + res["quantize_plan"]["seconds"]
    gb = res["input_bytes"] / 1e9
    res["ratios"] = {"analyze_vs_cat": round(res["analyze"]["seconds"] / cat, 2),
                     "analyze_read_vs_input": round(res["analyze"]["read_gb"] / gb, 3),
                     "quantize_read_vs_input": round(res["quantize_q4km"]["read_gb"] / gb, 3),
                     "quantize_vs_cat": round(res["quantize_q4km"]["seconds"] / cat, 2),
                     "quantize_plan_vs_cat": round(res["quantize_plan"]["seconds"] / cat, 2)}
    if no_room is None:
        lq = res["llama_quantize_q4km"]["seconds"]
        res["ratios"].update(job_vs_llama_quantize=round(job / lq, 3),
                             quantize_vs_llama_quantize=round(res["quantize_q4km"]["seconds"] / lq, 3))
    benchmark.extra_info.update(res)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)    # the timings above are the measurement
    _RESULTS[shape.name] = res
    out = Path(os.environ.get("PRISM_BENCH_MOE_OUT", "moe-scale.json"))
    out.write_text(json.dumps(_RESULTS, indent=1))
    if not os.environ.get("PRISM_BENCH_MOE_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    assert res.get("identical_q4km", True)


def _same_bytes(a: Path, b: Path) -> bool:
    """Compared in 64 MiB pieces: the outputs are gigabytes."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 26)
            if x != fb.read(1 << 26):
                return False
            if not x:
                return True
