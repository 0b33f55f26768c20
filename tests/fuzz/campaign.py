"""The mutation campaign: base models, mutants, the commands run on each, outcomes and the table.

Full run (>= 2,000 mutants, every strategy, analyze/plan/ablate on a share of the valid ones):
    PYTHONPATH=src python -m tests.fuzz --mutants 2000
The quick subset runs in the test suite (tests/fuzz/test_fuzz.py). Every command's outcome is
compared with what the oracle expects; a mutant counts under the worst outcome of its commands.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

from . import harness, mutate, oracle, spec

FAKE_MARK = "prism-fuzz fake llama.cpp tool"
COMMANDS = ("inspect", "check-recipe", "analyze", "plan", "quantize", "eval", "ablate")
READS_WEIGHTS = frozenset({"analyze", "plan", "quantize", "ablate"})


class Outcome(Enum):
    """Best first; a mutant counts under its worst command."""
    VALID_OK = "valid accepted"
    VALID_USER_ERROR = "valid, user error"       # one line for a problem the oracle expects (NaN weights)
    MALFORMED_REJECTED = "malformed rejected"
    VALID_REJECTED = "valid rejected"
    MALFORMED_ACCEPTED = "malformed accepted"
    UNCLEAN = "unclean error"                    # not exactly one line naming the file, or warning text
    MODIFIED = "input modified"
    MEMORY = "memory"
    HANG = "hang"
    SIGNAL = "signal"
    TRACEBACK = "traceback"

    @property
    def bad(self) -> bool:
        return self not in (Outcome.VALID_OK, Outcome.VALID_USER_ERROR, Outcome.MALFORMED_REJECTED)


_ORDER = list(Outcome)


# -- base models ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Base:
    name: str
    files: tuple[bytes, ...]
    names: tuple[str, ...]          # file names (a split set follows NAME-0000i-of-0000n.gguf)


def make_bases(root: Path) -> list[Base]:
    """Small llama-like models written with gguf.GGUFWriter (tests/support/synth.py)."""
    from support import synth

    specs = {
        "f16": (synth.Spec(n_layer=2, n_vocab=320, byte_tokenizer=True), 0),
        "q8": (synth.Spec(n_layer=1, n_vocab=256, dtype="Q8_0", alignment=64), 0),
        "f32": (synth.Spec(n_layer=1, n_vocab=256, dtype="F32", n_ff=512), 0),
        "bf16": (synth.Spec(n_layer=1, n_vocab=288, byte_tokenizer=False, tied=True), 0),
        "split": (synth.Spec(n_layer=2, n_vocab=256), 12),
    }
    bases = []
    for name, (s, split) in specs.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        if name == "bf16":
            s.dtype = "BF16"
        synth.write(d / f"{name}.gguf", s, split_max_tensors=split)
        paths = sorted(d.glob("*.gguf"))
        bases.append(Base(name, tuple(p.read_bytes() for p in paths), tuple(p.name for p in paths)))
    return bases


# -- one mutant ----------------------------------------------------------------------------------------

@dataclass
class Mutant:
    index: int
    strategy: str
    base: str
    description: str
    files: list[bytes]
    names: tuple[str, ...]
    verdict: oracle.Verdict


def make_mutant(index: int, seed: int, strategy: str, bases: Sequence[Base]) -> Mutant:
    rng = random.Random(f"{seed}:{index}")
    base = rng.choice(bases)
    files = list(base.files)
    part = rng.randrange(len(files))
    files[part], description = mutate.STRATEGIES[strategy](rng, spec.parse(files[part]))
    if len(files) > 1:
        description = f"part {part + 1}: {description}"
    return Mutant(index, strategy, base.name, description, files, base.names, oracle.judge(files))


@dataclass(frozen=True)
class Expect:
    ok: bool            # exit 0 (eval/ablate: the fake tool's error) is right
    user_error: bool    # exit 2 with one line is right
    names_file: bool    # that line must name the file


def expectation(v: oracle.Verdict, command: str) -> Expect:
    if not v.valid:
        return Expect(False, True, True)
    if command in READS_WEIGHTS and v.values is oracle.Values.NONFINITE:
        return Expect(False, True, False)
    if command in READS_WEIGHTS and v.values is oracle.Values.HUGE:
        return Expect(True, True, False)
    return Expect(True, False, False)


_PY_WARNING = re.compile(r"\b\w*Warning: ")
_INFO = ("# ", "warning: ", "note: ")     # lines the CLI prints on purpose besides an error


def classify(r: harness.RunResult, exp: Expect, command: str, paths: Sequence[Path]) -> Outcome:
    if r.hang:
        return Outcome.HANG
    if r.signal is not None:
        return Outcome.SIGNAL
    if "Traceback (most recent call last)" in r.stderr:
        return Outcome.MEMORY if "MemoryError" in r.stderr or "bad_alloc" in r.stderr else Outcome.TRACEBACK
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if any(_PY_WARNING.search(ln) and not ln.startswith("warning: ") for ln in lines):
        return Outcome.UNCLEAN
    errors = [ln for ln in lines if not ln.startswith(_INFO)]
    fake_tool = command in ("eval", "ablate")
    succeeded = (r.rc == 2 and len(errors) == 1 and FAKE_MARK in errors[0]) if fake_tool else (r.rc == 0 and not errors)
    if succeeded:
        return Outcome.VALID_OK if exp.ok else Outcome.MALFORMED_ACCEPTED
    if r.rc == 0:
        return Outcome.UNCLEAN if exp.ok else Outcome.MALFORMED_ACCEPTED
    if r.rc != 2 or len(errors) != 1:
        return Outcome.UNCLEAN
    if not exp.user_error:
        return Outcome.VALID_REJECTED
    if exp.names_file:
        return Outcome.MALFORMED_REJECTED if any(str(p) in errors[0] for p in paths) else Outcome.UNCLEAN
    return Outcome.VALID_USER_ERROR


def _argv(command: str, model: Path, text: Path, fake: Path) -> list[str]:
    return {
        "inspect": ["inspect", str(model)],
        "check-recipe": ["check-recipe", str(model), "--", "Q4_K_M"],
        "analyze": ["analyze", str(model), "-q", "-t", "1"],
        "plan": ["plan", str(model), "--bpw", "4.5", "-t", "1", "-q"],
        "quantize": ["quantize", str(model), "-o", "out.gguf", "-t", "1", "-q", "--", "--allow-requantize", "Q4_K_M"],
        "eval": ["eval", str(model), "--text", str(text), "--llama-cpp", str(fake), "--baselines", "Q4_K_M",
                 "-o", "eval-out", "-t", "1", "-q"],
        "ablate": ["ablate", str(model), "--text", str(text), "--llama-cpp", str(fake), "-o", "ablate-out",
                   "-t", "1", "-q"],
    }[command]


@dataclass
class Record:
    mutant: Mutant
    outcome: Outcome
    per_command: dict[str, Outcome] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _fingerprint(paths: Sequence[Path]) -> list[tuple[str, int]]:
    return [(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths if p.exists()]


def run_mutant(m: Mutant, commands: Sequence[str], work: Path, env: "Env",
               runner: Callable[..., harness.RunResult]) -> Record:
    d = work / f"m{m.index}"
    (d / "in").mkdir(parents=True)
    (d / "cwd").mkdir()
    paths = [d / "in" / n for n in m.names]
    for p, data in zip(paths, m.files):
        p.write_bytes(data)
    before = _fingerprint(paths)
    rec = Record(m, Outcome.VALID_OK)
    for c in commands:
        r = runner(_argv(c, paths[0], env.text, env.fake_tools), d / "cwd", env.limits)
        o = classify(r, expectation(m.verdict, c), c, paths)
        rec.per_command[c] = o
        if o.bad or o is Outcome.VALID_USER_ERROR:
            rec.failures.append(f"{c}: {o.value} (rc {r.rc}, signal {r.signal}): {r.stderr.strip()[-600:]}")
    if _fingerprint(paths) != before:
        rec.per_command["(input)"] = Outcome.MODIFIED
        rec.failures.append("input file changed")
    rec.outcome = max(rec.per_command.values(), key=_ORDER.index)
    shutil.rmtree(d, ignore_errors=True)
    return rec


@dataclass(frozen=True)
class Env:
    text: Path
    fake_tools: Path
    limits: harness.Limits


def make_env(root: Path, limits: harness.Limits) -> Env:
    """An evaluation text and a fake llama.cpp folder whose tools fail at once with FAKE_MARK."""
    text = root / "eval.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 50)
    fake = root / "fake-llama"
    fake.mkdir(exist_ok=True)
    for tool in ("llama-quantize", "llama-perplexity", "llama-imatrix"):
        p = fake / tool
        p.write_text(f"#!/bin/sh\necho '0.00.000.001 E {FAKE_MARK}'\nexit 1\n")
        p.chmod(0o755)
    return Env(text, fake, limits)


# -- the campaign ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    mutants: int
    seed: int = 0
    weights_share: float = 0.25     # valid mutants (besides the value strategies) also run analyze/plan/ablate
    thorough: bool = True           # every command on each mutant; else inspect plus one rotating command
    exec_every: int = 0             # every n-th mutant through a real `python -m prism_native` (0: never)
    strategies: tuple[str, ...] = tuple(mutate.STRATEGIES)


def commands_for(m: Mutant, plan: Plan) -> list[str]:
    """Malformed mutants fail at once, so they get every command (thorough) or a rotating one; valid
    ones get the cheap commands, and the weight-reading ones for the value strategies and a share."""
    rng = random.Random(f"cmd:{plan.seed}:{m.index}")
    rotating = COMMANDS[1 + m.index % (len(COMMANDS) - 1)]
    if not m.verdict.valid:
        return list(COMMANDS) if plan.thorough else ["inspect", rotating]
    cmds = ["inspect", "check-recipe", "eval"] if plan.thorough else ["inspect"]
    if m.strategy in mutate.VALUE_STRATEGIES or rng.random() < plan.weights_share:
        cmds += ["analyze", "plan", "quantize"] + (["ablate"] if rng.random() < 0.3 else [])
    elif not plan.thorough and rotating not in READS_WEIGHTS:
        cmds.append(rotating)
    return cmds


def run_campaign(plan: Plan, root: Path, limits: harness.Limits = harness.Limits(),
                 progress: Callable[[Record], None] | None = None) -> list[Record]:
    harness.warm_up()
    bases = make_bases(root / "bases")
    env = make_env(root, limits)
    work = root / "work"
    work.mkdir(exist_ok=True)
    records = []
    for i in range(plan.mutants):
        m = make_mutant(i, plan.seed, plan.strategies[i % len(plan.strategies)], bases)
        runner = harness.run_exec if plan.exec_every and i % plan.exec_every == 0 else harness.run_fork
        rec = run_mutant(m, commands_for(m, plan), work, env, runner)
        records.append(rec)
        if progress:
            progress(rec)
    return records


def table(records: Sequence[Record]) -> str:
    """strategy x outcome, mutants counted under their worst command; then command x outcome."""
    cols = list(Outcome)
    short = [o.value for o in cols]

    def render(rows: dict[str, Counter], title: str) -> list[str]:
        w = max([len(title)] + [len(k) for k in rows])
        out = [f"{title:<{w}} " + " ".join(f"{s:>{max(len(s), 5)}}" for s in short) + "  total"]
        total: Counter = Counter()
        for k in sorted(rows):
            total.update(rows[k])
            out.append(f"{k:<{w}} " + " ".join(f"{rows[k][o]:>{max(len(s), 5)}}" for o, s in zip(cols, short))
                       + f"  {sum(rows[k].values()):>5}")
        out.append(f"{'total':<{w}} " + " ".join(f"{total[o]:>{max(len(s), 5)}}" for o, s in zip(cols, short))
                   + f"  {sum(total.values()):>5}")
        return out

    by_strategy: dict[str, Counter] = defaultdict(Counter)
    by_command: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        by_strategy[r.mutant.strategy][r.outcome] += 1
        for c, o in r.per_command.items():
            by_command[c][o] += 1
    return "\n".join(render(by_strategy, "strategy") + [""] + render(by_command, "command (runs)"))


def failures(records: Sequence[Record], limit: int = 20) -> str:
    bad = [r for r in records if r.outcome.bad]
    lines: list[str] = []
    for r in bad[:limit]:
        m = r.mutant
        lines.append(f"#{m.index} {m.strategy} on {m.base} ({m.description}); oracle: "
                     f"{m.verdict.malformed or 'valid, values ' + m.verdict.values.value}")
        lines += [f"    {f}" for f in r.failures]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="prism_native's GGUF mutation fuzzer")
    p.add_argument("--mutants", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights-share", type=float, default=0.25,
                   help="share of valid mutants that also run analyze/plan (default %(default)s)")
    p.add_argument("--exec-every", type=int, default=25,
                   help="every N-th mutant through a real `python -m prism_native` subprocess (default %(default)s)")
    p.add_argument("--strategy", action="append", help="only these strategies (repeatable)")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = p.parse_args(argv)
    strategies = tuple(args.strategy or mutate.STRATEGIES)
    unknown = set(strategies) - set(mutate.STRATEGIES)
    if unknown:
        p.error(f"unknown strategies {sorted(unknown)}; known: {', '.join(mutate.STRATEGIES)}")
    plan = Plan(args.mutants, args.seed, args.weights_share, True, args.exec_every, strategies)
    return run_and_report(lambda root, tick: run_campaign(plan, root, progress=tick), plan.mutants, plan.seed,
                          args.keep, "prism-fuzz-", "mutants")


def run_and_report(run: Callable[[Path, Callable[[Record], None]], list[Record]], total: int, seed: int,
                   keep: str | None, prefix: str, unit: str) -> int:
    """A full run in `keep` (else a temporary folder): bad records as they come, progress every 100,
    then the tables; exit code 1 if anything misbehaved."""
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    def tick(rec: Record) -> None:
        n = rec.mutant.index + 1
        if rec.outcome.bad:
            print(failures([rec]), file=sys.stderr, flush=True)
        if n % 100 == 0:
            print(f"{n}/{total} {unit}, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    try:
        records = run(root, tick)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{len(records)} {unit}, seed {seed}, {time.monotonic() - t0:.0f} s")
    print(table(records))
    bad = [r for r in records if r.outcome.bad]
    if bad:
        print(f"\n{len(bad)} {unit} misbehaved:\n{failures(bad, 50)}")
    return 1 if bad else 0
