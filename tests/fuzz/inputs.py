"""The fuzzer for every input besides the model: importance matrices (GGUF and legacy .dat), saved
plans, results files, tensor-type files, llama-quantize arguments, budgets and output paths.

Each case is one seeded mutation of a valid input (or a hostile output path) and one command on a
small valid model; the model fuzzer's harness runs it (forked, with a timeout and a memory limit) and
its outcome classes judge it (campaign.classify). Whether a case is malformed is decided here, apart
from prism_native: imatrix files by an independent reading of their format (`imatrix_gguf_verdict`,
`imatrix_dat_verdict`), the other kinds by construction. Every file the command reads, and every
FIFO, socket or device node offered as an output, is fingerprinted before and after: a change is
"input modified".

Full run (>= 1,000 cases, every strategy):
    PYTHONPATH=src python -m tests.fuzz.inputs --cases 1200
The quick subset runs in the test suite (tests/fuzz/test_inputs_fuzz.py).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # before numpy: forked children share no BLAS pool

import argparse
import contextlib
import copy
import hashlib
import io
import json
import math
import random
import shutil
import socket
import stat
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import campaign, harness, mutate, oracle, spec
from .campaign import Expect, Outcome, Record

LIMITS = harness.Limits(timeout=60.0)
GGUF_STRATEGIES = ("truncate", "byte_flip", "lie_count", "lie_length", "lie_offset", "overlap", "misalign",
                   "dims", "tensor_type", "value_type", "magic", "trailing", "nested_array", "alignment",
                   "duplicate", "name_length", "bad_utf8", "nonfinite", "huge")
MAX_COUNT = 2.0 ** 62          # the documented bound on an imatrix count
DAT_MAX_ENTRIES = 1_000_000
DAT_MAX_NAME = 4096


# -- the environment: one valid model and one valid input of each kind -------------------------------

@dataclass
class Env:
    root: Path
    model: Path
    quantized: dict[str, tuple[int, int]]      # tensor llama-quantize quantizes -> (ne0, n_mat)
    results: dict[str, Any]                    # a complete analysis of the model (its JSON)
    plan: dict[str, Any]                       # `plan --json` of the model
    imatrix: dict[str, tuple[np.ndarray, np.ndarray]]   # name -> (in_sum2 (n_mat, ne0), counts (n_mat,))
    mknod: bool                                # device nodes can be made here (root, no container rule)


def _capture(argv: list[str]) -> str:
    from prism_native.cli.main import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"setting up the fuzzer: {argv} failed")
    return out.getvalue()


def _can_mknod(d: Path) -> bool:
    try:
        os.mknod(d / "probe", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        return False
    os.unlink(d / "probe")
    return True


def make_env(root: Path) -> Env:
    from dataclasses import replace

    from support import synth

    from prism_native.llama.quantizable import quantizable_tensors
    from prism_native.read.model import Model

    base = root / "base"
    base.mkdir(parents=True, exist_ok=True)
    model = base / "model.gguf"
    synth.write(model, replace(synth.VARIANTS["dense"], n_layer=2))
    res = base / "model.prism.json"
    _capture(["analyze", str(model), "-o", str(res), "-q", "-t", "1"])
    plan = json.loads(_capture(["plan", str(model), "--from", str(res), "--bpw", "4.5", "--json", "-q"]))
    quantized = {t.name: (t.shape[0], t.shape[2] if len(t.shape) > 2 else 1)
                 for t in quantizable_tensors(Model(model))}
    rng = np.random.default_rng(0)
    imatrix = {n: ((rng.random((m, ne0)) * 50 + 0.5).astype(np.float32), np.full(m, 10.0, np.float32))
               for n, (ne0, m) in quantized.items()}
    return Env(root, model, quantized, json.loads(res.read_text()), plan, imatrix, _can_mknod(base))


# -- one case ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    """Shaped like campaign.Mutant, so that campaign.table and campaign.failures report it."""
    index: int
    strategy: str
    base: str                        # the command run
    description: str
    verdict: oracle.Verdict          # malformed: the rule broken; valid otherwise
    argv: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)      # what a one-line error must name (a file, an option)
    inputs: list[Path] = field(default_factory=list)    # files the command reads: never written
    specials: list[Path] = field(default_factory=list)  # FIFOs, sockets, devices, links: never replaced
    may_refuse: bool = False         # valid, but a one-line refusal is right too (a budget below the cheapest)


Draft = tuple[str, str | None, list[str], list[str], list[Path]]   # description, malformed, argv, names, inputs


def _quantize(env: Env, out: str, *llama: str) -> list[str]:
    return ["quantize", str(env.model), "-o", out, "-q", "-t", "1", "--", *llama]


# -- imatrix files: written here, judged by an independent reading of the format -------------------------

def _write_gguf_imatrix(path: Path, entries: dict[str, tuple[np.ndarray, np.ndarray]],
                        keys: dict[str, tuple[str, Any]]) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "imatrix")
    w.add_type("imatrix")
    for key, (kind, v) in keys.items():
        {"arr": w.add_array, "u32": w.add_uint32, "i32": w.add_int32, "str": w.add_string}[kind](key, v)
    for name, (s, c) in entries.items():
        w.add_tensor(f"{name}.in_sum2", np.ascontiguousarray(s))
        w.add_tensor(f"{name}.counts", np.ascontiguousarray(c).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _entry_problem(env: Env, name: str, v: np.ndarray) -> str | None:
    """llama-quantize's use of one entry: non-finite importance, or a size the model's tensor cannot take
    (token_embd is then quantized without it)."""
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        return f"entry {name} not finite and >= 0"
    if name in env.quantized and "token_embd" not in name:
        ne0, m = env.quantized[name]
        if v.size != ne0 * m:
            return f"entry {name} of {v.size} values"
    return None


_KEY_TYPES = {"imatrix.datasets": (spec.ARR, spec.STR), "imatrix.chunk_count": (spec.U32, None),
              "imatrix.chunk_size": (spec.U32, None)}


def imatrix_gguf_verdict(data: bytes, env: Env) -> str | None:
    try:
        g = spec.parse(data)
    except spec.Reject as e:
        return str(e)
    for key, (vtype, item) in _KEY_TYPES.items():
        kv = g.kv(key)
        if kv is None or kv.vtype != vtype or (item is not None and kv.array_type() != item):
            return f"key {key}"
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in g.tensors:
        name = t.name.decode()
        for suffix, dest in ((".in_sum2", sums), (".counts", counts)):
            if name.endswith(suffix):
                if t.ttype != spec.F32:
                    return f"{name} not F32"
                dest[name[:-len(suffix)]] = np.frombuffer(g.tensor_bytes(t), "<f4").astype(np.float64)
    if not sums and not counts:
        return "no entries"
    for name in set(sums) | set(counts):
        if name not in sums or name not in counts:
            return f"entry {name} half"
        s, c = sums[name], counts[name]
        if s.size % c.size:
            return f"entry {name} indivisible"
        if not np.all(np.abs(c) < MAX_COUNT):
            return f"entry {name} count out of range"
        lround = np.where(c >= 0, np.floor(c + 0.5), -np.floor(-c + 0.5)).astype(np.float32)
        with np.errstate(all="ignore"):
            v = np.where(np.repeat(lround, s.size // c.size) > 0,
                         s.astype(np.float32) / np.repeat(np.maximum(lround, 1), s.size // c.size), 1.0)
        problem = _entry_problem(env, name, v)
        if problem:
            return problem
    return None


def _dat_bytes(entries: dict[str, tuple[np.ndarray, int]], trailer: bytes) -> bytes:
    out = [struct.pack("<i", len(entries))]
    for name, (v, ncall) in entries.items():
        b = name.encode()
        out += [struct.pack("<i", len(b)), b, struct.pack("<ii", ncall, v.size), v.astype("<f4").tobytes()]
    return b"".join(out) + trailer


def imatrix_dat_verdict(data: bytes, env: Env) -> str | None:
    if data[:4] == b"GGUF":
        return imatrix_gguf_verdict(data, env)
    pos = 0

    def take(n: int) -> bytes | None:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            return None
        pos += n
        return data[pos - n:pos]

    head = take(4)
    if head is None:
        return "short"
    (n,) = struct.unpack("<i", head)
    if not 1 <= n <= DAT_MAX_ENTRIES:
        return f"{n} entries"
    entries: dict[str, np.ndarray] = {}
    for _ in range(n):
        b = take(4)
        if b is None:
            return "truncated"
        (ln,) = struct.unpack("<i", b)
        if not 0 <= ln <= DAT_MAX_NAME:
            return f"name length {ln}"
        raw = take(ln)
        b = take(8)
        if raw is None or b is None:
            return "truncated"
        ncall, nval = struct.unpack("<ii", b)
        if nval < 1:
            return f"{nval} values"
        vals = take(4 * nval)
        if vals is None:
            return "truncated"
        v = np.frombuffer(vals, "<f4").astype(np.float32)
        with np.errstate(all="ignore"):
            v = v / np.float32(ncall) if ncall > 0 else v
        entries[raw.split(b"\0", 1)[0].decode("utf-8", "replace")] = v
    for name, v in entries.items():
        problem = _entry_problem(env, name, v)
        if problem:
            return problem
    return None


def _imatrix_command(rng: random.Random, env: Env, im: Path) -> list[str]:
    if rng.random() < 0.15:
        return ["analyze", str(env.model), "--imatrix", str(im), "-o", "res.json", "-q", "-t", "1"]
    return _quantize(env, "out.gguf", "--imatrix", str(im), "Q4_K_M")


def s_imatrix_gguf(rng: random.Random, env: Env, d: Path) -> Draft:
    entries = copy.deepcopy(env.imatrix)
    keys: dict[str, tuple[str, Any]] = {"imatrix.datasets": ("arr", ["train.txt"]),
                                        "imatrix.chunk_count": ("u32", 10), "imatrix.chunk_size": ("u32", 512)}
    name = rng.choice(sorted(entries))
    s, c = entries[name]
    kind = rng.choice(["as is", "subset", "extra", "count", "count", "sum", "size", "half", "empty", "key",
                       "key", "f16", "bytes", "bytes", "bytes", "bytes", "bytes", "bytes"])
    what = kind
    if kind == "subset":
        for n in rng.sample(sorted(entries), rng.randrange(len(entries))):
            del entries[n]
    elif kind == "extra":
        entries["blk.99.ffn_up.weight"] = (np.ones((1, 64), np.float32), np.ones(1, np.float32))
    elif kind == "count":
        v = rng.choice([0.0, -3.0, 2.5, 0.4, 1e9, math.inf, -math.inf, math.nan, 1e30, 2.0**62, 2.0**61])
        entries[name] = (s, np.full_like(c, v))
        what = f"count {v}"
    elif kind == "sum":
        v = rng.choice([math.nan, math.inf, -1.0, 0.0, 1e6])
        s = s.copy()
        s.flat[rng.randrange(s.size)] = v
        entries[name] = (s, c)
        what = f"in_sum2 value {v}"
    elif kind == "size":
        k = rng.choice([1, 3, 32, -1])
        entries[name] = (np.ones((1, max(1, s.size + k)), np.float32), np.ones(1, np.float32))
        what = f"{name} {s.size + k} values"
    elif kind == "half":
        entries[name] = (s, np.ones(2, np.float32)) if rng.random() < 0.5 else (s, c)
        if rng.random() < 0.5:
            entries = {n: e for n, e in entries.items() if n != name}
            entries[name + "x"] = (s, c)
    elif kind == "empty":
        entries = {}
    elif kind == "key":
        key = rng.choice(sorted(keys))
        if rng.random() < 0.5:
            del keys[key]
        else:
            keys[key] = rng.choice([("i32", 5), ("str", "x"), ("u32", 7)] if key != "imatrix.datasets"
                                   else [("str", "x"), ("u32", 1), ("arr", [1, 2])])
        what = f"key {key} {keys.get(key, 'dropped')}"
    elif kind == "f16":
        entries[name] = (s.astype(np.float16), c) if rng.random() < 0.5 else (s, c.astype(np.float16))
    path = d / "im.gguf"
    _write_gguf_imatrix(path, entries, keys)
    if kind == "bytes":
        strategy = rng.choice(GGUF_STRATEGIES)
        data, what = mutate.STRATEGIES[strategy](rng, spec.parse(path.read_bytes()))
        what = f"{strategy}: {what}"
        path.write_bytes(data)
    argv = _imatrix_command(rng, env, path)
    return what, imatrix_gguf_verdict(path.read_bytes(), env), argv, [str(path)], [path]


def s_imatrix_dat(rng: random.Random, env: Env, d: Path) -> Draft:
    entries = {n: ((s / c[0]).reshape(-1) * 10, 10) for n, (s, c) in env.imatrix.items()}
    trailer = struct.pack("<ii", 10, 9) + b"train.txt"
    kind = rng.choice(["as is", "ncall", "value", "no trailer", "garbage trailer", "name", "bytes", "bytes",
                       "bytes", "truncate", "truncate", "empty"])
    name = rng.choice(sorted(entries))
    what = kind
    if kind == "ncall":
        v, _ = entries[name]
        entries[name] = (v, rng.choice([0, -5, 1, 2**31 - 1]))
        what = f"ncall {entries[name][1]}"
    elif kind == "value":
        v = entries[name][0].copy()
        v[rng.randrange(v.size)] = rng.choice([math.nan, math.inf, -math.inf, 3e38])
        entries[name] = (v, 10)
    elif kind == "no trailer":
        trailer = b""
    elif kind == "garbage trailer":
        trailer = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    elif kind == "name":
        entries[name.replace(".weight", "\0junk.weight") if rng.random() < 0.5 else name + "\xff"] = entries.pop(name)
    data = _dat_bytes(entries, trailer)
    if kind in ("bytes", "truncate"):
        b = bytearray(data)
        if kind == "truncate":
            b = b[:rng.randrange(len(b))]
        else:
            for _ in range(rng.randint(1, 3)):
                at = rng.choice([0, 1, 3, 4, 8, rng.randrange(len(b)), rng.randrange(min(len(b), 200))])
                if rng.random() < 0.5:
                    struct.pack_into("<i", b, min(at, len(b) - 4), rng.choice([-1, 0, 1, 2**31 - 1, 4097, 3, 64]))
                else:
                    b[at] = rng.randrange(256)
        data = bytes(b)
        what = f"{kind} ({len(data)} bytes)"
    elif kind == "empty":
        data = b""
    path = d / "im.dat"
    path.write_bytes(data)
    argv = _imatrix_command(rng, env, path)
    return what, imatrix_dat_verdict(data, env), argv, [str(path)], [path]


# -- JSON inputs: saved plans and results files --------------------------------------------------------

def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def _json_damage(rng: random.Random, doc: Any) -> tuple[str, bytes]:
    """A damage any JSON input must survive: (description, bytes)."""
    text = json.dumps(doc)
    kind = rng.choice(["deep", "truncated", "nan", "huge number", "not utf-8", "empty", "long int", "too big"])
    if kind == "deep":
        depth = rng.choice([40, 1000, 100_000, 1_000_000])
        return f"nested {depth} deep", ('{"recipe": ' + _nest(depth) + ', "x": 1}').encode()
    if kind == "truncated":
        cut = rng.randrange(1, len(text) - 1)
        return f"cut at {cut}", text[:cut].encode()
    if kind == "nan":
        return "NaN in it", text.replace("{", '{"v": NaN, ', 1).encode()
    if kind == "huge number":
        return "1e999 in it", text.replace("{", '{"v": 1e999, ', 1).encode()
    if kind == "long int":
        return "a 5000-digit number", text.replace("{", '{"v": ' + "9" * 5000 + ", ", 1).encode()
    if kind == "not utf-8":
        return "invalid UTF-8", text.replace('"', '"\xff', 1).encode("latin-1", "replace")
    if kind == "too big":
        return "65 MiB of padding", text.encode() + b" " * (65 << 20)
    return "empty", b""


def _special_file(rng: random.Random, d: Path, name: str) -> tuple[str, Path]:
    """A FIFO, a directory or nothing where a file is expected."""
    p = d / name
    kind = rng.choice(["fifo", "directory", "missing"])
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        p.mkdir()
    return kind, p


def s_saved_plan(rng: random.Random, env: Env, d: Path) -> Draft:
    doc = copy.deepcopy(env.plan)
    r = doc["recipe"]
    path = d / "plan.json"
    kind = rng.choice(["as is", "list of one", "extra keys", "no argv", "no planned", "no written",
                       "damage", "damage", "damage", "special", "two plans", "no plans", "base type",
                       "rule", "rule", "rule type", "written", "planned", "requires", "argv", "too many rules",
                       "recipe kind"])
    bad: str | None = kind
    data: bytes | None = None
    if kind in ("as is", "extra keys", "no argv", "no planned", "no written"):
        bad = None
        if kind == "extra keys":
            doc["mine"] = {"a": [1, 2]}
            r["note"] = "hand-edited"
        elif kind == "no argv":
            del doc["argv"]
        elif kind == "no planned":
            del r["planned"]
        elif kind == "no written":
            del r["written"]
    elif kind == "list of one":
        bad, doc = None, [doc]
    elif kind == "damage":
        kind, data = _json_damage(rng, doc)
        bad = kind
    elif kind == "special":
        kind, path = _special_file(rng, d, "plan.json")
        bad, data = kind, None
    elif kind == "two plans":
        doc = [doc, doc]
    elif kind == "no plans":
        doc = []
    elif kind == "base type":
        r["base_type"] = rng.choice(["Q9_K", 5, None, "", ["Q4_K"]])
    elif kind == "rule":
        i = rng.randrange(len(r["tensor_types"]))
        r["tensor_types"][i] = rng.choice([{"pattern": "(", "type": "Q8_0"}, {"pattern": "(" * 3000 + ")" * 3000,
                                           "type": "Q8_0"}, {"type": "Q8_0"}, "attn_v=q8_0", None,
                                           {"pattern": 7, "type": "Q8_0"}, {"pattern": "attn_v", "type": "Q9_9"},
                                           {"pattern": "(a+)+$", "type": "Q8_0"}])
    elif kind == "rule type":     # another type for one pattern: the plan's written types no longer come out
        i = rng.randrange(len(r["tensor_types"]))
        tensors = [n for n, w in r["written"].items() if _matches(r["tensor_types"][i]["pattern"], n)]
        if not tensors:
            return _retry(rng, env, d, s_saved_plan)
        r["tensor_types"][i]["type"] = "Q4_0" if r["written"][tensors[0]] == "Q8_0" else "Q8_0"
    elif kind == "written":
        n = rng.choice(sorted(r["written"]))
        r["written"][n] = rng.choice(["Q9_9", 3, "Q8_0" if r["written"][n] != "Q8_0" else "Q4_0"])
    elif kind == "planned":
        r["planned"] = rng.choice([["x"], "x", {"blk.77.attn_q.weight": "Q4_K"}, {"output.weight": 5}])
    elif kind == "requires":
        r["requires_imatrix"] = rng.choice(["blk.0.attn_q.weight", [1], {"a": 1}])
    elif kind == "argv":
        doc["argv"] = rng.choice([["llama-quantize", "--bogus", "m.gguf", "Q4_K_M"], ["llama-quantize"],
                                  ["llama-quantize", "m.gguf", "Q9_K"]])
    elif kind == "too many rules":
        r["tensor_types"] = [{"pattern": "^x$", "type": "Q8_0"}] * 70_000
    elif kind == "recipe kind":
        doc["recipe"] = rng.choice([[], "x", None, {"base_type": "Q4_K_M"}])
    if kind not in ("fifo", "directory", "missing"):
        path.write_bytes(data if data is not None else json.dumps(doc).encode())
    argv = ["quantize", str(env.model), "--recipe", str(path), "-o", "out.gguf", "-q", "-t", "1"]
    return f"{kind}", bad, argv, [str(path)], [path]


def _matches(pattern: str, name: str) -> bool:
    from prism_native.llama.patterns import TensorTypeRule
    return TensorTypeRule.make(pattern, "Q8_0").matches(name)


def _retry(rng: random.Random, env: Env, d: Path, strategy: Callable[..., Draft]) -> Draft:
    for p in d.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return strategy(rng, env, d)


def s_results(rng: random.Random, env: Env, d: Path) -> Draft:
    doc = copy.deepcopy(env.results)
    path = d / "res.json"
    name = rng.choice(sorted(doc["tensors"]))
    t = doc["tensors"][name]
    kind = rng.choice(["as is", "weights", "metric", "rel_error", "extra key", "damage", "damage", "damage",
                       "special", "format", "model", "model path", "identity", "tensors kind", "tensor kind",
                       "field type", "n_params", "shape", "unknown field", "missing field", "renamed",
                       "removed", "errors type", "negative error", "partial", "candidates", "metric range"])
    bad: str | None = kind
    data: bytes | None = None
    if kind == "as is":
        bad = None
    elif kind == "weights":
        bad, doc["weights"] = None, rng.choice([{}, {"alpha": 2.0}])
    elif kind == "metric":
        bad = None
        metric = rng.choice(["alpha", "dominance", "imbalance", "fragility", "boundary"])
        t[metric] = rng.choice([0.0, -3.0, 1e20, 7.5, None])
    elif kind == "rel_error":
        bad = None
        ty = rng.choice(sorted(t["errors"]))
        if t["errors"][ty]["rel_error"] is not None:
            t["errors"][ty]["rel_error"] = rng.choice([0.0, 1e-9, 0.5, 3.0])
    elif kind == "extra key":
        bad, doc["mine"] = None, [1, {"x": None}]
    elif kind == "damage":
        kind, data = _json_damage(rng, doc)
        bad = kind
    elif kind == "special":
        kind, path = _special_file(rng, d, "res.json")
        bad = kind
    elif kind == "format":
        doc["format"] = rng.choice(["prism-analysis/2", None, 1])
    elif kind == "model":
        doc["model"] = rng.choice([None, [], "model.gguf"])
    elif kind == "model path":
        doc["model"]["path"] = rng.choice([None, 3, ["x"]])
    elif kind == "identity":
        doc["model"]["header_sha256"] = "0" * 64
    elif kind == "tensors kind":
        doc["tensors"] = rng.choice([[], "x", 3])
    elif kind == "tensor kind":
        doc["tensors"][name] = rng.choice([None, [], "x"])
    elif kind == "field type":
        f = rng.choice(["alpha", "n_params", "shape", "errors", "osqe", "layer", "cls", "imatrix", "undefined"])
        t[f] = rng.choice({"cls": [3, None], "imatrix": ["x", 1, None], "undefined": ["x", [1], {"a": 1}]}.get(
            f, ["x", [1, "a"], {"a": "b"}, True]))
        kind = f"field {f} = {t[f]!r}"
    elif kind == "n_params":
        t["n_params"] = rng.choice([-1, 0, t["n_params"] + 1, 2**70])
    elif kind == "shape":
        t["shape"] = rng.choice([[], [0, 5], [t["shape"][0] + 1, *t["shape"][1:]], [1, 2, 3, 4, 5]])
    elif kind == "unknown field":
        t["mine"] = 1
    elif kind == "missing field":
        del t[rng.choice(["alpha", "errors", "shape", "name"])]
    elif kind == "renamed":
        doc["tensors"]["blk.7.attn_q.weight"] = doc["tensors"].pop(name)
    elif kind == "removed":
        del doc["tensors"][name]
    elif kind == "errors type":
        t["errors"].pop(rng.choice(sorted(t["errors"])))
    elif kind == "negative error":
        ty = rng.choice(sorted(t["errors"]))
        t["errors"][ty]["rel_error"] = rng.choice([-0.5, "x", 1e31])
    elif kind == "partial":
        doc["complete"] = False
    elif kind == "candidates":
        doc["settings"]["candidates"] = rng.choice([None, "Q4_K", ["Q4_K"]])
    elif kind == "metric range":
        t["alpha"] = rng.choice([1e31, -1e31])
    if kind not in ("fifo", "directory", "missing"):
        path.write_bytes(data if data is not None else json.dumps(doc).encode())
    argv = ["plan", str(env.model), "--from", str(path), "--bpw", "4.5", "-q"]
    return kind, bad, argv, [str(path)], [path]


# -- tensor-type files ------------------------------------------------------------------------------------

def s_tensor_type_file(rng: random.Random, env: Env, d: Path) -> Draft:
    rules = [f"{o['pattern']}={o['type']}" for o in env.plan["recipe"]["tensor_types"]]
    path = d / "types.txt"
    kind = rng.choice(["as is", "crlf", "empty", "simple", "upper", "binary", "binary", "no '='",
                       "no name", "no type", "unknown type", "bad regex", "deep regex", "exponential regex",
                       "too many", "too big",
                       "special", "special"])
    bad: str | None = kind
    data = "\n".join(rules).encode()
    if kind in ("as is", "crlf", "empty", "simple", "upper"):
        bad = None
        data = {"as is": data, "crlf": "\r\n\t ".join(rules).encode(), "empty": b"  \n",
                "simple": b"attn_v=q8_0 ffn_down=Q6_K", "upper": b"ATTN_V=Q8_0\n"}[kind]
    elif kind == "binary":
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))) + b"\xff\xfe"
    elif kind == "no '='":
        data += b"\nattn_v"
    elif kind == "no name":
        data += b"\n=q8_0"
    elif kind == "no type":
        data += b"\nattn_v="
    elif kind == "unknown type":
        data += b"\nattn_v=q9_k"
    elif kind == "bad regex":
        data += b"\n(attn=q8_0"
    elif kind == "deep regex":
        data += b"\n" + b"(" * 5000 + b"a" + b")" * 5000 + b"=q8_0"
    elif kind == "exponential regex":
        data += b"\n" + rng.choice([b"(.*.*)*y", b"(a+)+$", b"((blk)+.)*z", b"(\\w+\\.)+q"]) + b"=q8_0"
    elif kind == "too many":
        data = b"^x$=q8_0\n" * 70_000
    elif kind == "too big":
        data = b" " * (9 << 20)
    if kind == "special":
        kind, path = _special_file(rng, d, "types.txt")
        bad = kind
    else:
        path.write_bytes(data)
    if rng.random() < 0.3:
        argv = ["check-recipe", str(env.model), "--", "--tensor-type-file", str(path), "Q4_K_M"]
    else:
        argv = _quantize(env, "out.gguf", "--tensor-type-file", str(path), "Q4_K_M")
    return kind, bad, argv, [str(path)], [path]


# -- llama-quantize's arguments -----------------------------------------------------------------------

_VALID_ARGS = [["Q4_K_M"], ["Q4_K_M", "-1"], ["Q4_K_M", "0"], ["Q4_K_M", "3"], ["Q4_K_M", " 2"], ["Q4_K_M", "3x"],
               ["Q4_K_M", "2147483647"], ["q4_k_m"], ["15"], ["--pure", "Q4_K_M"], ["COPY"],
               ["--output-tensor-type", "q8_0", "Q4_K_M"], ["--token-embedding-type", "q4_0", "Q4_K_M"],
               ["--leave-output-tensor", "Q4_K_M"], ["--tensor-type", "attn_v=q8_0", "Q4_K_M"],
               ["--allow-requantize", "Q4_K_M"], ["--dry-run", "Q4_K_M"], ["Q4_K_M", "4", "extra", "--pure"],
               ["--max-buffer-size", "4", "Q4_K_M"], ["--override-kv", "general.name=str:fuzz", "Q4_K_M"],
               ["--prune-layers", "1", "Q4_K_M"], ["Q8_0", "+2"], ["Q4_K_M", "-0"]]
# (arguments, what the one-line error must name)
_BAD_ARGS = [(["--bogus", "Q4_K_M"], "--bogus"), (["--tensor-type"], "--tensor-type"), (["Q9_K"], "Q9_K"),
             (["Q4_K_M", "x"], "'x'"), (["Q4_K_M", "99999999999"], "99999999999"),
             (["--include-weights", "a", "--exclude-weights", "b", "Q4_K_M"], "--include-weights"),
             (["--tensor-type", "attn_v", "Q4_K_M"], "attn_v"), (["--tensor-type", "attn_v=q9", "Q4_K_M"], "q9"),
             (["--override-kv", "bad", "Q4_K_M"], "bad"), (["--prune-layers", "x", "Q4_K_M"], "x"),
             (["--output-tensor-type", "q9_9", "Q4_K_M"], "q9_9"),
             (["--tensor-type=attn_v=q8_0", "Q4_K_M"], "--tensor-type=attn_v=q8_0"),
             (["--imatrix"], "--imatrix"), (["--pure"], "ftype"),
             (["--tensor-type", "(.*.*)*q=q8_0", "Q4_K_M"], "(.*.*)*q")]


def s_quantize_args(rng: random.Random, env: Env, d: Path) -> Draft:
    if rng.random() < 0.55:
        args, bad, name = rng.choice(_VALID_ARGS), None, ""
    else:
        (args, name), bad = rng.choice(_BAD_ARGS), "arguments"
    if rng.random() < 0.3 and "--prune-layers" not in args:     # check-recipe refuses to follow a pruning
        argv = ["check-recipe", str(env.model), "--", *args]
    else:
        argv = ["quantize", str(env.model), "-o", "out.gguf", "-q", "-t", "1", "--", *args]
    return " ".join(args), bad, argv, [name] if bad else [], []


# -- budgets ----------------------------------------------------------------------------------------------

def s_budget(rng: random.Random, env: Env, d: Path) -> Draft:
    res = d / "res.json"
    res.write_text(json.dumps(env.results))
    option = rng.choice(["--bpw", "--bpw", "--size", "--sweep"])
    refuse = False
    if option == "--bpw":
        value, bad = rng.choice([(f"{rng.uniform(3.0, 8.0):.3f}", None), ("4.5", None), ("+4.5", None),
                                 ("4.5e0", None), (" 5 ", None), ("12", None), ("63.9", None), ("1.0", "refuse"),
                                 ("x", "bad"), ("", "bad"), ("nan", "bad"), ("inf", "bad"), ("-inf", "bad"),
                                 ("-1", "bad"), ("0", "bad"), ("1e999", "bad"), ("1" * 400, "bad"),
                                 ("4.5,5", "bad"), ("4.5.5", "bad"), ("0x10", "bad"), ("64", "bad")])
    elif option == "--size":
        value, bad = rng.choice([("1MiB", None), ("900KiB", None), ("0.9 MiB", None), ("2MiB", None),
                                 ("123456789", None), ("1.5GiB", None), ("1KiB", "refuse"), ("0", "refuse"),
                                 ("12XB", "bad"), ("-3MiB", "bad"), ("1" * 400 + "GiB", "bad"), ("nan", "bad"),
                                 ("", "bad"), ("1e3MiB", "bad"), ("inf", "bad"), ("9" * 30 + "TiB", "bad")])
    else:
        value, bad = rng.choice([("3:5:0.5", None), ("3:3:1", None), ("4:12:2", None), ("a:b:c", "bad"),
                                 ("3:2:0.5", "bad"), ("3:5:0", "bad"), ("3:5:-1", "bad"), ("nan:5:1", "bad"),
                                 ("0.001:60:1e-9", "bad"), ("3:5", "bad"), ("inf:inf:1", "bad"),
                                 ("1:2:1e-300", "bad"), ("", "bad")])
    refuse, bad = bad == "refuse", (None if bad == "refuse" else bad)
    budget = [f"{option}={value}"] if value.startswith("-") and rng.random() < 0.3 else [option, value]
    if option != "--sweep" and rng.random() < 0.3:
        argv = ["quantize", str(env.model), "--from", str(res), *budget, "-o", "out.gguf", "-q", "-t", "1"]
    else:
        argv = ["plan", str(env.model), "--from", str(res), *budget, "-q"]
    return f"{option} {value!r}", bad and f"{option} {bad}", argv, [option, value] if bad else [], [res], refuse


# -- output paths ------------------------------------------------------------------------------------------

def _socket(p: Path) -> None:
    here = os.getcwd()
    os.chdir(p.parent)             # AF_UNIX paths are short: bind the name relative to its folder
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(p.name)
    finally:
        os.chdir(here)


def s_output_path(rng: random.Random, env: Env, d: Path) -> Draft:
    command = rng.choice(["llama", "llama", "recipe", "budget", "analyze", "type file"])
    plan, res, im, types = d / "plan.json", d / "res.json", d / "im.dat", d / "types.txt"
    inputs: list[Path] = []
    kinds = ["new", "existing", "dash", "long ok", "unicode", "newline", "dangling link", "link to file",
             "fifo", "socket", "device", "link to device", "link to fifo", "directory", "missing folder",
             "file as folder", "too long", "loop", "model", "hard link to model", "link to model", "empty"]
    kinds += {"recipe": ["recipe"], "budget": ["results"], "llama": ["imatrix", "types"]}.get(command, [])
    kind = rng.choice(kinds)
    target = d / "out.gguf"
    bad: str | None = kind
    special: list[Path] = []
    refuse = False
    if kind in ("new", "existing", "dash", "long ok", "unicode", "newline", "dangling link", "link to file"):
        bad = None
        target = d / {"dash": "-x.gguf", "long ok": "L" * 250, "unicode": "mödel-ü.gguf",
                      "newline": "a\nb.gguf"}.get(kind, "out.gguf")
        if kind == "existing":
            target.write_bytes(b"old output")
        elif kind == "dangling link":
            os.symlink("real-out.gguf", target)
        elif kind == "link to file":
            (d / "real-out.gguf").write_bytes(b"old")
            os.symlink("real-out.gguf", target)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        _socket(target)
    elif kind in ("device", "link to device"):
        node = d / "null-node"
        if env.mknod:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        else:
            os.mkfifo(node)
        if kind == "device":
            target = node
        else:
            os.symlink(node.name, target)
        special.append(node)
    elif kind == "link to fifo":
        os.mkfifo(d / "fifo")
        os.symlink("fifo", target)
        special.append(d / "fifo")
    elif kind == "directory":
        target.mkdir()
    elif kind == "missing folder":
        target = d / "nowhere" / "out.gguf"
    elif kind == "file as folder":
        (d / "plain").write_bytes(b"x")
        target = d / "plain" / "out.gguf"
    elif kind == "too long":
        target = d / ("L" * 300)
    elif kind == "loop":
        os.symlink("loop-b", d / "loop-a")
        os.symlink("loop-a", d / "loop-b")
        target = d / "loop-a"
    elif kind == "model":
        target = env.model
    elif kind == "hard link to model":
        os.link(env.model, target)
    elif kind == "link to model":
        os.symlink(env.model, target)
    elif kind in ("recipe", "results", "imatrix", "types"):
        target = {"recipe": plan, "results": res, "imatrix": im, "types": types}[kind]
    if kind in ("fifo", "socket", "directory", "link to fifo", "link to device", "device", "loop"):
        special.append(target)
    out = "" if kind == "empty" else str(target)
    if command == "llama":
        llama = ["Q4_K_M"]
        if kind in ("imatrix", "types") or rng.random() < 0.3:
            im.write_bytes(_dat_bytes({n: ((s / c[0]).reshape(-1) * 10, 10) for n, (s, c) in env.imatrix.items()}, b""))
            types.write_text("attn_v=q8_0\n")
            llama = ["--imatrix", str(im), "--tensor-type-file", str(types), "Q4_K_M"]
            inputs += [im, types]
        argv = ["quantize", str(env.model), "-o", out, "-q", "-t", "1", "--", *llama]
    elif command == "recipe":
        plan.write_text(json.dumps(env.plan))
        inputs.append(plan)
        argv = ["quantize", str(env.model), "--recipe", str(plan), "-o", out, "-q", "-t", "1"]
    elif command == "budget":
        res.write_text(json.dumps(env.results))
        inputs.append(res)
        argv = ["quantize", str(env.model), "--from", str(res), "--bpw", "4.5", "-o", out, "-q", "-t", "1"]
    elif command == "analyze":       # an existing file that is not a results file is not resumed from
        argv = ["analyze", str(env.model), "-o", out, "-q", "-t", "1"]
        refuse = kind in ("existing", "link to file")
    else:
        res.write_text(json.dumps(env.results))
        inputs.append(res)
        argv = ["plan", str(env.model), "--from", str(res), "--bpw", "4.5", "-q", "--tensor-type-file", out]
    return (f"{command}: {kind}", bad, argv, [out or "empty"], inputs, refuse, special)


STRATEGIES: dict[str, Callable[..., Any]] = {
    "imatrix_gguf": s_imatrix_gguf, "imatrix_dat": s_imatrix_dat, "saved_plan": s_saved_plan,
    "results_file": s_results, "tensor_type_file": s_tensor_type_file, "quantize_args": s_quantize_args,
    "budget": s_budget, "output_path": s_output_path,
}


# -- running and judging ------------------------------------------------------------------------------------

def make_case(index: int, seed: int, strategy: str, env: Env, d: Path) -> Case:
    rng = random.Random(f"inputs:{seed}:{index}")
    got = STRATEGIES[strategy](rng, env, d)
    what, bad, argv, names, inputs = got[:5]
    may_refuse = got[5] if len(got) > 5 else False
    specials = got[6] if len(got) > 6 else []
    return Case(index, strategy, argv[0], what, oracle.Verdict(bad), argv, names, [env.model, *inputs],
                list(specials), may_refuse)


def _fingerprint(paths: Sequence[Path]) -> list[tuple]:
    out: list[tuple] = []
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:
            out.append((str(p), None))
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((str(p), "file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino))
        elif stat.S_ISLNK(st.st_mode):
            out.append((str(p), "link", os.readlink(p)))
        else:
            out.append((str(p), stat.S_IFMT(st.st_mode), st.st_rdev, st.st_ino))
    return out


def run_case(c: Case, d: Path, runner: Callable[..., harness.RunResult]) -> Record:
    watched = [*c.inputs, *c.specials]
    before = _fingerprint(watched)
    r = runner(c.argv, d, LIMITS)
    exp = Expect(ok=c.verdict.valid, user_error=not c.verdict.valid or c.may_refuse, names_file=not c.verdict.valid)
    o = campaign.classify(r, exp, c.base, c.names)
    rec = Record(c, o, {c.base: o})
    if o.bad:
        rec.failures.append(f"{' '.join(c.argv)}\n      {o.value} (rc {r.rc}, signal {r.signal}): "
                            f"{r.stderr.strip()[-600:]}")
    if _fingerprint(watched) != before:
        rec.per_command["(input)"] = Outcome.MODIFIED
        rec.outcome = Outcome.MODIFIED
        rec.failures.append(f"an input or special file changed: {before} -> {_fingerprint(watched)}")
    return rec


@dataclass(frozen=True)
class Plan:
    cases: int
    seed: int = 0
    exec_every: int = 0           # every n-th case through a real `python -m prism_native` (0: never)
    strategies: tuple[str, ...] = tuple(STRATEGIES)


def run_campaign(plan: Plan, root: Path, progress: Callable[[Record], None] | None = None,
                 env: Env | None = None) -> list[Record]:
    harness.warm_up()
    env = env or make_env(root)
    work = root / "work"
    work.mkdir(exist_ok=True)
    records = []
    for i in range(plan.cases):
        d = work / f"c{i}"
        d.mkdir()
        c = make_case(i, plan.seed, plan.strategies[i % len(plan.strategies)], env, d)
        runner = harness.run_exec if plan.exec_every and i % plan.exec_every == 0 else harness.run_fork
        rec = run_case(c, d, runner)
        records.append(rec)
        if progress:
            progress(rec)
        shutil.rmtree(d, ignore_errors=True)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="prism_native's fuzzer of every input besides the model")
    p.add_argument("--cases", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exec-every", type=int, default=50,
                   help="every N-th case through a real `python -m prism_native` subprocess (default %(default)s)")
    p.add_argument("--strategy", action="append", choices=sorted(STRATEGIES), help="only these (repeatable)")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = p.parse_args(argv)
    plan = Plan(args.cases, args.seed, args.exec_every, tuple(args.strategy or STRATEGIES))
    return campaign.run_and_report(lambda root, tick: run_campaign(plan, root, progress=tick), plan.cases,
                                   plan.seed, args.keep, "prism-fuzz-inputs-", "cases")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # `from support import synth`
    raise SystemExit(main())
