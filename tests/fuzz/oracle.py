"""The fuzzer's oracle: what prism_native must do with a file, decided without prism_native's code.

A file (or split set) is *malformed* when it breaks a structural rule (spec.parse), a metadata rule
of llama.cpp's loader for the keys prism_native reads (exact types; block_count in 1..512 and
expert_count <= 1024 as load_hparams asserts; per-layer arrays of i32/u32 with one value per layer),
has no tensors or no architecture, or its split parts disagree. A well-formed file may still be
*unusable* for the commands that read the weights: llama-quantize refuses NaN/Inf in any tensor (it
validates what it copies too) and cannot quantize one stored as an integer type, and values beyond
float16's range may overflow the float16 block scales of some types (then either a clean error or a
result is right).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import numpy as np

from . import spec

F16_MAX = 65504.0


class Values(Enum):
    OK = "ok"
    NONFINITE = "nonfinite"      # NaN/Inf, or a type llama-quantize cannot convert: analyze must refuse
    HUGE = "huge"                # beyond float16's range: analyze/plan may refuse (one line) or go on


@dataclass(frozen=True)
class Verdict:
    malformed: str | None        # the broken rule, None for a well-formed file
    values: Values = Values.OK

    @property
    def valid(self) -> bool:
        return self.malformed is None


def judge(files: list[bytes]) -> Verdict:
    """The verdict on a model given as the bytes of its parts (one for a single file)."""
    parsed = []
    for data in files:
        try:
            parsed.append(spec.parse(data))
        except spec.Reject as e:
            return Verdict(str(e))
    if not any(g.tensors for g in parsed):
        return Verdict("no tensors")
    arch = parsed[0].kv("general.architecture")
    if arch is None:
        return Verdict("no architecture")
    if arch.vtype == spec.STR and arch.payload == spec.string(b""):   # llama.cpp reads only the first part's
        return Verdict("empty architecture")
    for g in parsed:
        problem = _metadata_problem(g)
        if problem:
            return Verdict(problem)
    problem = _split_problem(parsed)
    if problem:
        return Verdict(problem)
    return Verdict(None, _values(parsed))


# -- metadata: llama_model_loader's rules for the keys prism_native reads ---------------------------

_GENERAL = {"general.architecture": spec.STR, "split.no": spec.U16, "split.count": spec.U16,
            "split.tensors.count": spec.I32}
_ARCH_SCALAR = {"block_count": spec.U32, "nextn_predict_layers": spec.U32, "expert_count": spec.U32,
                "embedding_length": spec.U32}
_ARCH_PER_LAYER = ("attention.head_count", "attention.head_count_kv", "expert_used_count")


def _metadata_problem(g: spec.Gguf) -> str | None:
    """The first rule one file's metadata breaks; its architecture keys only if it names one."""
    for key, vtype in _GENERAL.items():
        kv = g.kv(key)
        if kv is not None and kv.vtype != vtype:
            return f"{key} of type {kv.vtype}"
    arch_kv = g.kv("general.architecture")
    if arch_kv is None:
        return None
    try:
        arch = arch_kv.payload[8:].decode("utf-8")
    except UnicodeDecodeError:
        return "architecture not UTF-8"
    block = g.kv(f"{arch}.block_count")
    n_layer = block.value() if block is not None and block.vtype == spec.U32 else 0
    for suffix, vtype in _ARCH_SCALAR.items():
        kv = g.kv(f"{arch}.{suffix}")
        if kv is not None and kv.vtype != vtype:
            return f"{suffix} of type {kv.vtype}"
    if block is not None and not 1 <= n_layer <= 512:          # type: ignore[operator]
        return f"block_count {n_layer}"
    experts = g.kv(f"{arch}.expert_count")
    n_expert = experts.value() if experts is not None else 0
    if n_expert > 1024:                                         # type: ignore[operator]
        return "expert_count > 1024"
    nextn = g.kv(f"{arch}.nextn_predict_layers")
    if nextn is not None and nextn.value() > n_layer:           # type: ignore[operator]
        return "nextn_predict_layers > block_count"
    for suffix in _ARCH_PER_LAYER:
        kv = g.kv(f"{arch}.{suffix}")
        if kv is None:
            continue
        if kv.vtype == spec.ARR:
            n = len(kv.value() or []) if kv.array_type() in (spec.I32, spec.U32) else None
            if n != n_layer:
                return f"{suffix} array of {n} for {n_layer} layers"
        elif kv.vtype != spec.U32:
            return f"{suffix} of type {kv.vtype}"
    used_kv = g.kv(f"{arch}.expert_used_count")
    used = used_kv.value() if used_kv is not None else 0
    used = max(used, default=0) if isinstance(used, list) else used
    if (n_expert and not 0 < used <= n_expert) or (not n_expert and used):   # type: ignore[operator]
        return "expert_used_count out of range"
    return None


def _split_problem(parts: list[spec.Gguf]) -> str | None:
    count = parts[0].kv("split.count")
    if len(parts) == 1:
        return "a split part opened alone" if count is not None and count.value() > 1 else None  # type: ignore[operator]
    for i, g in enumerate(parts):
        c, no = g.kv("split.count"), g.kv("split.no")
        if c is None or c.value() != len(parts):
            return f"part {i}: split.count"
        if no is not None and no.value() != i:
            return f"part {i}: split.no"
    total = parts[0].kv("split.tensors.count")
    names = [t.name for g in parts for t in g.tensors]
    if total is not None and total.value() != len(names):
        return "split.tensors.count"
    if len(set(names)) != len(names):
        return "a tensor in two parts"
    return None


# -- values of the tensors llama-quantize would quantize -------------------------------------------

_KEPT = re.compile(r"_norm\.weight|ffn_gate_inp|position_embd|token_types|ssm_conv1d")
_INTEGER_TYPES = {24, 25, 26, 27, 28}     # I8 I16 I32 I64 F64: llama-quantize cannot convert them


def quantized_by_llama(name: bytes, dims: list[int]) -> bool:
    """llama-quantize's own test, restated: a 2-D-or-more '...weight' that no exception keeps."""
    n_dims = len(dims)
    while n_dims > 1 and dims[n_dims - 1] == 1:
        n_dims -= 1
    text = name.decode("utf-8", "replace")
    return n_dims >= 2 and text.endswith("weight") and not _KEPT.search(text)


def _values(parts: list[spec.Gguf]) -> Values:
    """NaN/Inf anywhere (llama-quantize validates the tensors it copies too), or a quantized tensor it
    cannot convert, is NONFINITE; a quantized tensor beyond float16's range is HUGE."""
    worst = Values.OK
    for g in parts:
        for t in g.tensors:
            quantized = quantized_by_llama(t.name, t.dims)
            v = tensor_values(g.tensor_bytes(t), t.ttype)
            if v is None and not quantized:
                continue              # copied as they are, unread
            if v is None or not np.isfinite(v).all():
                return Values.NONFINITE
            if quantized and v.size and float(np.abs(v).max()) > F16_MAX:
                worst = Values.HUGE
    return worst


def tensor_values(raw: bytes, ttype: int) -> np.ndarray | None:
    """float64 values of a tensor's bytes, or None when llama-quantize could not convert them."""
    if ttype in _INTEGER_TYPES:
        return None
    if ttype == spec.F32:
        return np.frombuffer(raw, "<f4").astype(np.float64)
    if ttype == spec.F16:
        return np.frombuffer(raw, "<f2").astype(np.float64)
    if ttype == spec.BF16:
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if ttype == spec.Q8_0:
        blocks = np.frombuffer(raw, np.uint8).reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype(np.float64)
        with np.errstate(invalid="ignore"):   # inf * 0 is the NaN this is looking for
            return (d * blocks[:, 2:].view(np.int8).astype(np.float64)).reshape(-1)
    import gguf
    if ttype not in gguf.GGMLQuantizationType.__members__.values():   # Q2_0: unknown to gguf 0.19
        return None
    qt = gguf.GGMLQuantizationType(ttype)
    if qt not in gguf.quants._type_traits:   # noqa: SLF001  (the gguf package cannot convert it either)
        return None
    block, size = spec.BLOCKS[ttype]
    with np.errstate(all="ignore"):
        return gguf.quants.dequantize(np.frombuffer(raw, np.uint8).reshape(-1, size), qt).astype(np.float64).reshape(-1)
