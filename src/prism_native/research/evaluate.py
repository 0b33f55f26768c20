"""`eval`: quantize a model every way asked (llama.cpp's ftypes, prism_native plans), measure every
result against the full-precision logits, and keep what was measured so that a rerun only does what
is new.

Everything lives under the output directory's cache/: measurements.json (every measurement ever
made there, by key), the full-precision logits, quantized files (only kept with --keep) and the tool
logs. A measurement's key hashes the model's identity, the text, the context and chunk count, the
llama-quantize arguments (paths replaced by placeholders) and the imatrix's contents.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from ..errors import FileFormatError, PrismError, UsageError
from ..files import write_file
from ..llama.command import PROGRAM, QuantizeCommand
from ..llama.decide import TensorSpec
from ..llama.diagnose import imatrix_needed
from ..llama.ftypes import parse_ftype
from ..measure.results import Analysis, model_identity
from ..plan.budget import Budget
from ..plan.planner import imatrix_extra_kv, make_plan, needs_requantize
from ..progress import Progress, fmt_secs
from ..read.bounded import MiB, load_json
from ..read.model import Model
from ..tools.binaries import run as run_tool
from ..tools.perplexity import Measurement, Perplexity
from ..tools.quantize_log import parse_quantize_log

CACHE_BYTES = 64 * MiB      # measurements.json: one small record per measured file

SERIES_REFERENCE = "reference"
SERIES_FTYPE = "llama.cpp"
SERIES_PURE = "llama.cpp --pure"
SERIES_PRISM = "prism_native"
SERIES_RECIPE = "recipe"           # a user's own llama-quantize command (a published recipe)
BASELINE_SERIES = (SERIES_FTYPE, SERIES_PURE, SERIES_RECIPE)

# every built-in mix of the 2-6 bit range, and the uniform --pure types. The mixes that write IQ2/IQ3_XXS
# (or Q2_K in Q2_K_S) are measured only with an importance matrix: llama-quantize refuses them without one
# unless every such tensor falls back (see imatrix_needed)
FRONTIER = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S", "Q2_K", "IQ3_XXS", "IQ3_XS", "Q3_K_S", "IQ3_S",
            "IQ3_M", "Q3_K_M", "Q3_K_L", "IQ4_XS", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
            "Q3_K:pure", "Q4_K:pure", "IQ4_XS:pure", "Q5_K:pure")

# placeholders in llama-quantize argument lists: a cache key depends on the recipe, not on paths
MODEL_IN, MODEL_OUT, IMATRIX = "<model>", "<out>", "<imatrix>"


@dataclass(frozen=True)
class Method:
    """One way to quantize: a row of the results."""

    name: str
    series: str
    command: QuantizeCommand           # with the placeholder paths, no thread count
    target: str = ""                   # the budget a plan was made for
    predicted_bytes: int | None = None  # a plan's predicted file size
    budget_bytes: int | None = None     # a size-budget plan's budget

    @property
    def args(self) -> tuple[str, ...]:
        """The llama-quantize arguments with placeholders (what a measurement's cache key holds)."""
        return tuple(self.command.argv()[1:])

    def argv(self, binary: Path, model: Path, out: Path, imatrix: str | None, threads: int) -> list[str]:
        c = self.command
        return replace(c, program=str(binary), model_in=str(model), model_out=str(out), nthreads=threads,
                       imatrix=None if c.imatrix is None else str(imatrix)).argv()


def parse_baselines(text: str) -> list[str]:
    """'Q3_K_M,Q4_K:pure,frontier' -> canonical specs, 'frontier' expanded, duplicates dropped."""
    out: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        specs = FRONTIER if item.lower() == "frontier" else (item,)
        for spec in specs:
            name, _, mode = spec.partition(":")
            ftype = name.strip().upper()
            if mode not in ("", "pure"):
                raise UsageError(f"baseline '{spec}': the only suffix is ':pure' (e.g. Q4_K:pure)")
            if ftype == "COPY" or parse_ftype(ftype) != ftype:
                raise UsageError(f"baseline '{spec}' is not a llama-quantize type (e.g. Q4_K_M, IQ4_XS, Q4_K:pure)")
            canon = f"{ftype}:pure" if mode else ftype
            if canon not in out:
                out.append(canon)
    return out


def baseline_method(spec: str, *, requantize: bool, imatrix: bool) -> Method:
    """llama-quantize's own mix for an ftype ('Q4_K_M'), or one type everywhere ('Q4_K:pure')."""
    ftype, _, mode = spec.partition(":")
    cmd = QuantizeCommand(ftype=ftype, model_in=MODEL_IN, model_out=MODEL_OUT, pure=bool(mode),
                          imatrix=IMATRIX if imatrix else None, allow_requantize=requantize)
    return Method(f"{ftype} --pure" if mode else ftype, SERIES_PURE if mode else SERIES_FTYPE, cmd)


def recipe_method(name: str, command: QuantizeCommand, *, requantize: bool, imatrix: bool) -> Method:
    """A user's llama-quantize command as a baseline: its own type choices and flags, run on the eval's
    model, output, threads and importance matrix (every method of one eval shares them)."""
    if not name or name.startswith("prism_native") or name.upper() in FRONTIER:
        raise UsageError(f"recipe name '{name}' is empty or taken by a built-in method; choose another")
    if command.imatrix is not None and not imatrix:
        raise UsageError(f"recipe '{name}' uses --imatrix: give eval --imatrix FILE (one file for every method)")
    for flag, on in (("--keep-split", command.keep_split), ("--dry-run", command.dry_run)):
        if on:
            raise UsageError(f"recipe '{name}': {flag} writes no single file to measure")
    # --tensor-type-file entries inlined, so that the cache key holds the rules, not a path
    inline = [("tensor-type", r.arg) for r in command.overrides()]
    cmd = replace(command, program=PROGRAM, model_in=MODEL_IN, model_out=MODEL_OUT, nthreads=None, type_args=inline,
                  imatrix=IMATRIX if imatrix else None, allow_requantize=command.allow_requantize or requantize)
    return Method(name, SERIES_RECIPE, cmd)


def prism_planner(model: Model, analysis: Analysis, *, types: Sequence[str], max_overrides: int,
                  distortion: str) -> Callable[[Budget, str], Method]:
    """budget, label -> the Method of a prism_native plan at that budget (its recipe with placeholders)."""
    extra = imatrix_extra_kv(analysis)
    requant = needs_requantize(model, analysis)

    def plan(budget: Budget, label: str) -> Method:
        p = make_plan(model, analysis, budget, types=types, max_overrides=max_overrides, extra_kv=extra,
                      distortion=distortion)
        cmd = p.recipe.command(MODEL_IN, MODEL_OUT, imatrix=IMATRIX if analysis.imatrix else None,
                               allow_requantize=requant)
        return Method(f"prism_native {label}", SERIES_PRISM, cmd, label, p.size.file_bytes,
                      int(budget.value) if budget.kind == "size" else None)
    return plan


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def input_type(model: Model) -> str:
    """The input's ftype name (general.file_type), e.g. F16 or Q4_1."""
    ft = model.kv("general.file_type")
    return (parse_ftype(str(ft)) if ft is not None else None) or "input"


@dataclass
class Row:
    """One measured file (or the reference itself)."""

    method: str
    series: str
    key: str
    file_bytes: int
    n_params: int
    m: Measurement
    target: str = ""
    llama_bpw: float = float("nan")     # "quant size ... (x BPW)" as llama-quantize printed it
    predicted_bytes: int | None = None
    budget_bytes: int | None = None
    args: list[str] = field(default_factory=list)
    seconds: float = 0.0                # quantize + measure, when it was made
    cached: bool = False

    @property
    def bpw(self) -> float:
        """Bits per weight over the whole file, as model cards count them."""
        return 8 * self.file_bytes / self.n_params

    @property
    def mib(self) -> float:
        return self.file_bytes / 2**20

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "series": self.series, "target": self.target, "key": self.key,
                "file_bytes": self.file_bytes, "size_mib": round(self.mib, 3), "n_params": self.n_params,
                "bpw": round(self.bpw, 4),
                "llama_quantize_bpw": None if math.isnan(self.llama_bpw) else self.llama_bpw,
                "predicted_bytes": self.predicted_bytes, "budget_bytes": self.budget_bytes,
                **self.m.to_json(), "quantize_args": self.args, "seconds": round(self.seconds, 1)}

    @classmethod
    def from_json(cls, d: dict[str, Any], cached: bool = True) -> "Row":
        bpw = d.get("llama_quantize_bpw")
        return cls(d["method"], d["series"], d["key"], d["file_bytes"], d["n_params"], Measurement.from_json(d),
                   d.get("target", ""), float("nan") if bpw is None else bpw, d.get("predicted_bytes"),
                   d.get("budget_bytes"), list(d.get("quantize_args", [])), d.get("seconds", 0.0), cached)


class Store:
    """OUT/cache: measurements by key (written through, so an interrupted run keeps what it finished)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        self._file = root / "measurements.json"
        try:
            data = load_json(self._file, "measurement cache", CACHE_BYTES, 16) if self._file.exists() else {}
        except FileFormatError:
            data = {}                # a damaged cache only costs a rerun
        self._data: dict[str, Any] = data if isinstance(data, dict) else {}

    def get(self, key: str) -> Row | None:
        d = self._data.get(key)
        return Row.from_json(d) if d else None

    def put(self, row: Row) -> None:
        self._data[row.key] = row.to_json()
        write_file(self._file, json.dumps(self._data, indent=1, allow_nan=False).encode())

    def log(self, key: str, kind: str, text: str) -> None:
        (self.root / "logs" / f"{key}.{kind}.log").write_text(text)

    def read_log(self, key: str, kind: str) -> str:
        p = self.root / "logs" / f"{key}.{kind}.log"
        return p.read_text() if p.exists() else ""


class Tracker:
    """Progress over the whole run: a live bar on a terminal, one line per finished step always."""

    def __init__(self, total: float, quiet: bool, stream: TextIO = sys.stderr) -> None:
        self.bar = Progress(total, "eval", stream=stream, enabled=False if quiet else None)
        self.total, self.done, self.quiet, self.stream = total, 0.0, quiet, stream
        self.start = time.monotonic()

    def note(self, msg: str) -> None:
        if self.quiet:
            return
        el = time.monotonic() - self.start
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        left = f", ~{fmt_secs(el * (1 - frac) / frac)} left" if 0 < frac < 1 else ""
        if self.bar.enabled:
            self.stream.write("\r\033[K")
        self.stream.write(f"[{frac * 100:3.0f}% {fmt_secs(el)}{left}] {msg}\n")
        self.stream.flush()
        self.bar.show(force=True)

    def advance(self, units: float, item: str = "") -> None:
        self.done += units
        self.bar.update(units, item)

    def follow(self, units_per_chunk: float, item: str) -> Callable[[int], None]:
        """Callback for llama-perplexity's chunk count: advances by the chunks done since last call."""
        seen = [0]

        def on_chunks(n: int) -> None:
            if n > seen[0]:
                self.advance((n - seen[0]) * units_per_chunk, item)
                seen[0] = n
        return on_chunks

    def close(self) -> None:
        self.bar.close()


@dataclass
class Setup:
    model: Model
    quantize_bin: Path
    ppl: Perplexity
    out_dir: Path
    imatrix: str | None = None          # passed as given: llama-quantize stores the string in the file
    keep: bool = False
    quiet: bool = False


@dataclass
class Results:
    reference: Row
    rows: list[Row]
    text: Path
    setup: Setup
    skipped: list[str] = field(default_factory=list)    # plans that could not be made, and why


class Evaluation:
    """Runs the steps of one `eval` invocation, reusing what the cache holds."""

    def __init__(self, setup: Setup) -> None:
        self.s = setup
        self.store = Store(setup.out_dir / "cache")
        self.identity = {k: v for k, v in model_identity(setup.model).items() if k != "path"}
        p = setup.ppl
        self.base_key = _key({"model": self.identity, "text": _sha256_file(p.text), "n_ctx": p.n_ctx,
                              "chunks": p.chunks})
        self.imatrix_sha = _sha256_file(Path(setup.imatrix)) if setup.imatrix else None
        self.logits = self.store.root / f"base-{self.base_key}.kld"
        self.quant_units = max(1.0, p.chunks / 8)     # a quantization costs about this many chunks
        self.tracker = Tracker(0.0, setup.quiet)

    def key(self, m: Method) -> str:
        return _key({"base": self.base_key, "args": list(m.args), "imatrix": self.imatrix_sha})

    def pending_units(self, methods: Sequence[Method], unknown: int = 0) -> float:
        """Work left: the methods not in the cache, `unknown` more that cannot be keyed yet, the base run."""
        todo = sum(self.store.get(self.key(m)) is None for m in methods) + unknown
        need_base = todo > 0 or self.store.get(self.base_key) is None
        base = self.s.ppl.chunks if need_base and not self.logits.exists() else 0
        return todo * (self.quant_units + self.s.ppl.chunks) + base

    def start(self, total: float) -> None:
        self.tracker = Tracker(total, self.s.quiet)

    # -- the full-precision reference ------------------------------------------------------------
    def reference(self) -> Row:
        row = self.store.get(self.base_key)
        return row if row is not None else self._run_base()

    def _run_base(self) -> Row:
        s = self.s
        name = f"{input_type(s.model)} (reference)"
        self.tracker.note(f"full-precision logits of {s.model.path.name} on {s.ppl.text.name}")
        t0 = time.monotonic()
        part = self.logits.with_name(self.logits.name + ".part")
        m, log = s.ppl.run(s.ppl.base_argv(s.model.path, part),
                           self.tracker.follow(1.0, "reference logits"))
        os.replace(part, self.logits)
        self.store.log(self.base_key, "perplexity", log)
        row = Row(name, SERIES_REFERENCE, self.base_key, s.model.file_bytes, s.model.n_params, m,
                  seconds=time.monotonic() - t0)
        self.store.put(row)
        self.tracker.note(f"{name}: PPL {m.ppl:.4f} over {m.chunks} chunks of {m.n_ctx} tokens")
        return row

    def _ensure_logits(self) -> None:
        if not self.logits.exists():
            self._run_base()

    # -- one quantized file ----------------------------------------------------------------------
    def measure(self, method: Method) -> Row:
        key = self.key(method)
        row = self.store.get(key)
        if row is not None:
            row.method, row.target = method.name, method.target      # names may change, keys do not
            row.budget_bytes = method.budget_bytes
            self.tracker.note(f"{method.name}: cached (KLD {row.m.kld_mean:.5f}, {row.mib:.2f} MiB)")
            return row
        s = self.s
        self._ensure_logits()
        t0 = time.monotonic()
        qfile = self.store.root / f"{key}.gguf"
        if not qfile.exists():                 # else kept by an earlier --keep run
            self.tracker.note(f"{method.name}: quantizing")
            part = self.store.root / f"{key}.part.gguf"
            argv = method.argv(s.quantize_bin, s.model.path, part, s.imatrix, s.ppl.threads)
            self.store.log(key, "quantize", run_tool(argv))
            os.replace(part, qfile)
        self.tracker.advance(self.quant_units, method.name)
        llama_bpw = parse_quantize_log(self.store.read_log(key, "quantize")).bpw
        self.tracker.note(f"{method.name}: measuring ({qfile.stat().st_size / 2**20:.2f} MiB)")
        try:
            m, log = s.ppl.run(s.ppl.kld_argv(qfile, self.logits), self.tracker.follow(1.0, method.name))
            self.store.log(key, "perplexity", log)
            row = Row(method.name, method.series, key, qfile.stat().st_size, s.model.n_params, m, method.target,
                      llama_bpw, method.predicted_bytes, method.budget_bytes, list(method.args),
                      time.monotonic() - t0)
        finally:
            if not s.keep:
                qfile.unlink(missing_ok=True)
        self.store.put(row)
        self.tracker.note(f"{method.name}: PPL {m.ppl:.4f}, KLD {m.kld_mean:.5f}, same top {m.same_top:.2f}%")
        return row

    def finish(self) -> None:
        if not self.s.keep:
            self.logits.unlink(missing_ok=True)
        self.tracker.close()


def _without_imatrix_refusals(model: Model, specs: Sequence[str], required: set[str], skipped: list[str]) -> list[str]:
    """The baseline specs llama-quantize writes without an importance matrix on this model; the others are
    noted in `skipped` (an error for a spec that is a --sizes-of budget)."""
    kept = []
    tensors = [TensorSpec.of(t, model.arch) for t in model.tensors]
    for spec in specs:
        cmd = baseline_method(spec, requantize=True, imatrix=False).command
        need = imatrix_needed(model, cmd.simulate(tensors, hparams=model.hparams))
        if not need:
            kept.append(spec)
            continue
        why = f"llama-quantize refuses {spec} without an importance matrix ({len(need)} tensors); give --imatrix"
        if spec in required:
            raise UsageError(f"--sizes-of {spec}: {why}")
        skipped.append(why)
    return kept


def evaluate(setup: Setup, baselines: Sequence[str], bpws: Sequence[float], sizes_of: Sequence[str],
             planner: Callable[[Budget, str], Method] | None,
             recipes: Sequence[tuple[str, QuantizeCommand]] = ()) -> Results:
    """Baselines and recipes first (their sizes are the budgets of the --sizes-of plans, named by
    baseline spec or recipe name), then the plans. A plan that cannot be made (a budget outside the
    feasible range) is skipped with its reason."""
    if (bpws or sizes_of) and planner is None:
        raise ValueError("evaluate: prism_native plans need an analysis")
    requant = any(t.requantized for t in setup.model.tensors)
    imatrix = setup.imatrix is not None
    named = {n: recipe_method(n, c, requantize=requant, imatrix=imatrix) for n, c in recipes}
    specs = list(baselines) + [s for s in sizes_of if s not in baselines and s not in named]
    skipped: list[str] = []
    if not imatrix:
        specs = _without_imatrix_refusals(setup.model, specs, set(sizes_of), skipped)
    base_methods = [baseline_method(b, requantize=requant, imatrix=imatrix) for b in specs] + list(named.values())

    def plan(budget: Budget, label: str) -> Method | None:
        assert planner is not None
        try:
            return planner(budget, label)
        except PrismError as e:
            skipped.append(f"prism_native {label}: {e}")
            return None

    ev = Evaluation(setup)
    bpw_methods = [m for m in (plan(Budget("bpw", b), f"{b:g} bpw") for b in bpws) if m is not None]
    for msg in skipped:
        ev.tracker.note(f"skipped {msg}")
    ev.start(ev.pending_units(base_methods + bpw_methods, unknown=len(sizes_of)))
    try:
        reference = ev.reference()
        rows = [ev.measure(m) for m in base_methods]
        rows += [ev.measure(m) for m in bpw_methods]
        by_name = {r.method: r for r in rows}
        for spec in sizes_of:
            b = by_name[spec if spec in named else baseline_method(spec, requantize=requant, imatrix=False).name]
            m = plan(Budget("size", b.file_bytes), f"size of {b.method}")
            if m is None:
                ev.tracker.note(f"skipped {skipped[-1]}")
            if m is None or ev.store.get(ev.key(m)) is not None:
                ev.tracker.advance(ev.quant_units + setup.ppl.chunks)
            if m is not None:
                rows.append(ev.measure(m))
    finally:
        ev.finish()
    return Results(reference, rows, setup.ppl.text, setup, skipped)
