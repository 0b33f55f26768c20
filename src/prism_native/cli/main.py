"""Command line: `python -m prism_native {inspect,analyze,plan,quantize,check-recipe,eval,ablate,fit-weights,fit-growth,imatrix}`.

Every sub-command lives in its own module and registers itself through `COMMANDS`; user mistakes
surface as PrismError and are printed as one line with exit code 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from .._version import __version__
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
    "fit-growth": ("prism_native.cli.fit_growth",
                   "fit how the distortion grows with a type's error (ablations at low types), held out"),
    "imatrix": ("prism_native.cli.imatrix",
                "estimate an importance matrix from the weights alone (no calibration text), llama-imatrix's format"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (its usage block would make them several), exit code 2."""

    valued: dict[str, frozenset[str]]     # sub-command -> its options that take a value

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def valued_options(p: argparse.ArgumentParser) -> frozenset[str]:
    """The option strings of `p` that take one value."""
    return frozenset(s for a in p._actions if a.nargs is None for s in a.option_strings)


def attach_values(argv: Sequence[str], valued: frozenset[str]) -> list[str]:
    """`--bpw -inf` as `--bpw=-inf`, `-o -x.gguf` as `-o-x.gguf`: argparse would read a value that starts
    with '-' as an option. Arguments after '--' (llama-quantize's own) are left alone."""
    out = list(argv)
    i = 0
    while i + 1 < len(out) and out[i] != "--":
        a, v = out[i], out[i + 1]
        if a in valued and v.startswith("-") and v != "--":
            out[i:i + 2] = [f"{a}={v}" if a.startswith("--") else a + v]
        i += 1
    return out


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="prism-native",
        description="Plan mixed-precision llama.cpp quantization from the weights alone.")
    p.add_argument("--version", action="version", version=f"prism_native {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    p.valued = {}
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
        p.valued[name] = valued_options(sp)
    return p


def _one_line(message: str) -> str:
    """The message with control characters escaped: a name read from a file may hold a newline."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in parser.valued:
        argv = attach_values(argv, parser.valued[command])
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
