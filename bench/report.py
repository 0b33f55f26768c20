"""Markdown tables from pytest-benchmark JSON files of bench/test_quantize_speed.py.

    pytest bench/ --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json [more.json ...]

With several files (repeated runs on a shared, noisy machine) every cell is the best speed seen over
the runs, and the ratios are recomputed from those best speeds; a second table gives the spread of
the same-run ratios (ours / ggml within each file), which is what a loaded machine can vouch for.
One table per thread count (the low-bit types are also timed on several threads).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

PATHS = ("ggml", "scalar", "default", "avx2")


def _fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.1f}×"


def _threads(e: dict) -> int:
    return int(e.get("threads", 1))


def quantize_table(benches: list[dict], threads: int = 1) -> list[str]:
    best: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    isa = "default"
    for b in benches:
        e = b["extra_info"]
        if "path" in e and "Mvalues_per_s" in e and _threads(e) == threads:
            cell = best[(e["type"], e["case"])]
            cell[e["path"]] = max(cell.get(e["path"], 0.0), e["Mvalues_per_s"])
            if e["path"] == "default":
                isa = e["isa"]
    out = [f"| type | imatrix | ggml | scalar | {isa} | avx2 | {isa} / ggml | avx2 / ggml | scalar / ggml "
           f"| {isa} / scalar |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (t, case), p in best.items():
        speed = [_fmt(round(p[k], 1) if k in p else None) for k in PATHS]
        ratio = [_ratio(p.get(k), p.get("ggml")) for k in ("default", "avx2", "scalar")]
        ratio.append(_ratio(p.get("default"), p.get("scalar")))
        out.append(f"| {t} | {'yes' if case == 'imat' else 'no'} | " + " | ".join(speed + ratio) + " |")
    return out


def spread_table(runs: list[list[dict]], threads: int = 1) -> list[str]:
    """min / median / max over the runs of the same-run ratio default / ggml, per type and case."""
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    for benches in runs:
        speed: dict[tuple[str, str, str], float] = {}
        for b in benches:
            e = b["extra_info"]
            if "path" in e and "Mvalues_per_s" in e and _threads(e) == threads:
                speed[(e["type"], e["case"], e["path"])] = e["Mvalues_per_s"]
        for (t, case, path), v in speed.items():
            g = speed.get((t, case, "ggml"))
            if path == "default" and g:
                ratios[(t, case)].append(v / g)
    out = ["| type | imatrix | runs | ours / ggml: min | median | max |", "|---|---|---:|---:|---:|---:|"]
    for (t, case), r in ratios.items():
        r = sorted(r)
        mid = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
        out.append(f"| {t} | {'yes' if case == 'imat' else 'no'} | {len(r)} | {r[0]:.1f}× | {mid:.1f}× | "
                   f"{r[-1]:.1f}× |")
    return out


def fused_table(benches: list[dict], ggml: dict[tuple[str, str], float]) -> list[str]:
    best: dict[tuple[tuple[str, ...], str, str], float] = {}
    for b in benches:
        e = b["extra_info"]
        if "types" in e and "Mvalues_per_s" in e:
            key = (tuple(e["types"]), e["case"], e.get("isa", "?"))
            best[key] = max(best.get(key, 0.0), e["Mvalues_per_s"])
    out = ["| types | imatrix | isa | fused Mval/s (whole set) | vs ggml, each single type | vs ggml, all types |",
           "|---|---|---|---:|---|---:|"]
    for (types, case, isa), v in sorted(best.items()):
        g = [ggml.get((t, case)) for t in types]
        each = ", ".join(f"{t} {_ratio(v, gt)}" for t, gt in zip(types, g))
        total = None if None in g else 1.0 / sum(1.0 / gt for gt in g)  # ggml speed for all types in a row
        out.append(f"| {' '.join(types)} | {'yes' if case == 'imat' else 'no'} | {isa} | {v:.1f} | {each} | "
                   f"{_ratio(v, total)} |")
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    runs = [json.loads(Path(a).read_text()) for a in argv]
    benches = [b for r in runs for b in r["benchmarks"]]
    ggml: dict[tuple[str, str], float] = {}
    for b in benches:
        e = b["extra_info"]
        if e.get("path") == "ggml" and "Mvalues_per_s" in e:
            k = (e["type"], e["case"])
            ggml[k] = max(ggml.get(k, 0.0), e["Mvalues_per_s"])
    for threads in sorted({_threads(b["extra_info"]) for b in benches if "path" in b["extra_info"]}):
        what = "one thread" if threads == 1 else f"{threads} threads (ggml on as many Python threads)"
        print(f"Million values per second, {what} (best of the runs).\n")
        print("\n".join(quantize_table(benches, threads)))
        if len(runs) > 1:
            print(f"\nSame-run ratio default / ggml over the {len(runs)} runs, {what}.\n")
            print("\n".join(spread_table([r["benchmarks"] for r in runs], threads)))
        print()
    print("\n".join(fused_table(benches, ggml)))
    mi = runs[0].get("machine_info", {})
    print(f"\nmachine: {mi.get('cpu', {}).get('brand_raw', '?')}, python {mi.get('python_version', '?')}, "
          f"runs: {', '.join(r.get('datetime', '?') for r in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
