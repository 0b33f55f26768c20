"""`--prune-layers L0,L1,...`: drop whole blocks and renumber the rest, as llama-quantize does.

tools/quantize/quantize.cpp parse_layer_prune reads the list (std::stoi per comma-separated token,
sorted, duplicates removed); src/llama-quant.cpp remap_layer renames each tensor while walking them in
llama's order, and llama_model_quantize_impl then sets {arch}.block_count to the number of blocks kept.
The imatrix is still looked up under the original names (remap_imatrix maps them back).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import RecipeError
from ..llama.ftypes import stoi

_BLK = re.compile(r"blk\.(\d+)\.")     # remap_layer's std::regex, searched anywhere in the name


def parse_prune_layers(text: str) -> tuple[int, ...]:
    """parse_layer_prune: every token a non-negative integer (std::stoi prefix), sorted and unique."""
    ids = []
    for tok in text.split(","):
        v = stoi(tok)
        if v is None or v < 0:
            raise RecipeError(f"--prune-layers: invalid layer id '{tok}'")
        ids.append(v)
    return tuple(sorted(set(ids)))


@dataclass(frozen=True)
class Pruning:
    """Original tensor name -> name in the output, or None when the tensor's block is pruned."""

    names: dict[str, str | None]
    block_count: int              # remap_layer's next id after the last tensor: the blocks kept

    @classmethod
    def of(cls, names_in_llama_order: Iterable[str], prune: tuple[int, ...]) -> Pruning:
        """remap_layer over the tensors in the order llama-quantize visits them."""
        mapped: dict[int, str] = {}
        next_id = 0
        out: dict[str, str | None] = {}
        for name in names_in_llama_order:
            m = _BLK.search(name)
            if m is None:
                out[name] = name
                continue
            blk = int(m.group(1))
            if blk not in mapped:
                if blk in prune:
                    mapped[blk] = ""
                elif blk < prune[0]:
                    mapped[blk] = str(blk)
                    next_id = blk + 1
                else:
                    mapped[blk] = str(next_id)
                    next_id += 1
            new = mapped[blk]
            out[name] = None if not new else name[:m.start(1)] + new + name[m.end(1):]
        return cls(out, next_id)
