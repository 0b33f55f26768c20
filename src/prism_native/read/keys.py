"""The metadata keys prism_native interprets, and the types and values llama.cpp's loader accepts.

llama_model_loader::get_key insists on the exact GGUF type (GGUFMeta::GKV::get_kv: "key %s has wrong
type %s but expected type %s"); get_key_or_arr also takes an array of i32/u32 with one value per
layer; llama_model_base::load_hparams asserts the layer and expert counts. A model that breaks one
of these makes llama-quantize fail, so it is refused here with the same rule, before a plan is made
for it. Keys prism_native does not read are left to llama.cpp.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gguf.gguf_reader import ReaderField

from ..errors import FileFormatError, quoted
from ..gguf.constants import VT
from ..gguf.layout import field_type, type_name

LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024


@dataclass(frozen=True)
class KeyRule:
    key: str                      # full key, or the part after "{arch}." for architecture keys
    vtype: int                    # the scalar GGUF type get_key reads
    per_layer: bool = False       # get_key_or_arr: or an i32/u32 array with one value per layer
    low: int | None = None        # load_hparams' GGML_ASSERT bounds, when it has them
    high: int | None = None


GENERAL_KEYS = (
    KeyRule("general.architecture", VT.STRING),
    KeyRule("split.no", VT.UINT16),                 # llama_model_loader: uint16_t
    KeyRule("split.count", VT.UINT16),
    KeyRule("split.tensors.count", VT.INT32),       # int n_tensors
)
ARCH_KEYS = (
    KeyRule("block_count", VT.UINT32, low=1, high=LLAMA_MAX_LAYERS),
    KeyRule("nextn_predict_layers", VT.UINT32),
    KeyRule("expert_count", VT.UINT32, high=LLAMA_MAX_EXPERTS),
    KeyRule("expert_used_count", VT.UINT32, per_layer=True),
    KeyRule("embedding_length", VT.UINT32),
    KeyRule("attention.head_count", VT.UINT32, per_layer=True),
    KeyRule("attention.head_count_kv", VT.UINT32, per_layer=True),
)
_LAYER_ARRAY_TYPES = (VT.INT32, VT.UINT32)   # llama_model_loader::get_arr for uint32_t


def check_keys(path: Path, fields: Mapping[str, ReaderField]) -> None:
    """FileFormatError naming the key when a key prism_native reads has a type or value llama.cpp refuses."""
    for rule in GENERAL_KEYS:
        _check(path, fields, rule.key, rule, 0)
    arch_field = fields.get("general.architecture")
    if arch_field is None:
        return
    try:
        arch = bytes(arch_field.parts[-1]).decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"{path}: key 'general.architecture' is not valid UTF-8") from None
    block_count = fields.get(f"{arch}.block_count")
    n_layer = int(block_count.parts[-1][0]) if block_count is not None and block_count.types == [VT.UINT32] else 0
    for rule in ARCH_KEYS:
        _check(path, fields, f"{arch}.{rule.key}", rule, n_layer)
    nextn = _largest(fields.get(f"{arch}.nextn_predict_layers"))
    if nextn > n_layer:
        raise FileFormatError(f"{path}: key {quoted(arch + '.nextn_predict_layers')} is {nextn}, more than the {n_layer} "
                              f"layers of {arch}.block_count")
    n_expert, n_used = _largest(fields.get(f"{arch}.expert_count")), _largest(fields.get(f"{arch}.expert_used_count"))
    if not (0 < n_used <= n_expert if n_expert else n_used == 0):   # load_hparams' GGML_ASSERTs
        raise FileFormatError(f"{path}: key {quoted(arch + '.expert_used_count')} is {n_used} with {n_expert} experts; "
                              f"llama.cpp needs {'1..' + str(n_expert) if n_expert else '0 without experts'}")


def _largest(f: ReaderField | None) -> int:
    """The value of an (already type-checked) integer key, the largest one of a per-layer array; 0 if absent."""
    if f is None:
        return 0
    values = f.contents()
    return max(values, default=0) if isinstance(values, list) else int(values)


def _check(path: Path, fields: Mapping[str, ReaderField], key: str, rule: KeyRule, n_layer: int) -> None:
    f = fields.get(key)
    if f is None:
        return
    if f.types[0] == VT.ARRAY and rule.per_layer:
        elem = int(f.parts[3][0])
        if elem not in _LAYER_ARRAY_TYPES:
            raise FileFormatError(f"{path}: key {quoted(key)} has wrong array element type {type_name(elem)}; "
                                  "llama.cpp reads i32 or u32")
        n = int(f.parts[4][0])
        if n != n_layer:
            raise FileFormatError(f"{path}: key {quoted(key)} has wrong array length; expected {n_layer} (one per layer), "
                                  f"got {n}")
        return
    if f.types != [rule.vtype]:
        raise FileFormatError(f"{path}: key {quoted(key)} has wrong type {field_type(f)} but expected type "
                              f"{type_name(rule.vtype)}")
    if rule.low is None and rule.high is None:
        return
    v = int(f.parts[-1][0])
    if (rule.low is not None and v < rule.low) or (rule.high is not None and v > rule.high):
        raise FileFormatError(f"{path}: key {quoted(key)} is {v}; llama.cpp needs {rule.low or 0}..{rule.high}")
