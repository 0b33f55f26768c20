#!/usr/bin/env python3
"""Damage of one type on a few tensors, everything else kept F16 (docs/results.md, "The whole size range":
the IQ3_S diagnostics).

Quantizes the tensors matching --pattern to --type with llama-quantize (the rest stays F16), then measures
the mean KLD against saved F16 logits (an eval cache's base-*.kld, same text/ctx/chunks). Variants:
  --dequantize    the same quantized values stored as F16 in a copy of the input (tests the type's dot
                  product: the KLD must not change)
  --rescale F     IQ3_S only: every block's scale d divided by F in place (1.033 undoes ggml's fudge factor
                  in quantize_row_iq3_s_impl)
Prints the relative error and the gain <e,w>/<w,w> of each quantized tensor, then the KLD.

    python scripts/isolate_damage.py MODEL.gguf --type IQ3_S --pattern '^blk\\.[123]\\.ffn_gate\\.weight$' \\
        --imatrix real.imatrix.gguf --logits eval/cache/base-KEY.kld --llama-cpp BIN --ctx 256 -o work [--rescale 1.033]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

IQ3_S_BLOCK = 110    # block_iq3_s: fp16 d, qs[64], qh[8], signs[32], scales[4] (ggml-common.h)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--type", required=True)
    p.add_argument("--pattern", required=True, help="llama-quantize --tensor-type regex of the tensors to quantize")
    p.add_argument("--imatrix")
    p.add_argument("--logits", required=True, help="F16 logits saved by llama-perplexity --kl-divergence-base")
    p.add_argument("--llama-cpp", required=True)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--dequantize", action="store_true")
    p.add_argument("--rescale", type=float)
    a = p.parse_args()
    out, b = Path(a.out), Path(a.llama_cpp)
    out.mkdir(parents=True, exist_ok=True)
    q = out / f"{a.type}.gguf"
    subprocess.run([str(b / "llama-quantize"), *(["--imatrix", a.imatrix] if a.imatrix else []),
                    "--tensor-type", f"{a.pattern}={a.type}", "--tensor-type", "weight$=F16", a.model, str(q), a.type, "1"],
                   check=True, capture_output=True)
    ref = {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(a.model).tensors}
    target = q
    if a.rescale:
        if a.type != "IQ3_S":
            raise SystemExit("--rescale is for IQ3_S")
        target = out / f"{a.type}-rescaled.gguf"
        shutil.copy(q, target)
        with open(target, "r+b") as f:
            for t in GGUFReader(target).tensors:
                if t.tensor_type.name == "IQ3_S":
                    blocks = np.array(t.data).reshape(-1).view(np.uint8).copy().reshape(-1, IQ3_S_BLOCK)
                    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
                    blocks[:, :2] = (d / a.rescale).astype(np.float16).view(np.uint8).reshape(-1, 2)
                    f.seek(t.data_offset)
                    f.write(blocks.tobytes())
    quant = {t.name: t for t in GGUFReader(target).tensors if t.tensor_type.name == a.type}
    for name, t in quant.items():
        w = ref[name]
        e = dequantize(t.data, t.tensor_type).reshape(w.shape) - w
        print(f"{name}: relative error {np.sum(e * e) / np.sum(w * w):.4f}, gain {np.sum(e * w) / np.sum(w * w):+.4f}")
    if a.dequantize:
        deq = out / f"{target.stem}-dequantized.gguf"
        shutil.copy(a.model, deq)
        with open(deq, "r+b") as f:
            for t in GGUFReader(a.model).tensors:
                if t.name in quant:
                    v = dequantize(quant[t.name].data, quant[t.name].tensor_type).astype(np.float16)
                    f.seek(t.data_offset)
                    f.write(v.tobytes())
        target = deq
    log = subprocess.run([str(b / "llama-perplexity"), "-m", str(target), "-c", str(a.ctx), "-t", "1", "-b", "2048",
                          "--kl-divergence-base", a.logits, "--kl-divergence"], capture_output=True, text=True).stdout
    m = re.search(r"Mean\s+KLD:\s+([0-9.e+-]+)", log)
    print(f"{target.name}: mean KLD {m.group(1) if m else 'not printed (rerun)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
