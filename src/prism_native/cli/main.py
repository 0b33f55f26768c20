"""Command line: `python -m prism_native {inspect,analyze,plan,quantize,check-recipe,eval,ablate,fit-weights,imatrix}`.

Every sub-command lives in its own module and registers itself through `COMMANDS`; user mistakes
surface as PrismError and are printed as one line with exit code 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .. import __version__
from ..errors import PrismError

# name -> (module that defines `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("prism_native.cli.inspect",
                "show a GGUF as llama-quantize sees it: classes, layers, types, quantizable tensors"),
    "analyze": ("prism_native.cli.analyze",
                "measure the seven structural metrics of every quantizable tensor (no calibration data)"),
    "plan": ("prism_native.cli.plan",
             "allocate a quant type per class under a bpw or size budget and print the llama-quantize recipe"),
    "quantize": ("prism_native.cli.quantize",
                 "plan and write the quantized GGUF yourself, byte-identical to llama-quantize's for the recipe"),
    "check-recipe": ("prism_native.cli.check_recipe",
                     "show what an existing llama-quantize command does to every tensor of a model"),
    "eval": ("prism_native.cli.eval",
             "quantize with llama.cpp and measure perplexity/KL divergence against full precision"),
    "ablate": ("prism_native.cli.ablate",
               "measure each class's (or layer's) true damage: it alone at a low type, the rest high"),
    "fit-weights": ("prism_native.cli.fit",
                    "fit the composite sensitivity's weights to ablation measurements, with held-out checks"),
    "imatrix": ("prism_native.cli.imatrix",
                "estimate an importance matrix from the weights alone (no calibration text), llama-imatrix's format"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prism-native",
        description="Plan mixed-precision llama.cpp quantization from the weights alone.")
    p.add_argument("--version", action="version", version=f"prism_native {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
    return p


def _one_line(message: str) -> str:
    """The message with control characters escaped: a name read from a file may hold a newline."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PrismError as e:
        print(f"prism-native {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"prism-native {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
