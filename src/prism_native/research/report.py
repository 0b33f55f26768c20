"""What `eval` writes: results.csv, results.json, results.md (a model-card table) and pareto.png."""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from .._version import __version__
from .evaluate import BASELINE_SERIES, SERIES_PRISM, SERIES_REFERENCE, Results, Row

CSV_FIELDS = ("method", "series", "target", "file_bytes", "size_mib", "bpw", "llama_quantize_bpw", "ppl", "ppl_err",
              "kld_mean", "kld_mean_err", "kld_median", "kld_p99", "kld_p999", "kld_max", "same_top", "same_top_err",
              "rms_dp", "ln_ppl_ratio", "chunks", "n_ctx", "predicted_bytes", "budget_bytes", "seconds")
PLOT_HINT = "pip install 'prism-native[plot]' (or matplotlib)"


def ordered(results: Results) -> list[Row]:
    """Reference first, then by size."""
    return [results.reference] + sorted(results.rows, key=lambda r: (r.file_bytes, r.method))


def best_fits(rows: Sequence[Row]) -> dict[str, Row | None]:
    """For every prism_native row: the llama.cpp baseline with the lowest mean KLD whose file is no
    larger than the plan's file or size budget (None when none fits)."""
    base = [r for r in rows if r.series in BASELINE_SERIES]
    out: dict[str, Row | None] = {}
    for r in rows:
        if r.series == SERIES_PRISM:
            fits = [b for b in base if b.file_bytes <= max(r.file_bytes, r.budget_bytes or 0)]
            out[r.method] = min(fits, key=lambda b: b.m.kld_mean) if fits else None
    return out


def frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points (smaller x and smaller y are better), by increasing x."""
    best = math.inf
    out = []
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1])):
        if points[i][1] < best:
            best = points[i][1]
            out.append(i)
    return out


def write_csv(results: Results, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in ordered(results):
            w.writerow({k: ("" if v is None else v) for k, v in r.to_json().items()})


def to_json(results: Results) -> dict[str, Any]:
    s = results.setup
    fits = best_fits(results.rows)
    return {"tool": f"prism_native {__version__}", "model": {"path": str(s.model.path), "name": s.model.name,
                                                            "n_params": s.model.n_params},
            "text": {"path": str(results.text), "bytes": results.text.stat().st_size},
            "n_ctx": s.ppl.n_ctx, "chunks": results.reference.m.chunks, "imatrix": s.imatrix,
            "reference": results.reference.to_json(),
            "rows": [r.to_json() for r in ordered(results)[1:]],
            "best_fit": {k: (v.method if v else None) for k, v in fits.items()}, "skipped": results.skipped}


def _f(v: float, fmt: str) -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, fmt)


def _kld(v: float) -> str:
    return _f(v, ".5f" if not math.isfinite(v) or v >= 1e-3 else ".2e")


def markdown(results: Results) -> str:
    s = results.setup
    ref = results.reference
    lines = [f"# {s.model.name}: quantization quality", "",
             f"Perplexity and KL divergence against `{ref.method}` ({s.model.path.name}) on "
             f"`{results.text.name}`: {ref.m.chunks} chunks of {ref.m.n_ctx} tokens (llama-perplexity scores "
             f"the second half of each chunk){'; imatrix ' + Path(s.imatrix).name if s.imatrix else ''}. "
             "Size is the whole file; BPW = 8 x size / parameters.", "",
             "| Method | Size (MiB) | BPW | PPL | Mean KLD | 99% KLD | Same top |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for r in ordered(results):
        same = "100%" if r.series == SERIES_REFERENCE else _f(r.m.same_top, ".2f") + "%"
        lines.append(f"| {r.method} | {r.mib:.2f} | {r.bpw:.3f} | {r.m.ppl:.4f} ± {r.m.ppl_err:.4f} | "
                     f"{_kld(r.m.kld_mean)} | {_kld(r.m.kld_p99)} | {same} |")
    fits = best_fits(results.rows)
    if fits:
        lines += ["", "prism_native against the best llama.cpp baseline of this run that fits in the same size:", "",
                  "| prism_native | Size (MiB) | Mean KLD | best baseline that fits | Size (MiB) | Mean KLD "
                  "| KLD ratio |",
                  "|---|--:|--:|---|--:|--:|--:|"]
        prism = {r.method: r for r in results.rows}
        for name, b in fits.items():
            p = prism[name]
            if b is None:
                lines.append(f"| {name} | {p.mib:.2f} | {_kld(p.m.kld_mean)} | (none fits) | | | |")
            else:
                ratio = p.m.kld_mean / b.m.kld_mean if b.m.kld_mean > 0 else math.nan
                lines.append(f"| {name} | {p.mib:.2f} | {_kld(p.m.kld_mean)} | {b.method} | {b.mib:.2f} | "
                             f"{_kld(b.m.kld_mean)} | {_f(ratio, '.3f')} |")
    if results.skipped:
        lines += ["", "Not measured:", ""] + [f"- {s}" for s in results.skipped]
    return "\n".join(lines) + "\n"


def pareto_png(results: Results, path: Path) -> bool:
    """KLD and PPL against size, one series per method family, the frontier marked. False (with a
    message) when matplotlib is missing: the other outputs do not need it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"pareto.png skipped: matplotlib is not installed; {PLOT_HINT}", file=sys.stderr)
        return False
    rows = results.rows
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    metrics = (("mean KL divergence vs reference", lambda r: r.m.kld_mean, False),
               ("perplexity", lambda r: r.m.ppl, True))
    series = sorted({r.series for r in rows}, key=lambda s: (s == SERIES_PRISM, s))
    markers = {SERIES_PRISM: "*"}
    for ax, (label, get, with_ref) in zip(axes, metrics):
        for ser in series:
            pts = [r for r in rows if r.series == ser]
            ax.scatter([r.mib for r in pts], [get(r) for r in pts], label=ser, marker=markers.get(ser, "o"),
                       s=110 if ser == SERIES_PRISM else 40, zorder=3)
            for r in pts:      # the series says prism_native: the point's label only needs the budget
                ax.annotate(r.method.removeprefix(SERIES_PRISM + " "), (r.mib, get(r)), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        pts = [(r.mib, get(r)) for r in rows]
        idx = frontier(pts)
        fx, fy = [pts[i][0] for i in idx], [pts[i][1] for i in idx]
        ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1, label="Pareto frontier", zorder=2)
        ax.scatter(fx, fy, facecolors="none", edgecolors="black", s=160, linewidths=1.2, zorder=4)
        if with_ref:
            ax.axhline(results.reference.m.ppl, color="grey", linewidth=0.8, linestyle=":",
                       label=f"{results.reference.method}")
        ax.set_yscale("log")
        if with_ref:           # perplexities read better as plain numbers
            from matplotlib.ticker import ScalarFormatter
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel("file size (MiB)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results.setup.model.name} on {results.text.name} ({results.reference.m.chunks} x "
                 f"{results.reference.m.n_ctx} tokens)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_all(results: Results, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.csv", out_dir / "results.json", out_dir / "results.md"]
    write_csv(results, written[0])
    written[1].write_text(json.dumps(to_json(results), indent=1, allow_nan=False) + "\n")
    written[2].write_text(markdown(results))
    if pareto_png(results, out_dir / "pareto.png"):
        written.append(out_dir / "pareto.png")
    return written
