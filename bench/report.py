"""Markdown tables from a pytest-benchmark JSON file of bench/test_quantize_speed.py.

    pytest bench/ --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

PATHS = ("ggml", "scalar", "default", "avx2")


def _fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


def quantize_table(benches: list[dict]) -> list[str]:
    rows: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    isa = "default"
    for b in benches:
        e = b["extra_info"]
        if "path" in e:
            rows[(e["type"], e["case"])][e["path"]] = e
            if e["path"] == "default":
                isa = e["isa"]
    out = [f"| type | imatrix | ggml Mval/s | scalar Mval/s | {isa} Mval/s | avx2 Mval/s "
           f"| {isa} / ggml | avx2 / ggml | scalar / ggml | {isa} / scalar |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (t, case), p in rows.items():
        speed = [_fmt(p.get(k, {}).get("Mvalues_per_s")) for k in PATHS]
        ratio = [_fmt(p.get(k, {}).get("speedup_vs_ggml"), "×") for k in ("default", "avx2", "scalar")]
        ratio.append(_fmt(p.get("default", {}).get("speedup_vs_scalar"), "×"))
        out.append(f"| {t} | {'yes' if case == 'imat' else 'no'} | " + " | ".join(speed + ratio) + " |")
    return out


def fused_table(benches: list[dict]) -> list[str]:
    out = ["| types | imatrix | fused Mval/s (per type set) | vs ggml, each single type | vs ggml, all types |",
           "|---|---|---:|---|---:|"]
    for b in benches:
        e = b["extra_info"]
        if "types" not in e:
            continue
        each = ", ".join(f"{t} {_fmt(e.get(f'speedup_vs_ggml_{t}'), '×')}" for t in e["types"])
        out.append(f"| {' '.join(e['types'])} | {'yes' if e['case'] == 'imat' else 'no'} | "
                   f"{_fmt(e.get('Mvalues_per_s'))} | {each} | {_fmt(e.get('speedup_vs_ggml_all_types'), '×')} |")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    data = json.loads(Path(argv[0]).read_text())
    benches = data["benchmarks"]
    print("\n".join(quantize_table(benches)))
    print()
    print("\n".join(fused_table(benches)))
    mi = data.get("machine_info", {})
    print(f"\nmachine: {mi.get('cpu', {}).get('brand_raw', '?')}, python {mi.get('python_version', '?')}, "
          f"{data.get('datetime', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
