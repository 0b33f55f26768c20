"""Tensor taxonomy: a GGUF tensor name -> (layer index or None, class), for any architecture.

The class is the name with its block number and its `.weight` suffix removed, so it needs no list of
architectures: `blk.12.attn_qkv.weight` -> (12, "attn_qkv"), `blk.3.ffn_up_exps.weight` ->
(3, "ffn_up_exps"), `blk.7.ssm_alpha.weight` -> (7, "ssm_alpha"), `v.blk.2.attn_q.weight` ->
(2, "v.attn_q"), `token_embd.weight` -> (None, "token_embd"), `blk.0.attn_q.bias` -> (0, "attn_q.bias").
Its `key` is the whole name with every index as '#' (`blk.#.attn_qkv.weight`): the template of an
llama-quantize --tensor-type pattern that matches the class in every layer (llama/patterns.class_pattern).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# "blk.N." at the start of the name or after a dot (vision "v.blk.N.", T5 "enc.blk.N.", audio "a.blk.N.")
_BLOCK = re.compile(r"(?:^|(?<=\.))blk\.(\d+)\.")
_WEIGHT = ".weight"

# name prefixes of the multimodal projector / encoders that llama.cpp stores next to (or instead of)
# the language model (mmproj files: "v." vision tower, "a." audio tower, "mm." projector)
_TOWERS = {"v.": "vision", "a.": "audio", "mm.": "projector", "enc.": "encoder", "dec.": "decoder"}
TOWER_ROLES = tuple(_TOWERS.values())


@dataclass(frozen=True)
class Taxon:
    layer: int | None
    cls: str
    role: str  # "dense", "expert", "shared_expert", "expert_gate", or a tower (vision, audio, ...)
    key: str   # the name with every all-digit dotted part (a layer or expert index) as '#'


def classify(name: str) -> Taxon:
    base = name[:-len(_WEIGHT)] if name.endswith(_WEIGHT) else name
    m = _BLOCK.search(base)
    if m:
        layer: int | None = int(m.group(1))
        cls = base[:m.start()] + base[m.end():]
    else:
        layer, cls = None, base
    return Taxon(layer, cls, _role(cls), ".".join("#" if p.isdigit() else p for p in name.split(".")))


def _role(cls: str) -> str:
    for prefix, tower in _TOWERS.items():
        if cls.startswith(prefix):
            return tower
    if "_shexp" in cls:
        return "shared_expert"
    if "_exps" in cls:
        return "expert"
    if cls.startswith("ffn_gate_inp") or "exp_probs" in cls:
        return "expert_gate"
    return "dense"


def layer_ranges(layers: Iterable[int]) -> str:
    """Layer numbers as ranges: [0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    xs = sorted(layers)
    parts: list[str] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(parts)
