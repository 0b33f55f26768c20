"""`prism-native inspect MODEL.gguf`: the model as llama-quantize sees it (llama.model_report)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..llama.model_report import model_report
from .options import add_model_argument, resolve_model
from .text import count, layer_ranges, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, help="GGUF file (any part of a split set)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--tensors", action="store_true", help="also list every tensor (text output)")


def run(args: argparse.Namespace) -> int:
    report = model_report(resolve_model(args))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_text(report, with_tensors=args.tensors))
    return 0


def format_text(rep: dict[str, Any], *, with_tensors: bool = False) -> str:
    hp = rep["hparams"]
    lines = [
        f"model         {rep['file']}" + (f"  ({len(rep['parts'])} parts)" if len(rep["parts"]) > 1 else ""),
        f"name          {rep['name']}",
        f"architecture  {rep['architecture']}  layers {hp['n_layer']}"
        + (f" (+{hp['n_layer_nextn']} nextn)" if hp["n_layer_nextn"] else "")
        + (f"  experts {hp['n_expert']}" if hp["n_expert"] else "")
        + (f"  heads {hp['n_head']}/{hp['n_head_kv']} kv" if hp["n_head"] else ""),
        f"parameters    {count(rep['n_params'])} in {rep['n_tensors']} tensors; "
        f"{count(rep['n_quantizable_params'])} in tensors llama-quantize quantizes",
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
        body.append([c["class"], str(c["n_tensors"]), shape, count(c["n_params"]),
                     f"{100 * c['share']:.2f}%", types, q])
    lines += table(["class", "n", "shape (ne0 x ne1 ...)", "params", "share", "type", "quantized"], body,
                    {1, 3, 4})
    if rep["layers"]:
        lines += ["", "layers"]
        for g in rep["layers"]:
            each = "/".join(count(p) for p in g["n_params_per_layer"])
            lines.append(f"  blk {layer_ranges(g['layers'])} ({len(g['layers'])}, {each} params each): "
                         + " ".join(g["classes"]))
    if rep["warnings"]:
        lines += ["", "warnings"]
        lines += [f"  - {w}" for w in rep["warnings"]]
    if with_tensors:
        lines += ["", "tensors"]
        lines += table(["name", "shape", "type", "params", "quantized"],
                        [[t["name"], " x ".join(map(str, t["shape"])), t["type"], count(t["n_params"]),
                          "yes" if t["quantizable"] else f"no: {t['not_quantized_because']}"]
                         for t in rep["tensors"]], {3})
    return "\n".join(lines)
