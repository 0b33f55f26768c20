#!/usr/bin/env python3
"""The head's damage per unit of relative error, predicted from the weights (docs/metrics.md, "The head's
absolute damage is predictable from the weights").

A head error e adds h . e_v to logit v, h = RMSNorm(x) * gamma (output_norm); with independent channels and
E[xhat_j^2] = 1 the expected KLD is about 1/2 mean_v sum_j gamma_j^2 e_vj^2. Printed: that figure for the
type's real error (quantized and dequantized here, bit-exact), its ratio to the relative error, and
1/2 mean_v |gamma * w_v|^2 (the same with errors spread like the weights). Compare with `prism-native ablate
MODEL --only output` (or token_embd when tied) at the same type.

    python scripts/head_noise.py MODEL.gguf Q3_K,Q4_K
"""
from __future__ import annotations

import sys

import numpy as np

from prism_native.quant import dequantize, quantize
from prism_native.read.model import open_model


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    model = open_model(argv[0])
    head = "output.weight" if "output.weight" in model else "token_embd.weight"
    w = np.ascontiguousarray(model.read(head), dtype=np.float32)              # (vocab, d)
    g2 = np.asarray(model.read("output_norm.weight"), dtype=np.float64) ** 2
    w2 = w.astype(np.float64) ** 2
    print(f"{model.path.name}: head {head} {w.shape[0]} x {w.shape[1]}, "
          f"1/2 mean |gamma * w_v|^2 = {0.5 * float(np.mean(w2 @ g2)):.4f}")
    for t in argv[1].split(","):
        e2 = (dequantize(quantize(w, t), t, w.shape).astype(np.float64) - w) ** 2
        rel = e2.sum() / w2.sum()
        kld = 0.5 * float(np.mean(e2 @ g2))
        print(f"  {t}: relative error {rel:.5f}, predicted KLD {kld:.5f}, per unit error {kld / rel:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
