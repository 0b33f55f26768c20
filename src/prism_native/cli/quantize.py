"""`quantize`: plan and write the quantized GGUF, byte for byte what llama-quantize writes for the recipe.

    prism-native quantize MODEL --bpw 4.5 -o OUT.gguf [--imatrix FILE] [--threads N]   # or --size 4.2GiB
    prism-native quantize MODEL --recipe plan.json -o OUT.gguf                         # a saved `plan --json`
    prism-native quantize MODEL -o OUT.gguf -- <llama-quantize arguments>              # your own command
"""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ..errors import UsageError
from ..llama.command import QuantizeCommand
from ..pipeline import Target, job_for_budget, job_for_command, job_for_saved_plan
from ..plan.budget import fmt_bytes
from ..write.quantize import QuantizeResult, write_job
from .main import ArgumentParser
from .options import (
    add_analysis_arguments,
    add_budget_arguments,
    add_example_argument,
    add_plan_arguments,
    analysis_request,
    budgets,
    plan_types,
    say,
)

_MAX_NOTES = 5


def _options(p: argparse.ArgumentParser) -> None:
    add_example_argument(p)
    p.add_argument("-o", "--output", metavar="OUT.gguf", help="output file (written under a temporary name, "
                   "renamed when complete)")
    add_budget_arguments(p, sweep=False)
    p.add_argument("--recipe", metavar="PLAN.json", help="write a saved plan (the JSON `plan --json` prints)")
    add_plan_arguments(p)
    add_analysis_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options(p)
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="[MODEL.gguf] [-- ARGS]",
                   help="the input model, and after '--' llama-quantize's own arguments (the program name, "
                        "input and output may be left out: '-- --tensor-type attn_v=q8_0 Q4_K_M')")


def _split(args: argparse.Namespace) -> tuple[argparse.Namespace, list[str] | None]:
    """Options may follow MODEL; everything after '--' is llama-quantize's."""
    rest = list(args.args)
    llama = None
    if "--" in rest:
        cut = rest.index("--")
        rest, llama = rest[:cut], rest[cut + 1:]
    head = ArgumentParser(prog="prism-native quantize", add_help=False)
    _options(head)
    head.add_argument("model", nargs="?")
    ns, extra = head.parse_known_args(rest, namespace=args)
    if extra:
        raise UsageError(f"unexpected argument '{extra[0]}' (llama-quantize's arguments go after '--')")
    return ns, llama


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the temporary output is removed (SIGKILL cannot be caught: it may
    leave a hidden .NAME.*.part file, never a truncated NAME)."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:            # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _from_command(args: argparse.Namespace, argv: list[str]) -> Target:
    if not argv:
        raise UsageError("no llama-quantize arguments after '--' (at least an ftype, e.g. Q4_K_M)")
    cmd = QuantizeCommand.parse(argv, input_optional=True)
    if cmd.nthreads is not None and not args.threads:
        args.threads = max(0, cmd.nthreads)
    return job_for_command(cmd, args.model, args.example, imatrix=args.imatrix, output=args.output, say=say)


def _from_budget(args: argparse.Namespace) -> Target:
    (budget,) = budgets(args)
    t = job_for_budget(budget, args.model, args.example, request=analysis_request(args), types=plan_types(args),
                       max_overrides=args.max_overrides, distortion=args.distortion, output=args.output, say=say)
    assert t.plan is not None
    print(f"# {t.job.model.name}: planned for {budget.describe()}: {t.plan.size.bpw_quantized:.4f} bpw, "
          f"ftype argument {t.plan.recipe.base_type}, {len(t.plan.recipe.overrides)} --tensor-type patterns")
    return t


def _report(t: Target, res: QuantizeResult | None) -> None:
    job, out = t.job, t.output
    notes = list(job.notes)
    for n in notes[:_MAX_NOTES]:
        print(f"warning: {n}", file=sys.stderr)
    if len(notes) > _MAX_NOTES:
        print(f"warning: ... and {len(notes) - _MAX_NOTES} more like these", file=sys.stderr)
    print(f"predicted size: {fmt_bytes(job.file_bytes)}")
    if res is None:
        print(f"--dry-run: {out} not written")
        return
    same = "equal to the prediction" if res.file_bytes == res.predicted_bytes else "DIFFERENT from the prediction"
    print(f"actual size:    {fmt_bytes(res.file_bytes)}, {same}")
    print(f"wrote {res.path} ({job.ftype}) in {res.seconds:.1f} s, {res.mb_per_s:.0f} MB/s of input")


def run(args: argparse.Namespace) -> int:
    args, llama = _split(args)
    if args.threads < 0:
        raise UsageError("--threads must be >= 0")
    if llama is not None:
        if args.bpw is not None or args.size is not None or args.recipe:
            raise UsageError("give a budget (--bpw/--size), --recipe, or llama-quantize arguments after '--'; "
                             "not more than one")
        target = _from_command(args, llama)
    elif args.recipe:
        if args.bpw is not None or args.size is not None:
            raise UsageError("give --recipe or a budget (--bpw/--size), not both")
        target = job_for_saved_plan(args.recipe, args.model, args.example, imatrix=args.imatrix, output=args.output,
                                    say=say)
    elif args.bpw is not None or args.size is not None:
        target = _from_budget(args)
    else:
        raise UsageError("say what to write: --bpw B, --size SIZE, --recipe PLAN.json, or -- <llama-quantize "
                         "arguments>")
    if target.dry_run:
        _report(target, None)
        return 0
    with _terminate_as_interrupt():
        res = write_job(target.job, target.output, threads=args.threads, progress=not args.quiet, inputs=target.inputs)
    _report(target, res)
    return 0
