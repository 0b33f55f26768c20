"""A GGUF model as llama-quantize sees it (what `inspect` shows): architecture, parameter count, one entry
per tensor class (tensors, shapes, parameters, share, current type, whether llama-quantize quantizes it
and why not), the layer structure, and warnings (row lengths that make every 256-block type fall back,
tied embeddings, quantized sources)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .. import qtypes
from ..read.model import Model, TensorInfo, trimmed_shape
from ..read.taxonomy import TOWER_ROLES, classify, layer_ranges
from .quantizable import llama_order, not_quantized_reason

K_BLOCK = 256  # block size of the K-quants and IQ types


def _fallbacks_256() -> str:
    """'Q2_K/Q3_K -> Q4_0, ..., IQ* -> IQ4_NL' from qtypes.FALLBACK (the 256-block types)."""
    by_target: dict[str, list[str]] = {}
    for src, dst in qtypes.FALLBACK.items():
        if qtypes.get(src).block_size == K_BLOCK:
            by_target.setdefault(dst, []).append("IQ*" if src.startswith("IQ") else src)
    return ", ".join("/".join(dict.fromkeys(srcs)) + f" -> {dst}" for dst, srcs in
                     sorted(by_target.items(), key=lambda kv: kv[0].startswith("IQ")))



@dataclass(frozen=True)
class _Row:
    t: TensorInfo
    layer: int | None
    cls: str
    role: str
    reason: str | None


def _rows(model: Model) -> list[_Row]:
    order = {n: i for i, n in enumerate(llama_order(t.name for t in model.tensors))}
    out = []
    for t in sorted(model.tensors, key=lambda t: order[t.name]):
        tx = classify(t.name)
        out.append(_Row(t, tx.layer, tx.cls, tx.role, not_quantized_reason(t.name, t.n_dims, model.arch)))
    return out


def _class_entry(cls: str, rows: list[_Row], total: int) -> dict[str, Any]:
    n_params = sum(r.t.n_elements for r in rows)
    shapes = list(dict.fromkeys(tuple(trimmed_shape(r.t.shape)) for r in rows))
    reasons = sorted({r.reason for r in rows if r.reason is not None})
    n_quant = sum(r.reason is None for r in rows)
    rows_len = sorted({r.t.n_per_row for r in rows if r.reason is None})
    return {
        "class": cls,
        "role": rows[0].role,
        "n_tensors": len(rows),
        "layers": sorted({r.layer for r in rows if r.layer is not None}),
        "shapes": [list(s) for s in shapes],
        "n_params": n_params,
        "share": n_params / total if total else 0.0,
        "types": dict(Counter(r.t.type_name for r in rows).most_common()),
        "quantizable": n_quant == len(rows),
        "n_quantizable": n_quant,
        "not_quantized_because": reasons,
        "row_lengths": rows_len,
        "falls_back_from_256": [n for n in rows_len if n % K_BLOCK],
    }


def _layers(rows: list[_Row]) -> list[dict[str, Any]]:
    per: dict[int, list[_Row]] = {}
    for r in rows:
        if r.layer is not None and r.role not in TOWER_ROLES:
            per.setdefault(r.layer, []).append(r)
    groups: dict[tuple[str, ...], list[int]] = {}
    params: dict[tuple[str, ...], set[int]] = {}
    for il, rs in sorted(per.items()):
        sig = tuple(sorted({r.cls for r in rs}))
        groups.setdefault(sig, []).append(il)
        params.setdefault(sig, set()).add(sum(r.t.n_elements for r in rs))
    return [{"layers": ls, "classes": list(sig), "n_params_per_layer": sorted(params[sig])}
            for sig, ls in groups.items()]


def _tied(names: set[str]) -> bool:
    return "token_embd.weight" in names and "output.weight" not in names


def _warnings(model: Model, rows: list[_Row], classes: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    if _tied({r.t.name for r in rows}):
        out.append("tied embeddings: there is no output.weight, so llama-quantize quantizes token_embd.weight "
                   "as the output tensor (--output-tensor-type, else Q6_K, Q8_0 when its rows do not fit "
                   "256, Q5_K for IQ1/IQ2 ftypes); --token-embedding-type overrides that")
    odd = [c for c in classes if c["falls_back_from_256"]]
    if odd:
        n = sum(c["n_quantizable"] for c in odd)
        by_len: dict[int, list[str]] = {}
        for c in odd:
            for ln in c["falls_back_from_256"]:
                by_len.setdefault(ln, []).append(c["class"])
        detail = "; ".join(f"rows of {ln}: {', '.join(cs)}" for ln, cs in sorted(by_len.items()))
        out.append(f"{n} quantizable tensors in {len(odd)} classes have rows that are not a multiple of "
                   f"{K_BLOCK} ({detail}): every 256-block type falls back for them ({_fallbacks_256()})")
        f16 = sorted({c["class"] for c in odd for ln in c["falls_back_from_256"] if ln % 32})
        if f16:
            out.append(f"rows not even a multiple of 32 in {', '.join(f16)}: every quantized type falls back "
                       "to F16 there")
    requant = sorted({r.t.type_name for r in rows if r.reason is None and r.t.requantized})
    if requant:
        out.append(f"the quantizable tensors are stored as {', '.join(requant)}: prism_native dequantizes "
                   "them and llama-quantize needs --allow-requantize (quality is lower than from F16/BF16)")
    n_layer = model.hparams.n_layer_all
    beyond = sorted({r.layer for r in rows if r.layer is not None and r.role not in TOWER_ROLES and r.layer >= n_layer})
    if beyond:
        out.append(f"{model.arch}.block_count is {n_layer} but tensors name block(s) {layer_ranges(beyond)}")
    return out


def model_report(model: Model) -> dict[str, Any]:
    """Everything inspect shows, as plain data (the CLI formats it)."""
    rows = _rows(model)
    total = sum(r.t.n_elements for r in rows)
    by_cls: dict[str, list[_Row]] = {}
    for r in rows:
        by_cls.setdefault(r.cls, []).append(r)
    classes = [_class_entry(c, rs, total) for c, rs in by_cls.items()]
    hp = model.hparams
    n_quant_params = sum(r.t.n_elements for r in rows if r.reason is None)
    return {
        "file": str(model.path),
        "parts": [str(p) for p in model.parts],
        "file_bytes": model.file_bytes,
        "name": model.name,
        "architecture": model.arch,
        "hparams": {"n_layer": hp.n_layer_all, "n_layer_nextn": hp.n_layer_nextn, "n_expert": hp.n_expert,
                    "n_head": hp.n_head, "n_head_kv": hp.n_head_kv, "n_gqa": hp.n_gqa, "n_embd": hp.n_embd},
        "n_tensors": len(rows),
        "n_params": total,
        "n_quantizable_params": n_quant_params,
        "bpw_stored": 8.0 * sum(r.t.n_bytes for r in rows) / total if total else 0.0,
        "source_types": dict(Counter(r.t.type_name for r in rows).most_common()),
        "tied_embeddings": _tied({r.t.name for r in rows}),
        "classes": classes,
        "layers": _layers(rows),
        "warnings": _warnings(model, rows, classes),
        "tensors": [{"name": r.t.name, "layer": r.layer, "class": r.cls, "shape": trimmed_shape(r.t.shape),
                     "type": r.t.type_name, "n_params": r.t.n_elements, "n_bytes": r.t.n_bytes,
                     "quantizable": r.reason is None, "not_quantized_because": r.reason} for r in rows],
    }
