"""quantize (prism_native writing the GGUF) against llama-quantize writing the same recipe, on the
8B-shape model of conftest.model_8b, with the same threads ($PRISM_BENCH_THREADS, default all cores).

Two ratios, measured in one run (so that the machine's load hits both sides alike):
- quantize_plan: writing a 4.5 bpw plan (analysis done beforehand, not timed) / llama-quantize running
  the plan's own command. Target <= 0.33. Two plans: the default candidate types (the plan leans on
  IQ4_XS, ggml's slowest quantizer here) and K-quants only (Q2_K..Q6_K, Q8_0: ggml's fastest).
- quantize_bpw_from_scratch: `python -m prism_native quantize MODEL --bpw 4.5 -o OUT` in a fresh
  folder (start-up, analysis, plan and writing) / the same llama-quantize run. Target <= 1.2.
Both outputs are checked to be the llama-quantize file byte for byte.
"""
from __future__ import annotations

import contextlib
import filecmp
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchutil import LAYERS, THREADS, Timings

BPW = 4.5
TYPE_SETS = {"default": None, "k-quants": "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0"}
SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture(scope="module")
def plans_8b(model_8b, tmp_path_factory):
    """types -> (plan --json of the model at BPW with those candidate types, the folder it lives in)."""
    from prism_native.cli.main import main

    made: dict[str, tuple[dict, Path]] = {}

    def get(types: str) -> tuple[dict, Path]:
        if types not in made:
            d = tmp_path_factory.mktemp(f"plan8b-{types}")
            buf = io.StringIO()
            cwd = os.getcwd()
            os.chdir(d)
            extra = ["--types", TYPE_SETS[types]] if TYPE_SETS[types] else []
            try:
                with contextlib.redirect_stdout(buf):
                    assert main(["plan", str(model_8b), "--bpw", str(BPW), "--json", "-q", "-t", str(THREADS),
                                 *extra]) == 0
            finally:
                os.chdir(cwd)
            plan = json.loads(buf.getvalue())
            (d / "plan.json").write_text(json.dumps(plan))
            made[types] = (plan, d)
        return made[types]
    return get


def _llama_quantize(plan: dict, out: Path, timings: Timings, types: str) -> float:
    from prism_native.tools.binaries import locate_tool

    binary = locate_tool("llama-quantize")
    if binary is None:
        pytest.skip("no llama-quantize (set PRISM_LLAMA_QUANTIZE)")
    key = ("llama-quantize", "plan", str(BPW), types)
    if timings.get(key) is None or not out.exists():
        argv = list(plan["argv"])
        argv[0], argv[-2] = str(binary), str(out)
        t0 = time.perf_counter()
        subprocess.run([*argv, str(THREADS)], check=True, capture_output=True)
        timings.record(key, time.perf_counter() - t0)
    return timings.best[key]


def _time_against(benchmark, fn, ref: Path, ours: Path, t_llama: float, label: str, **info: object) -> None:
    """One timed round of fn; its output must be llama-quantize's file; the ratio goes to extra_info."""
    benchmark.pedantic(fn, rounds=1, iterations=1)
    t_ours = benchmark.stats.stats.min
    assert filecmp.cmp(ref, ours, shallow=False)
    load = os.getloadavg()[0]
    benchmark.extra_info.update({"llama_quantize_s": t_llama, "prism_s": t_ours, "ratio_over_llama_quantize":
                                 t_ours / t_llama, "threads": THREADS, "layers": LAYERS, "load_avg": load, **info})
    print(f"\n{label} {t_ours:.1f} s, llama-quantize {t_llama:.1f} s, ratio {t_ours / t_llama:.3f} "
          f"({THREADS} threads, {LAYERS} layers, load {load:.1f})")


@pytest.mark.parametrize("types", list(TYPE_SETS))
def test_quantize_plan_vs_llama_quantize(benchmark, model_8b, plans_8b, timings, types):
    from prism_native.read.model import Model
    from prism_native.write.job import build_job, params_from_recipe
    from prism_native.write.quantize import write_job
    from prism_native.write.saved_plan import load_saved_plan

    plan, d = plans_8b(types)
    t_llama = _llama_quantize(plan, d / "llama.gguf", timings, types)
    saved = load_saved_plan(d / "plan.json")

    def write() -> None:
        model = Model(model_8b)
        write_job(build_job(model, params_from_recipe(saved.recipe)), d / "ours.gguf", threads=THREADS,
                  progress=False)
    _time_against(benchmark, write, d / "llama.gguf", d / "ours.gguf", t_llama,
                  f"quantize plan ({types} types, ftype {plan['recipe']['base_type']})", types=types)


def test_quantize_bpw_from_scratch_vs_llama_quantize(benchmark, model_8b, plans_8b, timings, tmp_path):
    plan, d = plans_8b("default")
    t_llama = _llama_quantize(plan, d / "llama.gguf", timings, "default")
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "prism_native", "quantize", str(model_8b), "--bpw", str(BPW), "-o", "ours.gguf",
            "-q", "-t", str(THREADS)]

    def run() -> None:
        for p in tmp_path.glob("*.prism.json"):     # from scratch: no analysis to reuse
            p.unlink()
        subprocess.run(argv, check=True, capture_output=True, cwd=tmp_path, env=env)
    _time_against(benchmark, run, d / "llama.gguf", tmp_path / "ours.gguf", t_llama,
                  f"quantize --bpw {BPW} from scratch")
