#!/usr/bin/env python3
"""Held-out validation of the calibration-free sensitivity on the trained float test models
(scripts/train_test_model.py), with llama.cpp's own tools.

1. Every model: analyze, then ablate by class and by layer (one unit at Q3_K / Q4_K, the rest at
   Q8_0; KLD from llama-perplexity on the first half of *Persuasion*, a novel no model was trained on).
2. `fit-weights` on all the ablations: the fit on all models (the weights to ship) and, for every model,
   the fit on the others only with its held-out scores.
3. Every model: `eval --baselines frontier --sizes-of Q3_K_M,Q4_K_M` on the *second* half of
   Persuasion, the plans made with the weights fitted without that model. With --imatrix, the same with
   an importance matrix (llama-imatrix on --imatrix-text) for baselines and plans alike.
Every step is skipped when its output exists, so an interrupted run resumes.

    python scripts/zoo_validation.py --models /work/models --out docs/results/zoo \\
        --llama-cpp /work/llama/build-base/bin [--imatrix] [--free head,embedding,first]

Needs prism_native importable (pip install . or PYTHONPATH=src) and one F16 .gguf per model folder.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from get_eval_text import main as get_text  # noqa: E402

from prism_native.cli.fit import LAMBDA_GRID  # noqa: E402
from prism_native.plan.score import Weights  # noqa: E402

LOW, HIGH, SIZES_OF = "Q3_K,Q4_K", "Q8_0", "Q3_K_M,Q4_K_M"
METRICS = tuple(Weights().to_json())


def log(msg: str) -> None:
    print(f"[zoo] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], out: Path | None = None) -> str:
    log(" ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    if out is not None:
        out.write_text(r.stdout)
    return r.stdout


def prism(*args: str, out: Path | None = None) -> str:
    return run([sys.executable, "-m", "prism_native", *args], out)


def texts(work: Path, deb: str | None) -> tuple[Path, Path, Path]:
    """Persuasion split at a paragraph near its middle (A: ablations, B: evaluation), and an Emma excerpt
    for the importance matrices (a training novel, as a user's calibration text would be)."""
    a, b, emma = work / "persuasion-a.txt", work / "persuasion-b.txt", work / "emma.txt"
    deb_args = ["--deb", deb] if deb else []
    if not (a.exists() and b.exists()):
        whole = work / "persuasion-full.txt"
        get_text(["-o", str(whole), "--max-bytes", str(10**8), *deb_args])
        text = whole.read_text()
        cut = text.find("\n\n", len(text) // 2)
        a.write_text(text[:cut].strip() + "\n")
        b.write_text(text[cut:].strip() + "\n")
        whole.unlink()
    if not emma.exists():
        get_text(["-o", str(emma), "--novel", "emma", "--max-bytes", "200000", *deb_args])
    return a, b, emma


def find_gguf(model_dir: Path) -> Path:
    cands = sorted(model_dir.glob("*.gguf"))
    if not cands:
        raise SystemExit(f"{model_dir}: no .gguf file")
    return cands[0]


def measure_args(args: argparse.Namespace) -> list[str]:
    return ["--llama-cpp", args.llama_cpp, "--ctx", str(args.ctx), "--chunks", str(args.chunks),
            "-t", str(args.threads), "-q"]


def imatrix_for(name: str, gguf: Path, out: Path, emma: Path, args: argparse.Namespace) -> Path:
    f = out / name / "imatrix.gguf"
    if not f.exists():
        run([str(Path(args.llama_cpp) / "llama-imatrix"), "-m", str(gguf), "-f", str(emma), "-o", str(f),
             "-c", str(args.ctx), "--chunks", "64", "-t", str(args.threads)])
    return f


def ablations(name: str, gguf: Path, out: Path, text_a: Path, args: argparse.Namespace) -> dict[str, Path]:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    results = d / "analysis.prism.json"
    if not results.exists():
        prism("analyze", str(gguf), "-o", str(results), "-t", str(args.threads), "-q")
    files = {"results": results}
    for by in ("class", "layer"):
        f = d / f"ablation-{by}.json"
        if not f.exists():
            prism("ablate", str(gguf), "--from", str(results), "--by", by, "--low", LOW, "--high", HIGH,
                  "--text", str(text_a), "-o", str(d / "ablate-cache"), "--json-out", str(f), *measure_args(args))
        files[by] = f
    return files


def fit_all(files: dict[str, dict[str, Path]], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """fit-weights over every model's class and layer ablations (it fits leaving each model out too)."""
    f = out / "fit.json"
    if not f.exists():
        fixed = ",".join(f"{m}=0" for m in METRICS if m not in args.free.split(","))
        paths = [str(p) for v in files.values() for p in (v["class"], v["layer"])]
        prism("fit-weights", *paths, "--lambda", str(args.lam), "--beta", "fit", "--json-out", str(f),
              *(["--fix", fixed] if fixed else []), out=out / "fit.txt")
    return json.loads(f.read_text())


def spearman_by_kind(files: dict[str, dict[str, Path]], fits: dict[str, Any]) -> dict[str, Any]:
    """Held-out Spearman of predicted vs measured damage, classes and layers apart, beside errors alone."""
    from prism_native.research import fit
    out: dict[str, Any] = {}
    for n, f in files.items():
        h = next(v for k, v in fits["held_out_fits"].items() if k.endswith(f"({n})") or k == n)
        for kind in ("class", "layer"):
            d = fit.models_from_files([f[kind]])[0]
            out.setdefault(n, {})[kind] = {
                "records": len(d.damage),
                "held_out": fit.score(d, Weights(**h["weights"]), h["beta"]).spearman,
                "errors_only": fit.score(d, fit.ERRORS_ONLY, 1.0).spearman}
    return out


def weights_arg(fit: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:.6g}" for k, v in fit["weights"].items())


def evaluate(name: str, gguf: Path, files: dict[str, Path], fit: dict[str, Any], text_b: Path,
             args: argparse.Namespace, out: Path, imatrix: Path | None) -> dict[str, Any]:
    tag = "eval-imatrix" if imatrix else "eval"
    d = out / name / tag
    results = files["results"]
    if imatrix is not None:
        results = out / name / "analysis-imatrix.prism.json"
        if not results.exists():
            prism("analyze", str(gguf), "-o", str(results), "--imatrix", str(imatrix), "-t", str(args.threads), "-q")
    if not (d / "results.json").exists():
        prism("eval", str(gguf), "--from", str(results), "--text", str(text_b), "--baselines", "frontier",
              "--sizes-of", SIZES_OF, "--weights", weights_arg(fit), "--distortion", str(fit["beta"]),
              *measure_args(args), "-o", str(d), *(["--imatrix", str(imatrix)] if imatrix else []),
              out=out / name / f"{tag}.md")
    return json.loads((d / "results.json").read_text())


def _k(v: float | None) -> str:
    return "-" if v is None else (f"{v:.5f}" if v >= 1e-3 else f"{v:.2e}")


def _cell(r: dict[str, Any]) -> str:
    return f"{_k(r['kld_mean'])} ({_k(r['kld_p99'])}, {r['same_top']:.2f}%)"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The tables of docs/results.md's zoo section: every held-out plan against the best llama.cpp
    file that fits, and the held-out Spearman by classes and layers."""
    lines = ["| model | imatrix | target size | best llama.cpp file that fits | its KLD (p99, same top) | "
             "prism_native (held out) | its KLD (p99, same top) | ratio |", "|---|---|---|---|--:|--:|--:|--:|"]
    for n, row in summary["models"].items():
        for mode in ("plain", "imatrix"):
            if mode not in row:
                continue
            rows = {r["method"]: r for r in row[mode]["rows"]}
            for plan, best in row[mode]["best_fit"].items():
                p, b = rows[plan], rows.get(best or "")
                mib = f"{p['file_bytes'] / 2**20:.2f} MiB"
                target = f"{plan.removeprefix('prism_native size of ')}, {mib}"
                im = "yes" if mode == "imatrix" else "no"
                if b is None:
                    lines.append(f"| {n} | {im} | {target} | none fits | - | {mib} | {_cell(p)} | - |")
                    continue
                ratio = p["kld_mean"] / b["kld_mean"] if b["kld_mean"] else math.inf
                lines.append(f"| {n} | {im} | {target} | {best} ({b['file_bytes'] / 2**20:.2f} MiB) | {_cell(b)} | "
                             f"{mib} | {_cell(p)} | **{ratio:.3f}** |")
    lines += ["", "| model | classes: held out | classes: errors only | layers: held out | layers: errors only |",
              "|---|--:|--:|--:|--:|"]
    for n, kinds in summary["spearman"].items():
        c, la = kinds["class"], kinds["layer"]
        lines.append(f"| {n} | {c['held_out']:.3f} | {c['errors_only']:.3f} | {la['held_out']:.3f} | "
                     f"{la['errors_only']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="folder of model folders (each with one F16 .gguf)")
    p.add_argument("--only", default="", help="comma-separated model folder names to run (default: all); the "
                   "fit also uses the ablations of models already under --out")
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--llama-cpp", required=True, help="folder with llama-quantize, llama-perplexity, llama-imatrix")
    p.add_argument("--deb", help="r-cran-janeaustenr .deb (default: apt-get download)")
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--chunks", type=int, default=96)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--free", default="head,embedding,first,linear,tied",
                   help="the weights fitted; the others are held at 0")
    p.add_argument("--lambda", dest="lam", default=LAMBDA_GRID,
                   help="fit-weights' ridge penalty, or candidates chosen by cross-validation (default %(default)s)")
    p.add_argument("--imatrix", action="store_true", help="also evaluate with importance matrices")
    p.add_argument("--no-eval", action="store_true", help="stop after the ablations (and the fit)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text_a, text_b, emma = texts(out, args.deb)
    names = [n for n in args.only.split(",") if n] or sorted(
        q.name for q in Path(args.models).iterdir() if q.is_dir() and list(q.glob("*.gguf")))
    ggufs = {n: find_gguf(Path(args.models) / n) for n in names}
    files = {n: ablations(n, g, out, text_a, args) for n, g in ggufs.items()}
    # the fit uses every model ablated under --out, also those --only leaves out of this run
    for q in sorted(out.iterdir()):
        if q.is_dir() and q.name not in files and all((q / f"ablation-{by}.json").exists() for by in ("class", "layer")):
            files[q.name] = {by: q / f"ablation-{by}.json" for by in ("class", "layer")}
    if len(files) < 2 or args.no_eval:
        return 0
    fits = fit_all(files, out, args)
    held = fits["held_out_fits"]
    old = out / "summary.json"
    summary: dict[str, Any] = {"fit_all": fits["fit"], "spearman": spearman_by_kind(files, fits),
                               "models": json.loads(old.read_text())["models"] if old.exists() else {}}
    for n, g in ggufs.items():
        label = next(k for k in held if k.endswith(f"({n})") or k == n)
        row: dict[str, Any] = {"held_out_fit": held[label]}
        for im in ([None, imatrix_for(n, g, out, emma, args)] if args.imatrix else [None]):
            res = evaluate(n, g, files[n], held[label], text_b, args, out, im)
            row["imatrix" if im else "plain"] = {
                "best_fit": res.get("best_fit"),
                "rows": [{k: r.get(k) for k in ("method", "file_bytes", "kld_mean", "kld_p99", "same_top", "ppl")}
                         for r in res["rows"]]}
        summary["models"][n] = row
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(summary_markdown(summary))
    log(f"written {out / 'summary.json'}, {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
