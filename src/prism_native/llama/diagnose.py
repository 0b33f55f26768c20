"""check-recipe's engine: what an llama-quantize command does to every tensor of a model, and what in
it is likely wrong, before it is run.

The types come from simulate (decide with the model's own hyper-parameters, plus the pattern
diagnostics); the sizes from sizes.estimate ("quant size" and BPW as llama-quantize prints them, and
the exact output file size). Flagged, with the tensors concerned:
- patterns that never match, and patterns shadowed by an earlier one (first match wins);
- tensors a pattern catches in another class by cutting through a name (`attn_q` inside `attn_qkv`,
  `output` inside `attn_output`), and unanchored patterns that catch unintended tensors of their own
  class (`blk\\.1\\.` inside `blk.12.`);
- types handed to --token-embedding-type / --output-tensor-type on rows they do not fit: those flags
  skip the fallback, so --dry-run miscounts the tensor and a real run aborts;
- what makes a real run refuse: types that need --imatrix, quantized sources without --allow-requantize.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from .. import qtypes
from ..errors import PrismError
from ..read.model import Model, trimmed_shape
from ..read.taxonomy import classify
from .command import QuantizeCommand
from .decide import Decision, TensorSpec
from .ftypes import get_ftype
from .patterns import anchored_patterns, class_pattern
from .quantizable import llama_order
from .simulate import DEDICATED, PartialMatch, Simulation, patterns_apply
from .sizes import estimate

_SEVERITY_ORDER = {"error": 0, "warning": 1}




@dataclass(frozen=True)
class Problem:
    severity: str               # error: llama-quantize fails or refuses; warning: likely unintended
    kind: str
    message: str
    pattern: int | None = None  # index of the --tensor-type concerned
    tensors: tuple[str, ...] = ()


def _few(names: Iterable[str], k: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _suggest(sim: Simulation, i: int, names: list[str]) -> str:
    """Anchored patterns that give pattern #i exactly `names`: a class whose other tensors all go to
    earlier patterns (or do not consult the patterns) gets its class pattern, else one alternation
    over its layers."""
    by_key: dict[str, list[str]] = {}
    for n in names:
        by_key.setdefault(classify(n).key, []).append(n)
    open_to_i = Counter(classify(r.name).key for r in sim.tensors
                        if r.rule not in ("kept", *DEDICATED) and (r.pattern is None or r.pattern >= i))
    pats = []
    for key, ns in by_key.items():
        pats += [class_pattern(key)] if len(ns) == open_to_i[key] else anchored_patterns(key, ns)
    return _few((f"'{p}'" for p in pats), 4)


def _pattern_problems(sim: Simulation, cmd: QuantizeCommand, apply: bool) -> list[Problem]:
    ov, got = sim.overrides, sim.by_name()
    out: list[Problem] = []
    if ov and not apply:
        ft = get_ftype(cmd.ftype)
        return [Problem("warning", "ignored-patterns",
                        f"ftype {cmd.ftype} writes {ft.default} by default, which is not quantized: llama-quantize "
                        f"ignores all {len(ov)} --tensor-type patterns")]
    for i in sim.unused:
        hits = [r for r in sim.tensors if ov[i].matches(r.name)]
        if not hits:
            why = "matches no tensor of this model"
        else:
            how = {r.rule if r.rule in DEDICATED else f"kept: {r.reason}" for r in hits}
            why = (f"only matches tensors that never consult the patterns ({_few(r.name for r in hits)}; "
                   + ", ".join(f"--{h}" if h in DEDICATED else h for h in sorted(how)) + ")")
        out.append(Problem("warning", "unused", f"pattern #{i} '{ov[i].arg}' {why}", i,
                           tuple(r.name for r in hits)))
    for i in sim.shadowed:
        by = sorted({got[n].pattern for n in sim.matched[i] if got[n].pattern is not None})
        out.append(Problem("warning", "shadowed",
                           f"pattern #{i} '{ov[i].arg}' is shadowed: every tensor it matches is taken by "
                           + ", ".join(f"#{j} '{ov[j].arg}'" for j in by) + " (the first matching pattern wins)",
                           i, sim.matched[i]))
    for i in sim.lowercased:
        out.append(Problem("warning", "lowercased",
                           f"pattern #{i} '{ov[i].written}' has upper-case letters: llama-quantize lower-cases it "
                           f"to '{ov[i].pattern}' (escapes like \\D \\S \\W \\B change meaning)", i))
    return out


def _partial_problems(sim: Simulation) -> list[Problem]:
    """Matches that cut through a name token, told apart by the class the pattern is meant for: the
    classes of the tensors it matches at token boundaries."""
    ov = sim.overrides
    by_pattern: dict[int, list[PartialMatch]] = {}
    for m in sim.partial:
        by_pattern.setdefault(m.pattern, []).append(m)
    out: list[Problem] = []
    for i, ms in by_pattern.items():
        cut = {m.tensor for m in ms}
        whole = [r.name for r in sim.tensors if r.pattern == i and r.name not in cut]
        meant = {classify(n).cls for n in whole}
        if not meant:
            classes = sorted({classify(m.tensor).cls for m in ms})
            out.append(Problem("warning", "partial-only",
                               f"pattern #{i} '{ov[i].arg}' never matches a whole part of a name: the {len(ms)} "
                               f"tensor(s) it catches ({', '.join(classes)}) hold '{ms[0].matched}' inside a longer "
                               f"part ({_few(m.tensor for m in ms)}); if they are meant, anchor it: "
                               f"{_suggest(sim, i, [m.tensor for m in ms])}", i, tuple(m.tensor for m in ms)))
            continue
        fix = _suggest(sim, i, whole)
        other: dict[str, list[PartialMatch]] = {}
        same: list[PartialMatch] = []
        for m in ms:
            cls = classify(m.tensor).cls
            (same if cls in meant else other.setdefault(cls, [])).append(m)
        for cls, cms in other.items():
            out.append(Problem("warning", "other-class",
                               f"pattern #{i} '{ov[i].arg}', meant for {', '.join(sorted(meant))}, also catches "
                               f"{len(cms)} {cls} tensor(s) through '{cms[0].matched}' "
                               f"({_few(m.tensor for m in cms)}); anchor it: {fix}", i, tuple(m.tensor for m in cms)))
        if same:
            out.append(Problem("warning", "unanchored",
                               f"pattern #{i} '{ov[i].arg}' is unanchored: besides the {len(whole)} tensor(s) it "
                               f"names, it catches {_few(m.tensor for m in same)} through '{same[0].matched}'; "
                               f"anchor it: {fix}", i, tuple(m.tensor for m in same)))
    return out


def _refusals(model: Model, sim: Simulation, cmd: QuantizeCommand) -> list[Problem]:
    """What --dry-run lets pass but a real llama-quantize run aborts on or refuses."""
    out: list[Problem] = []
    got = sim.by_name()
    for n in sim.misfit:
        r, ne0 = got[n], model.tensor(n).n_per_row
        qt = qtypes.get(r.written or "F16")
        try:
            instead = f"give {qtypes.effective(qt, ne0).name} (what the fallback would pick) or leave the flag out"
        except PrismError:
            instead = "give a type with 32-value blocks or leave the flag out"
        out.append(Problem("error", "dedicated-misfit",
                           f"--{r.rule} {r.written} on {n}: rows of {ne0} are not a multiple of {qt.block_size} "
                           f"and this flag skips the fallback, so --dry-run miscounts it and a real run aborts; "
                           f"{instead}", None, (n,)))
    changed = _changed(model, sim)
    if cmd.imatrix is None:
        need = imatrix_needed(model, sim)
        if need:
            types = ", ".join(sorted({r.written or "" for r in need}))
            out.append(Problem("error", "needs-imatrix",
                               f"{len(need)} tensor(s) get {types}, which llama-quantize refuses to write without "
                               f"--imatrix ({_few(r.name for r in need)})", None, tuple(r.name for r in need)))
    if not cmd.allow_requantize:
        requant = [r for r in changed if model.tensor(r.name).qtype.quantized]
        if requant:
            types = ", ".join(sorted({model.tensor(r.name).type_name for r in requant}))
            out.append(Problem("error", "needs-requantize",
                               f"the model stores {types}: llama-quantize refuses to requantize {len(requant)} "
                               "tensor(s) without --allow-requantize (and quantizing from F16/BF16 gives better "
                               "quality)", None, tuple(r.name for r in requant)))
    return out


def _changed(model: Model, sim: Simulation) -> list[Decision]:
    """The quantized tensors whose type the command changes."""
    return [r for r in sim.tensors if r.quantized and r.written != model.tensor(r.name).type_name]


def imatrix_needed(model: Model, sim: Simulation) -> list[Decision]:
    """The tensors llama-quantize refuses to write without --imatrix (tensor_requires_imatrix on the type
    written after the fallback, for tensors it changes)."""
    return [r for r in _changed(model, sim) if r.requires_imatrix]


def _set_by(r: Decision, sim: Simulation, cmd: QuantizeCommand) -> str:
    if r.rule == "pattern" and r.pattern is not None:
        return f"--tensor-type #{r.pattern} {sim.overrides[r.pattern].arg}"
    if r.rule in DEDICATED:
        return f"--{r.rule}"
    if r.rule == "output-rule":
        return "mix: output rule" + ("" if r.name == "output.weight" else " (tied embeddings)")
    if r.rule == "default":
        return "--pure" if cmd.pure else "ftype default"
    if r.rule == "kept":
        return f"kept: {r.reason}"
    return "mix"


def _size(model: Model, sim: Simulation) -> dict[str, Any]:
    est = estimate(model, {r.name: r.written or "" for r in sim.tensors},
                   quantized=[r.name for r in sim.tensors if r.quantized])
    d = est.as_dict()
    d["quant_mib"] = est.tensor_bytes / 2**20
    d["source_file_bytes"] = model.file_bytes
    return d


def _size_notes(cmd: QuantizeCommand) -> list[str]:
    extra = [f for f, on in (("--imatrix", cmd.imatrix is not None), ("--override-kv", bool(cmd.override_kv))) if on]
    return [f"the output file size leaves out the metadata keys that {' and '.join(extra)} add"] if extra else []


def recipe_report(model: Model, cmd: QuantizeCommand, argv: list[str], notes: Iterable[str] = ()) -> dict[str, Any]:
    """Everything check-recipe shows, as plain data (the CLI formats it)."""
    specs = [TensorSpec.of(t, model.arch) for t in model.tensors]
    sim = cmd.simulate(specs, hparams=model.hparams)
    ft = get_ftype(cmd.ftype)
    got = sim.by_name()
    tensors = []
    for n in llama_order(got):
        t, r, tx = model.tensor(n), got[n], classify(n)
        tensors.append({"name": n, "class": tx.cls, "layer": tx.layer, "shape": trimmed_shape(t.shape),
                        "source_type": t.type_name, "requested": r.requested, "type": r.written,
                        "source": r.rule, "pattern": r.pattern, "set_by": _set_by(r, sim, cmd),
                        "not_quantized_because": r.reason, "requires_imatrix": r.requires_imatrix})
    problems = (_refusals(model, sim, cmd) + _pattern_problems(sim, cmd, patterns_apply(cmd.ftype))
                + _partial_problems(sim))
    problems.sort(key=lambda p: (_SEVERITY_ORDER[p.severity], -1 if p.pattern is None else p.pattern))
    hp = model.hparams
    return {
        "file": str(model.path),
        "name": model.name,
        "architecture": model.arch,
        "hparams": {"n_layer": hp.n_layer_all, "n_expert": hp.n_expert, "n_head": hp.n_head,
                    "n_head_kv": hp.n_head_kv},
        "command": argv,
        "ftype": cmd.ftype,
        "default_type": ft.default,
        "options": {"pure": cmd.pure, "imatrix": cmd.imatrix, "allow_requantize": cmd.allow_requantize,
                    "leave_output_tensor": cmd.leave_output_tensor,
                    "token_embedding_type": cmd.token_embedding_type,
                    "output_tensor_type": cmd.output_tensor_type,
                    "tensor_types": [o.arg for o in sim.overrides]},
        "notes": list(notes) + _size_notes(cmd),
        "classes": _classes(tensors),
        "size": None if sim.misfit else _size(model, sim),
        "size_unavailable_because": (f"llama-quantize cannot write {_few(sim.misfit)} with the type its "
                                     "dedicated flag names (see problems)") if sim.misfit else None,
        "problems": [asdict(p) for p in problems],
        "tensors": tensors,
    }


def _classes(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_cls: dict[str, list[dict[str, Any]]] = {}
    for t in tensors:
        by_cls.setdefault(t["class"], []).append(t)
    out = []
    for cls, ts in by_cls.items():
        types = Counter(t["type"] for t in ts)
        layers: dict[str, list[int]] = {}
        for t in ts:
            if t["layer"] is not None:
                layers.setdefault(t["type"], []).append(t["layer"])
        out.append({
            "class": cls,
            "n_tensors": len(ts),
            "row_lengths": sorted({t["shape"][0] for t in ts}),
            "types": dict(types.most_common()),
            "fallbacks": dict(Counter(f"{t['requested']}->{t['type']}" for t in ts
                                      if t["requested"] not in (None, t["type"])).most_common()),
            "set_by": dict(Counter(t["set_by"] for t in ts).most_common()),
            "layers_by_type": layers if len(types) > 1 else {},
        })
    return out


