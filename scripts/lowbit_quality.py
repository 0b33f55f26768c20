#!/usr/bin/env python3
"""Quality below Q3_K_M (issue 31) and the data-free imatrix's KLD (issue 32), on held-out float models.

For one model and one importance-matrix mode (none, a real llama-imatrix file, the data-free estimate, or
a uniform matrix) this runs `prism-native eval` on the held-out text with

  * the llama.cpp frontier files that can be "the best file that fits" a target: every built-in mix and
    --pure type of eval's frontier whose exact size (simulated, the bytes llama-quantize writes) is no
    larger than the largest target (measuring the rest cannot change the answer, and costs the time of a
    perplexity run each);
  * the extra mixes asked with --also (e.g. Q3_K_M,Q4_K_M for issue 32);
  * prism_native plans at the file size of each --sizes-of target, analysed with the same importance
    matrix as the baselines, with the default weights (a model in no fit) or, with --held-out, the weights
    fitted without the model (a zoo model).

Every measurement goes into one cache per model (OUT/MODEL/eval/cache, the reference logits made once);
each mode's results are copied to OUT/MODEL/<mode>.json. `--summary` prints the table of docs/results.md:
per target, the best llama.cpp file no larger than it, the plan, the ratio of their mean KLD.

    python scripts/lowbit_quality.py MODEL.gguf --out lowbit --mode real --imatrix real.imatrix.gguf \\
        --sizes-of IQ2_M,IQ3_XXS --text persuasion-b.txt --llama-cpp /path/to/llama.cpp/build/bin
    python scripts/lowbit_quality.py MODEL.gguf --out lowbit --mode none --sizes-of Q2_K,IQ3_S ...
    python scripts/lowbit_quality.py --summary lowbit
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


def prism(*args: str) -> None:
    cmd = [sys.executable, "-m", "prism_native", *args]
    log(" ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")


def frontier_sizes(model_path: Path, imatrix: bool) -> dict[str, int]:
    """Exact file size of every frontier spec llama-quantize writes in this mode (refused ones left out)."""
    from prism_native.llama.decide import TensorSpec
    from prism_native.llama.diagnose import imatrix_needed
    from prism_native.llama.sizes import estimate
    from prism_native.read.model import open_model
    from prism_native.research.evaluate import FRONTIER, baseline_method
    model = open_model(model_path)
    tensors = [TensorSpec.of(t, model.arch) for t in model.tensors]
    out = {}
    for spec in FRONTIER:
        sim = baseline_method(spec, requantize=False, imatrix=imatrix).command.simulate(tensors, hparams=model.hparams)
        if not imatrix and imatrix_needed(model, sim):
            continue
        est = estimate(model, {r.name: r.written or "" for r in sim.tensors},
                       quantized=[r.name for r in sim.tensors if r.quantized])
        out[spec] = est.file_bytes
    return out


def run(args: argparse.Namespace) -> None:
    model = Path(args.model)
    name = model.stem
    work = Path(args.out) / name
    work.mkdir(parents=True, exist_ok=True)
    targets = [s.strip() for s in args.sizes_of.split(",") if s.strip()]
    also = [s.strip() for s in args.also.split(",") if s.strip()]
    plain = args.mode.startswith("none")
    imatrix = None if plain else args.imatrix
    if not plain and not imatrix:
        raise SystemExit(f"--mode {args.mode} needs --imatrix FILE")
    sizes = frontier_sizes(model, imatrix is not None)
    limit = max((sizes[t] for t in targets), default=0)
    # 1 KiB of slack: the imatrix keys llama-quantize adds are not in the simulation
    fits = [s for s, b in sizes.items() if b <= limit + 1024] if args.frontier else []
    baselines = list(dict.fromkeys(fits + targets + also))
    log(f"{name} [{args.mode}]: baselines {','.join(baselines)}")
    cmd = ["eval", str(model), "--text", args.text, "--baselines", ",".join(baselines), "--llama-cpp", args.llama_cpp,
           "--ctx", str(args.ctx), "--chunks", str(args.chunks), "-t", str(args.threads), "-o", str(work / "eval"),
           "--keep", "--quiet"]
    if targets and args.plans:
        analysis = work / f"analysis-{args.mode}.prism.json"
        if not analysis.exists():
            prism("analyze", str(model), "-o", str(analysis), "-t", str(args.threads), "-q",
                  *(["--imatrix", imatrix] if imatrix else []))
        cmd += ["--sizes-of", ",".join(targets), "--from", str(analysis)]
    if imatrix:
        cmd += ["--imatrix", imatrix]
    cmd += held_out_args(args.held_out, name)
    prism(*cmd)
    res = json.loads((work / "eval" / "results.json").read_text())
    res["mode"], res["targets"] = args.mode, targets
    (work / f"{args.mode}.json").write_text(json.dumps(res, indent=1))
    for f in ("results.md", "results.csv"):
        shutil.copy(work / "eval" / f, work / f"{args.mode}-{f}")


def held_out_args(fit_file: str | None, name: str) -> list[str]:
    """--weights and --distortion of the fit that left `name` out (fit-weights' held_out_fits), for a model
    of the fit; none for a model in no fit (the shipped weights are then held out already)."""
    if not fit_file:
        return []
    held = json.loads(Path(fit_file).read_text())["held_out_fits"]
    fit = next((v for k, v in held.items() if k.endswith(f"({name})") or k == name), None)
    if fit is None:
        raise SystemExit(f"{fit_file} has no fit that leaves {name} out")
    weights = ",".join(f"{k}={v}" for k, v in fit["weights"].items())
    return ["--weights", weights, "--distortion", str(fit["beta"])]


def _k(v: float | None) -> str:
    return "-" if v is None else (f"{v:.5f}" if v >= 1e-3 else f"{v:.2e}")


def cell(r: dict) -> str:
    return f"{_k(r['kld_mean'])} ({_k(r['kld_p99'])}, {r['same_top']:.2f}%)"


def summary(out: Path) -> str:
    """Per model, mode and target: the best llama.cpp file no larger than the target against the plan."""
    lines = ["| model | imatrix | target size | best llama.cpp file that fits | its KLD (p99, same top) | "
             "prism_native | its KLD (p99, same top) | ratio |", "|---|---|---|---|--:|--:|--:|--:|"]
    for f in sorted([*out.glob("*/real.json"), *out.glob("*/none.json")]):
        res = json.loads(f.read_text())
        rows = res["rows"]
        base = [r for r in rows if r["series"] != "prism_native"]
        for t in res.get("targets", []):
            tgt = next((r for r in base if r["method"] == t), None)
            plan = next((r for r in rows if r["series"] == "prism_native" and r["target"] == f"size of {t}"), None)
            if tgt is None or plan is None:
                continue
            fit = [r for r in base if r["file_bytes"] <= tgt["file_bytes"] and r["kld_mean"] is not None]
            best = min(fit, key=lambda r: r["kld_mean"])
            lines.append(f"| {f.parent.name} | {res['mode']} | {t}, {tgt['size_mib']:.3f} MiB | {best['method']} "
                         f"({best['size_mib']:.3f} MiB) | {cell(best)} | {plan['size_mib']:.3f} MiB | {cell(plan)} | "
                         f"**{plan['kld_mean'] / best['kld_mean']:.3f}** |")
    return "\n".join(lines) + "\n"


GAP_MIXES = ("Q3_K_M", "Q4_K_M", "IQ3_XXS", "IQ2_M")
NEED_IMATRIX = ("IQ3_XXS", "IQ2_M")


def gap_table(out: Path) -> str:
    """Issue 32's table: KLD with no imatrix (a uniform one where llama-quantize needs one), the data-free
    estimate and the real matrix, and the share of the none -> real gap the estimate closes; then the plans
    at the sizes of IQ2_M and IQ3_XXS made with each matrix."""
    lines = ["| model | file | none | data-free | real | data-free / none | real / none | gap closed |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for d in sorted(p for p in out.iterdir() if (p / "eval" / "cache" / "measurements.json").exists()):
        by: dict[tuple[str, str], dict] = {}
        for mode in ("none", "none-extra", "uniform", "data-free", "real", "real-extra"):
            f = d / f"{mode}.json"
            if f.exists():
                for r in json.loads(f.read_text())["rows"]:
                    name = r["method"] if r["series"] != "prism_native" else f"prism_native {r['target']}"
                    by[(mode.removesuffix("-extra"), name)] = r
        names = list(GAP_MIXES) + [f"prism_native size of {t}" for t in NEED_IMATRIX]
        for name in names:
            none = by.get(("uniform" if name in NEED_IMATRIX else "none", name))
            df, real = by.get(("data-free", name)), by.get(("real", name))
            if df is None or real is None:
                continue
            n, e, r = (None if none is None else none["kld_mean"]), df["kld_mean"], real["kld_mean"]
            # the gap is defined only when the real matrix beats none
            gap = "-" if n is None else (f"{(n - e) / (n - r):.2f}" if r < n else "n/a (real >= none)")
            tag = " (uniform)" if none is not None and name in NEED_IMATRIX else ""
            lines.append(f"| {d.name} | {name} | {_k(n)}{tag} | {_k(e)} | {_k(r)} | "
                         f"{'-' if n is None else f'{e / n:.3f}'} | {'-' if n is None else f'{r / n:.3f}'} | {gap} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?")
    p.add_argument("--out", required=True)
    p.add_argument("--summary", action="store_true", help="print the ratio table of everything under --out")
    p.add_argument("--gap", action="store_true", help="print the imatrix table (issue 32) of everything under --out")
    p.add_argument("--mode", default="none", help="none, real, data-free, uniform, or any label; none* means no imatrix, the others need --imatrix")
    p.add_argument("--imatrix")
    p.add_argument("--sizes-of", default="", help="targets: plans at these files' sizes")
    p.add_argument("--also", default="", help="more baselines to measure")
    p.add_argument("--no-frontier", dest="frontier", action="store_false",
                   help="measure only the targets and --also, not every frontier file that fits")
    p.add_argument("--no-plans", dest="plans", action="store_false")
    p.add_argument("--held-out", metavar="FIT_JSON", help="a model of the fit (the zoo): plan with the weights fitted "
                   "without it (e.g. docs/results/zoo/fit-weights.json)")
    p.add_argument("--text")
    p.add_argument("--llama-cpp")
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--chunks", type=int, default=96)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.summary or args.gap:
        print((summary if args.summary else gap_table)(Path(args.out)), end="")
        return 0
    if not (args.model and args.text and args.llama_cpp):
        p.error("MODEL, --text and --llama-cpp are needed to measure")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
