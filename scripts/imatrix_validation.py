#!/usr/bin/env python3
"""Validate the data-free importance matrix (prism-native imatrix) against llama-imatrix's on real text.

Per model (genuine float GGUFs, e.g. the zoo of docs/results.md):
  1. the data-free estimate (and, for the Spearman table, a few variants of its assumptions);
  2. llama-imatrix on --imatrix-text (the zoo's: ~100 KB of Emma, a training novel), -c CTX;
  3. per tensor, Spearman between the estimate and the real matrix (research/imatrix_check.py);
  4. `prism-native eval` of llama.cpp's built-in mixes on --text (held-out Persuasion B): with no imatrix,
     the data-free one and the real one. IQ3_XXS and IQ2_M are refused without an imatrix, so their
     "none" is a uniform imatrix (every weight 1: the importance of no information);
  5. summary.json and summary.md: KLD per mix and imatrix, and the share of the none -> real gap that
     the data-free matrix closes.

    python scripts/imatrix_validation.py --models DIR --only austen-llama,austen-qwen3 --out imx-val \\
        --imatrix-text emma.txt --text persuasion-b.txt --llama-cpp /path/to/llama.cpp/build/bin

Each step is skipped when its output exists (the eval cache keeps finished files too).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

MIXES = ("Q3_K_M", "Q4_K_M", "IQ3_XXS", "IQ2_M")
NEED_IMATRIX = ("IQ3_XXS", "IQ2_M")
VARIANTS = {"default": {}, "means": {"means": True}, "attn-mix-1": {"attn_mix": 1.0},
            "attn-mix-0.25": {"attn_mix": 0.25}, "zipf-0": {"zipf_exponent": 0.0}}


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str]) -> None:
    log(" ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")


def find_gguf(d: Path) -> Path:
    found = sorted(p for p in d.glob("*.gguf") if "imatrix" not in p.name)
    if not found:
        raise SystemExit(f"{d}: no GGUF")
    return found[0]


def uniform_imatrix(real: Path, out: Path) -> None:
    """Every entry of `real` with weight 1 (sums 1, counts 1)."""
    from prism_native.read.imatrix import load_imatrix, write_gguf
    im = load_imatrix(real)
    write_gguf(out, {n: (np.ones((1, v.size), np.float32), np.ones(1, np.float32)) for n, v in im.entries.items()},
               ["uniform (no information)"], 0, 512)


def spearman(model_path: Path, real: Path) -> dict[str, dict[str, float]]:
    from prism_native.measure.importance import EstimateOptions, estimate_importance
    from prism_native.read.imatrix import load_imatrix
    from prism_native.read.model import open_model
    from prism_native.research.imatrix_check import by_class, compare
    model, ref = open_model(model_path), load_imatrix(real)
    out = {}
    for name, kw in VARIANTS.items():
        est = estimate_importance(model, EstimateOptions(**kw))
        rows = compare(est.to_imatrix(), ref, model)
        cls = by_class(rows)
        cls["all"] = float(np.mean([r.spearman for r in rows]))
        cls["seconds"] = est.seconds
        out[name] = cls
    return out


def eval_kld(args: argparse.Namespace, gguf: Path, work: Path, tag: str, mixes: tuple[str, ...],
             imatrix: Path | None) -> dict[str, float]:
    dest = work / f"eval-{tag}-{'-'.join(mixes)}.csv"
    if not dest.exists():
        cmd = [sys.executable, "-m", "prism_native", "eval", str(gguf), "--text", args.text, "--baselines",
               ",".join(mixes), "--llama-cpp", args.llama_cpp, "--ctx", str(args.ctx), "--chunks", str(args.chunks),
               "-t", str(args.threads), "-o", str(work / "eval"), "--quiet", "--keep"]   # --keep: the reference
        # logits are made once per model, not once per imatrix
        if imatrix is not None:
            cmd += ["--imatrix", str(imatrix)]
        run(cmd)
        (work / "eval" / "results.csv").replace(dest)
    with open(dest) as f:
        return {r["method"]: float(r["kld_mean"]) for r in csv.DictReader(f) if r["kld_mean"] and r["method"] in mixes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True)
    p.add_argument("--only", required=True, help="model folder names, comma-separated")
    p.add_argument("--out", required=True)
    p.add_argument("--imatrix-text", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--llama-cpp", required=True)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--chunks", type=int, default=96)
    p.add_argument("--imatrix-chunks", type=int, default=0, help="0: the whole --imatrix-text")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--mixes", default=",".join(MIXES), help="built-in mixes to evaluate (default %(default)s)")
    args = p.parse_args(argv)
    out = Path(args.out)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        gguf = find_gguf(Path(args.models) / name)
        work = out / name
        work.mkdir(parents=True, exist_ok=True)
        est = work / "data-free.imatrix.gguf"
        if not est.exists():
            run([sys.executable, "-m", "prism_native", "imatrix", str(gguf), "-o", str(est)])
        real = work / "real.imatrix.gguf"
        if not real.exists():
            cmd = [str(Path(args.llama_cpp) / "llama-imatrix"), "-m", str(gguf), "-f", args.imatrix_text, "-o", str(real),
                   "-c", str(args.ctx), "-t", str(args.threads)]
            run(cmd + (["--chunks", str(args.imatrix_chunks)] if args.imatrix_chunks else []))
        uniform = work / "uniform.imatrix.gguf"
        if not uniform.exists():
            uniform_imatrix(real, uniform)
        row: dict = {"model": str(gguf), "spearman": spearman(gguf, real)}
        log(f"{name}: spearman {json.dumps(row['spearman']['default'])}")
        mixes = tuple(m.strip() for m in args.mixes.split(",") if m.strip())
        if not args.no_eval:
            plain = tuple(m for m in mixes if m not in NEED_IMATRIX)
            need = tuple(m for m in mixes if m in NEED_IMATRIX)
            row["kld"] = {"none": eval_kld(args, gguf, work, "none", plain, None) if plain else {},
                          "uniform": eval_kld(args, gguf, work, "uniform", need, uniform) if need else {},
                          "data-free": eval_kld(args, gguf, work, "data-free", mixes, est),
                          "real": eval_kld(args, gguf, work, "real", mixes, real)}
        old = summary.get(name, {}).get("kld", {})
        for tag, kl in old.items():         # a run over other mixes keeps the earlier ones
            row.setdefault("kld", {}).setdefault(tag, {})
            row["kld"][tag] = {**kl, **row["kld"][tag]}
        summary[name] = row
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


def gap_closed(none: float, df: float, real: float) -> float | None:
    return None if none == real else (none - df) / (none - real)


def markdown(summary: dict) -> str:
    lines = ["| model | mix | none | data-free | real | gap closed |", "|---|---|--:|--:|--:|--:|"]
    for name, row in summary.items():
        k = row.get("kld")
        if not k:
            continue
        for mix in MIXES:
            none = k.get("none", {}).get(mix, k.get("uniform", {}).get(mix))
            df, real = k.get("data-free", {}).get(mix), k.get("real", {}).get(mix)
            if None in (none, df, real):
                continue
            g = gap_closed(none, df, real)
            tag = " (uniform)" if mix in NEED_IMATRIX else ""
            lines.append(f"| {name} | {mix} | {none:.5f}{tag} | {df:.5f} | {real:.5f} | "
                         f"{'' if g is None else f'{g:.2f}'} |")
    lines += ["", "| model | variant | all | " + "attn_q | attn_output | ffn_up | ffn_down" + " |",
              "|---|---|--:|--:|--:|--:|--:|"]
    for name, row in summary.items():
        for v, cls in row["spearman"].items():
            cells = " | ".join(f"{cls.get(c, float('nan')):.3f}" for c in ("attn_q", "attn_output", "ffn_up", "ffn_down"))
            lines.append(f"| {name} | {v} | {cls['all']:.3f} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
