"""What llama-quantize quantizes (src/llama-quant.cpp tensor_allows_quantization) and the order it
writes tensors in (llama_model_loader::weight_name_comparer); llama.cpp 0c1e5709."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..read.model import Model, TensorInfo

# substrings that keep a tensor out of quantization, with the reason shown to users
_NEVER: tuple[tuple[str, str], ...] = (
    ("_norm.weight", "norm"),
    ("ffn_gate_inp.weight", "expert router (ffn_gate_inp)"),
    ("ffn_gate_tid2eid.weight", "expert routing table"),
    ("altup", "altup (tiny)"),
    ("laurel", "laurel (tiny)"),
    ("per_layer_model_proj", "per_layer_model_proj (kept as is)"),
)
_NEVER_AFTER_POS: tuple[tuple[str, str], ...] = (
    ("ssm_conv1d", "ssm_conv1d (small conv)"),
    ("shortconv.conv.weight", "short conv (small)"),
    ("indexer.k_proj.weight", "indexer projection (tiny)"),
    ("indexer.q_proj.weight", "indexer projection (tiny)"),
)
_GLM5_NEXT_NEVER = ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
                    "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
                    "attn_v_b.weight")
_RWKV_NEVER = tuple(f"time_mix_{s}.weight" for s in (
    "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2", "decay_w1", "decay_w2",
    "lerp_fused"))
_MULTIMODAL_NEVER = (".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
                     ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")


def _ends_with_weight(name: str) -> bool:
    # C++: name.rfind("weight") == name.size() - 6; with size_t wrap-around a 5-character name without
    # "weight" also passes (npos == size-6). Mirrored for exactness; real tensor names are longer.
    return name.endswith("weight") or (len(name) == 5)


def not_quantized_reason(name: str, n_dims: int, arch: str, *, quantize_output_tensor: bool = True,
                         only_copy: bool = False) -> str | None:
    """Why llama-quantize leaves a tensor as it is, or None if it quantizes it."""
    if only_copy:
        return "COPY keeps every tensor"
    if n_dims < 2:
        return "1-D"
    if not _ends_with_weight(name):
        return "not a weight"
    for sub, why in _NEVER[:1]:
        if sub in name:
            return why
    if not quantize_output_tensor and name == "output.weight":
        return "--leave-output-tensor"
    for sub, why in _NEVER[1:]:
        if sub in name:
            return why
    if name in ("position_embd.weight", "token_types.weight"):
        return "positional/token-type embedding"
    for sub, why in _NEVER_AFTER_POS:
        if sub in name:
            return why
    if arch == "glm5-next" and any(s in name for s in _GLM5_NEXT_NEVER):
        return "glm5-next keeps it"
    if any(s in name for s in _RWKV_NEVER):
        return "RWKV time_mix (small)"
    if "attn_rel_b.weight" in name:
        return "relative position bias"
    if any(s in name for s in _MULTIMODAL_NEVER):
        return "multimodal embedding/codebook"
    return None



def quantizable_tensors(model: "Model") -> list["TensorInfo"]:
    """The tensors of a model that llama-quantize quantizes (at default options), in file order."""
    return [t for t in model.tensors if not_quantized_reason(t.name, t.n_dims, model.arch) is None]


_SSCANF_BLK = re.compile(r"blk\.\s*([+-]?\d+)")


def sscanf_layer(name: str) -> int | None:
    """sscanf(name, "blk.%d.", &il) == 1: the trailing '.' is not needed for the count to be 1."""
    m = _SSCANF_BLK.match(name)
    return int(m.group(1)) if m else None


def llama_order(names: Iterable[str]) -> list[str]:
    """Names sorted as llama's model loader keeps them: by block number (-1 if none), then bytewise."""
    def key(n: str) -> tuple[int, bytes]:
        il = sscanf_layer(n)
        return (-1 if il is None else il, n.encode())
    return sorted(names, key=key)

