"""From what the user asks for to the job that write/ carries out: one entry point per way of saying what
to write, used by the command line and by `quantize_model` alike.

    job_for_budget(model, budget, ...)      analysis_for (reuse MODEL.prism.json / --from, or measure; scored)
                                            -> plan.planner.make_plan -> write.job.build_job
    job_for_saved_plan(path, model, ...)    plan.saved_plan.load_saved_plan -> build_job -> check_against
    job_for_command(cmd, model, ...)        a llama-quantize command (llama.command.QuantizeCommand) -> build_job

Each opens the model once (MODEL, an open Model or the example: source_model), loads the imatrix once
(open_imatrix: a file or 'auto', the data-free estimate) and returns a Target: the job, where it goes and
the files it reads. write.quantize.write_job writes it. Messages for the user go to `say` as whole lines (the command line
prints them on stderr; the library's default drops them).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

from .errors import BudgetError, FileFormatError, UsageError
from .files import check_destination, check_space, same_file
from .llama.command import QuantizeCommand
from .llama.decide import QuantizeOptions
from .llama.quantizable import quantizable_tensors
from .measure.analyze import Settings, analyze
from .measure.results import Analysis, ModelIdentity
from .plan.budget import Budget
from .plan.dry_run import budget_file_bytes, smallest_output
from .plan.planner import DEFAULT_DISTORTION, DEFAULT_TYPES, Plan, make_plan
from .plan.recipe import Recipe
from .plan.saved_plan import SavedPlan, check_against, load_saved_plan
from .plan.score import Weights, score_analysis
from .progress import Progress
from .qtypes import QType
from .read.example import example_model
from .read.imatrix import Imatrix, load_imatrix
from .read.model import Model
from .write.job import Job, QuantizeParams, build_job, params_from_command, params_from_recipe, params_from_types
from .write.quantize import QuantizeResult, write_job

AUTO_IMATRIX = "auto"     # --imatrix auto: the data-free estimate (measure/importance.py)
MAX_WARNINGS = 5          # of one kind, said to the user

Say = Callable[[str], None]


def _silent(line: str) -> None:
    pass


# -- the model and the imatrix -------------------------------------------------------------------------


def model_path(model: str | Path | None, example: bool = False, default: str | Path | None = None) -> Path:
    """MODEL or the example (exactly one of them); `default` (a command's or results file's model) when
    neither is given."""
    if example and model:
        raise UsageError("give either MODEL or --example, not both")
    if example:
        return example_model()
    if not model and default is None:
        raise UsageError("no model given (MODEL.gguf or --example)")
    return Path(model or default)      # type: ignore[arg-type]


def source_model(model: str | Path | Model | None, example: bool = False, default: str | Path | None = None) -> Model:
    """The model to read, opened once: MODEL (a path, or a Model already open), the example, or `default`."""
    if isinstance(model, Model):
        if example:
            raise UsageError("give either MODEL or --example, not both")
        return model
    return Model(model_path(model, example, default))


def open_imatrix(value: str | Path | Imatrix | None, model: Model, say: Say = _silent) -> Imatrix | None:
    """A file from llama-imatrix, 'auto' (the data-free estimate of `model`, held in memory; a file named
    'auto' is given as ./auto) or an Imatrix already loaded; its warnings said once."""
    if value is None or isinstance(value, Imatrix):
        return value
    if not isinstance(value, (str, Path)):
        raise UsageError(f"imatrix must be a path or a read.imatrix.Imatrix, not {type(value).__name__}")
    if str(value) == AUTO_IMATRIX and not isinstance(value, Path):
        from .measure.importance import estimate_importance
        imatrix = estimate_importance(model).to_imatrix(AUTO_IMATRIX)
    else:
        imatrix = load_imatrix(value)
    for w in imatrix.warnings[:MAX_WARNINGS]:
        say(f"warning: {w}")
    return imatrix


def imatrix_file(value: str | Path | None) -> list[str | Path]:
    """The file an imatrix argument reads (none for 'auto', made in memory)."""
    return [value] if value and str(value) != AUTO_IMATRIX else []


def tools_imatrix(given: str | None, analysis: Analysis | None, results: str | Path | None = None) -> str | None:
    """The imatrix llama.cpp's tools get in eval and ablate: one for baselines and plans alike, so that they
    are compared on equal terms (the analysis's, which `given` must then be)."""
    planned = analysis.imatrix.path if analysis is not None and analysis.imatrix is not None else None
    if planned and given and not same_file(planned, given):
        raise UsageError(f"the analysis used the imatrix {planned}, not {given}")
    if analysis is not None and given and not planned:
        raise UsageError(f"{results}: analysed without an imatrix; analyze again with --imatrix {given}")
    return planned or given


def imatrix_on_disk(value: str | None, model: Model, folder: Path) -> str | None:
    """An imatrix llama-quantize can read: a file as it is; 'auto', the estimate saved in `folder` (kept
    with the results)."""
    if value != AUTO_IMATRIX:
        return value
    from .measure.importance import estimate_importance
    folder.mkdir(parents=True, exist_ok=True)
    return str(estimate_importance(model).save(folder / "auto.imatrix.gguf", model.parts))


# -- the analysis ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisRequest:
    """How to get a model's scored analysis: reuse `results` (--from), else MODEL.prism.json in the working
    directory, resumed or made with `settings` and `imatrix`; scored with `weights`."""

    settings: Settings = Settings()
    imatrix: str | None = None          # FILE or 'auto'
    weights: Weights = field(default_factory=Weights)
    results: str | None = None
    resume: bool = True
    progress: bool = True

    def files(self, model: Model) -> list[str | Path]:
        """The files the analysis reads: the results file and the imatrix."""
        return [self.results or default_results(model), *imatrix_file(self.imatrix)]


@dataclass
class Scored:
    """A model, its scored analysis, and the imatrix it was measured with once loaded (None: not loaded
    yet, or none; `imatrix` loads it)."""

    model: Model
    analysis: Analysis
    results: Path                       # the results file read or written
    loaded: Imatrix | None = None

    @property
    def imatrix_path(self) -> str | None:
        return None if self.analysis.imatrix is None else self.analysis.imatrix.path

    def files(self) -> list[str | Path]:
        """The files read: the model's parts, the results file, the imatrix."""
        return [*self.model.parts, self.results, *imatrix_file(self.imatrix_path)]

    def imatrix(self, say: Say = _silent) -> Imatrix | None:
        """The analysis's imatrix, loaded once."""
        if self.loaded is None and self.imatrix_path is not None:
            self.loaded = open_imatrix(self.imatrix_path, self.model, say)
        return self.loaded


def default_results(model: Model) -> Path:
    """MODEL.prism.json in the working directory (never beside a read-only input)."""
    return Path(f"{model.path.name.removesuffix('.gguf')}.prism.json")


def check_settings(settings: Settings) -> None:
    if settings.sample_values < 256:
        raise UsageError("--sample-values must be at least 256")
    if settings.threads < 0:
        raise UsageError("--threads must be >= 0")


def measure(model: Model, request: AnalysisRequest, out: Path | None, say: Say = _silent) -> Scored:
    """analyze `model` with the request's settings and imatrix (resuming from `out`), then score it; the
    imatrix's coverage and the values some types cannot write said to the user."""
    check_settings(request.settings)
    imatrix = open_imatrix(request.imatrix, model, say)
    if imatrix is not None:
        missing = imatrix.uncovered([t.name for t in quantizable_tensors(model)])
        if missing:
            say(f"warning: the imatrix does not cover {len(missing)} tensor(s) (e.g. {missing[0]}); "
                "llama-quantize quantizes them without importance weights")
    bar = Progress(sum(t.n_elements for t in quantizable_tensors(model)), "analyze",
                   enabled=None if request.progress else False)
    try:
        analysis = analyze(model, request.settings, imatrix=imatrix, out=out, resume=request.resume,
                           progress=bar.update)
    finally:
        bar.close()
    score_analysis(analysis, request.weights)
    if out is not None:
        analysis.save(out)      # with the sensitivities, for users reading the file
    unwritable = {r.name: [q for q in r.errors if r.overflows(q)] for r in analysis.tensors.values()}
    unwritable = {n: qs for n, qs in unwritable.items() if qs}
    if unwritable:
        name, qs = next(iter(unwritable.items()))
        say(f"warning: {len(unwritable)} tensor(s) have values llama-quantize cannot write in some types "
            f"(float16 block scales overflow), e.g. {name}: {', '.join(qs)}; plans avoid those types")
    return Scored(model, analysis, out if out is not None else default_results(model), imatrix)


def reuse_analysis(results: str | Path, model: str | Path | Model | None = None, example: bool = False,
                   weights: Weights | None = None) -> Scored:
    """A saved analysis (`analyze`'s results file) and its model (MODEL, else the one it names), checked
    to be that model's complete analysis, scored with `weights` (they may be newer than the file)."""
    analysis = Analysis.load(results)
    named = isinstance(model, Model) or bool(model) or example
    if not named and not Path(analysis.model.path).exists():
        raise FileFormatError(f"{results}: its model {analysis.model.path} is gone; pass MODEL")
    m = source_model(model, example, default=analysis.model.path)
    if ModelIdentity.of(m) != analysis.model:
        raise FileFormatError(f"{results} was measured on another file than {m.path}")
    if not analysis.complete:
        raise FileFormatError(f"{results} is a partial analysis; run analyze again to finish it")
    wanted = {t.name for t in quantizable_tensors(m)}
    analysis.check_model(m, wanted, str(results))
    if set(analysis.tensors) != wanted:
        raise FileFormatError(f"{results}: holds {len(analysis.tensors)} of the model's {len(wanted)} "
                              "quantizable tensors")
    score_analysis(analysis, weights or Weights())
    return Scored(m, analysis, Path(results))


def analysis_for(model: str | Path | Model | None, request: AnalysisRequest, example: bool = False,
                 say: Say = _silent) -> Scored:
    """The model and its scored analysis: the request's results file, else MODEL.prism.json (resumed, or
    made and saved)."""
    if request.results:
        return reuse_analysis(request.results, model, example, request.weights)
    m = source_model(model, example)
    out = default_results(m)
    check_destination(out, [*m.parts, *([request.imatrix] if request.imatrix else [])])
    scored = measure(m, request, out, say)
    say(f"# analysis saved to {out}; later plans of this model reuse it")
    return scored


def plans_for(scored: Scored, budgets: Sequence[Budget], *, types: tuple[str, ...] = DEFAULT_TYPES,
              max_overrides: int = 64, distortion: str = DEFAULT_DISTORTION) -> tuple[list[Plan], list[BudgetError]]:
    """A plan per budget, and the budgets no plan fits (a sweep draws the feasible part of its curve; one
    budget that fits none is raised)."""
    plans: list[Plan] = []
    skipped: list[BudgetError] = []
    for b in budgets:
        try:
            plans.append(make_plan(scored.model, scored.analysis, b, types=types, max_overrides=max_overrides,
                                   distortion=distortion))
        except BudgetError as e:
            if len(budgets) == 1:
                raise
            skipped.append(e)
    if not plans:
        raise skipped[0]
    return plans, skipped


# -- what to write ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A job and where it goes: what write_job needs, and what the command line reports."""

    job: Job
    output: str
    inputs: list[str | Path]            # the files read, never written over
    dry_run: bool = False               # a command's --dry-run: report, write nothing
    plan: Plan | None = None            # the plan of a budget


def default_output(model: Model, tag: str) -> str:
    """NAME-prism-TAG.gguf in the working directory."""
    return f"{model.path.name.removesuffix('.gguf')}-prism-{tag}.gguf"


def job_for_command(cmd: QuantizeCommand, model: str | Path | Model | None = None, example: bool = False, *,
                    imatrix: str | None = None, output: str | None = None, say: Say = _silent) -> Target:
    """A llama-quantize command: its input unless MODEL is given (then they must be one file), its output
    unless `output` is given (likewise; else llama-quantize's ggml-model-FTYPE.gguf beside the input)."""
    if imatrix and cmd.imatrix and imatrix != cmd.imatrix:
        raise UsageError(f"--imatrix {imatrix} and the command's --imatrix {cmd.imatrix} differ; give one")
    if imatrix and not cmd.imatrix:
        cmd = replace(cmd, imatrix=imatrix)
    m = source_model(model, example, default=cmd.model_in)
    if cmd.model_in and not same_file(cmd.model_in, m.path):
        raise UsageError(f"the command's input {cmd.model_in} is not {m.path}; give one model")
    if output is not None and cmd.model_out and not same_file(output, cmd.model_out):
        raise UsageError(f"-o {output} and the command's output {cmd.model_out} differ; give one")
    out = output if output is not None else cmd.model_out   # -o '' is refused as empty
    if out is None:   # llama-quantize's own default: ggml-model-FTYPE.gguf beside the input
        out = str(m.path.with_name(f"ggml-model-{cmd.ftype}.gguf"))
    inputs = [*m.parts, *imatrix_file(cmd.imatrix), *(v for kind, v in cmd.type_args if kind == "tensor-type-file")]
    check_destination(out, inputs)
    params = params_from_command(cmd, imatrix=open_imatrix(cmd.imatrix, m, say))
    return Target(build_job(m, params), out, inputs, cmd.dry_run)


def job_for_saved_plan(saved: str | Path | SavedPlan, model: str | Path | Model | None = None,
                       example: bool = False, *,
                       imatrix: str | None = None, output: str | None = None, say: Say = _silent) -> Target:
    """A saved plan (`plan --json`): on MODEL, else the model its command names; the types must come out as
    the plan says (check_against)."""
    plan = saved if isinstance(saved, SavedPlan) else load_saved_plan(saved)
    cmd = plan.command
    if not (model or example) and (cmd is None or not cmd.model_in):
        raise UsageError(f"{plan.path} names no input model; give MODEL")
    m = source_model(model, example, default=cmd.model_in if cmd is not None else None)
    out = output if output is not None else default_output(m, "recipe")
    im_path = imatrix or (cmd.imatrix if cmd is not None else None)
    inputs = [*m.parts, plan.path, *imatrix_file(im_path)]
    check_destination(out, inputs)
    job = build_job(m, params_from_recipe(plan.recipe, imatrix=open_imatrix(im_path, m, say), imatrix_name=im_path))
    check_against(plan, m, {t.info.name: t.target.name for t in job.tensors})
    return Target(job, out, inputs)


def budget_tag(budget: Budget) -> str:
    return f"{budget.value:g}bpw" if budget.kind == "bpw" else "size"


def job_for_budget(budget: Budget, model: str | Path | Model | None = None, example: bool = False, *,
                   request: AnalysisRequest = AnalysisRequest(), types: tuple[str, ...] = DEFAULT_TYPES,
                   max_overrides: int = 64, distortion: str = DEFAULT_DISTORTION, output: str | None = None,
                   say: Say = _silent) -> Target:
    """Plan under `budget` and build the plan's job. A bad destination, or a disk too small for the
    budget's smallest output, is refused before the analysis."""
    probe = source_model(model, example)
    first = check_destination(output or default_output(probe, budget_tag(budget)),
                              [*probe.parts, *request.files(probe)])
    check_space(first, budget_file_bytes(smallest_output(probe, types, bool(request.imatrix)), budget))
    scored = analysis_for(probe, request, say=say)
    m = scored.model
    out = output if output is not None else default_output(m, budget_tag(budget))
    im_path = scored.imatrix_path
    inputs = [*m.parts, *request.files(m), *imatrix_file(im_path)]
    check_destination(out, inputs)
    plan = make_plan(m, scored.analysis, budget, types=types, max_overrides=max_overrides, distortion=distortion)
    for n in plan.notes:
        say(f"note: {n}")
    job = build_job(m, params_from_recipe(plan.recipe, imatrix=scored.imatrix(say), imatrix_name=im_path))
    if job.file_bytes != plan.size.file_bytes:
        raise AssertionError(f"plan predicts {plan.size.file_bytes} bytes, the layout has {job.file_bytes}")
    return Target(job, out, inputs, plan=plan)


# -- the library's one call -----------------------------------------------------------------------------

Choice = Union[Budget, SavedPlan, Plan, Recipe, QuantizeCommand, QuantizeParams, QuantizeOptions, str,
               Mapping[str, "str | QType"]]


def params_for(model: Model, choice: Choice, imatrix: Imatrix | None, imatrix_name: str | None) -> QuantizeParams:
    """QuantizeParams for a plan, recipe, options, ftype name or type per tensor."""
    if isinstance(choice, QuantizeParams):
        if imatrix is not None:
            raise UsageError("QuantizeParams carry their own imatrix; do not pass imatrix= as well")
        return choice
    if isinstance(choice, Plan):
        return params_from_recipe(choice.recipe, imatrix=imatrix, imatrix_name=imatrix_name)
    if isinstance(choice, Recipe):
        return params_from_recipe(choice, imatrix=imatrix, imatrix_name=imatrix_name)
    if isinstance(choice, QuantizeOptions):
        return QuantizeParams(choice, imatrix, None if imatrix is None else imatrix_name or str(imatrix.path),
                              allow_requantize=True)
    if isinstance(choice, (str, Mapping)):
        return params_from_types(model, choice, imatrix=imatrix, imatrix_name=imatrix_name)
    raise UsageError("plan_or_types must be a Budget, SavedPlan, Plan, Recipe, QuantizeCommand, QuantizeOptions, "
                     f"an ftype name such as 'Q4_K_M' or a mapping tensor name -> type, not {type(choice).__name__}")


def quantize_model(src: str | Path | Model, dst: str | Path, plan_or_types: Choice,
                   imatrix: str | Path | Imatrix | None = None, threads: int = 0,
                   progress: bool = True) -> QuantizeResult:
    """Write the quantized GGUF of `src` to `dst`, byte for byte what llama-quantize writes for the same
    choices (llama_model_quantize_impl).

    plan_or_types: a budget (plan.budget.Budget: analysed, or MODEL.prism.json reused, then planned), a
    saved plan (plan.saved_plan.load_saved_plan), a plan (plan.planner.make_plan), a recipe (plan.recipe),
    a parsed llama-quantize command (llama.command.QuantizeCommand.parse), QuantizeOptions, an ftype name
    ("Q4_K_M") or a mapping tensor name -> type (tensors not named keep theirs). imatrix: llama-imatrix's
    output (GGUF or .dat), 'auto' (the data-free estimate), or a loaded Imatrix; its path is recorded in
    the output's quantize.imatrix.file as given. threads: 0 for all cores. Quantized inputs are
    requantized (llama-quantize's --allow-requantize) except when a command without that flag is given.
    Raises ValueError (UsageError) for bad arguments and a PrismError for anything llama-quantize would
    refuse or that cannot be written; nothing is left under `dst` then.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise UsageError(f"threads must be an int >= 0 (0: all cores), got {threads!r}")
    if isinstance(src, Model):
        model = src
    elif isinstance(src, (str, Path)):
        model = Model(src)
    else:
        raise UsageError(f"src must be a path or an opened Model, not {type(src).__name__}")
    if not isinstance(dst, (str, Path)):
        raise UsageError(f"dst must be a path, not {type(dst).__name__}")
    if imatrix is not None and not isinstance(imatrix, (str, Path, Imatrix)):
        raise UsageError(f"imatrix must be a path or a read.imatrix.Imatrix, not {type(imatrix).__name__}")
    name = str(imatrix) if isinstance(imatrix, (str, Path)) else None
    if isinstance(imatrix, Imatrix) and isinstance(plan_or_types, (Budget, SavedPlan)):
        raise UsageError("with a budget or a saved plan, give the imatrix as a path (the plan names its file)")
    inputs = imatrix_file(name)
    check_destination(dst, [*model.parts, *inputs])
    if isinstance(plan_or_types, Budget):
        target = job_for_budget(plan_or_types, model, request=AnalysisRequest(
            imatrix=name, progress=progress), output=str(dst))
        job, inputs = target.job, target.inputs
    elif isinstance(plan_or_types, SavedPlan):
        target = job_for_saved_plan(plan_or_types, model, imatrix=name, output=str(dst))
        job, inputs = target.job, target.inputs
    elif isinstance(plan_or_types, QuantizeCommand):
        loaded = open_imatrix(imatrix if imatrix is not None else plan_or_types.imatrix, model)
        p = params_from_command(plan_or_types, imatrix=loaded)
        if imatrix is not None:         # given here: named as given, whatever the command says
            p = replace(p, imatrix_name=name or str(loaded.path))  # type: ignore[union-attr]
        job = build_job(model, p)
    else:
        job = build_job(model, params_for(model, plan_or_types, open_imatrix(imatrix, model), name))
    return write_job(job, dst, threads=threads, progress=progress, inputs=inputs)
