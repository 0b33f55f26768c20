"""llama-quantize's mixes: the type each ftype gives a tensor by its category and layer
(src/llama-quant.cpp tensor_get_category, llama_tensor_get_type_impl with its quantize_state_impl
counters, tensor_requires_imatrix; llama.cpp 0c1e5709). An independent re-implementation, not a copy.
"""
from __future__ import annotations

from typing import Sequence

from .. import qtypes
from ..errors import FileFormatError
from ..qtypes import QType
from ..read.model import Hparams
from .options import QuantizeOptions
from .quantizable import sscanf_layer

OUTPUT, TOKEN_EMBD, ATTN_QKV, ATTN_KV_B, ATTN_V, ATTN_K, ATTN_Q, ATTN_OUTPUT = (
    "output", "token_embd", "attn_qkv", "attn_kv_b", "attn_v", "attn_k", "attn_q", "attn_output")
FFN_UP, FFN_GATE, FFN_DOWN, OTHER = "ffn_up", "ffn_gate", "ffn_down", "other"
_ATTN_V_LIKE = (ATTN_V, ATTN_QKV, ATTN_KV_B)  # category_is_attn_v


def category(name: str) -> str:
    if name == "output.weight":
        return OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return TOKEN_EMBD
    for sub, cat in (("attn_qkv.weight", ATTN_QKV), ("attn_kv_b.weight", ATTN_KV_B),
                     ("attn_v.weight", ATTN_V), ("attn_k.weight", ATTN_K), ("attn_q.weight", ATTN_Q),
                     ("attn_output.weight", ATTN_OUTPUT), ("ffn_up", FFN_UP), ("ffn_gate", FFN_GATE),
                     ("ffn_down", FFN_DOWN)):
        if sub in name:
            return cat
    return OTHER



def _c_mod(a: int, b: int) -> int:
    """C's % (truncates toward zero)."""
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or _c_mod(i_layer - n_layers // 8, 3) == 2)


def is_70b(hp: Hparams) -> bool:
    """llama_model::type == LLM_TYPE_70B, as the architectures' load_hparams decide it."""
    n = hp.n_layer
    if hp.arch == "llama":
        return hp.n_expert != 8 and n == 80 and hp.n_head != hp.n_head_kv
    return (hp.arch, n) in {("deci", 80), ("olmo", 80), ("qwen2", 80), ("jais2", 68)}


_IQ_LOW_OUTPUT = ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
_IQ_LOW = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
IMATRIX_TYPES = ("IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S")   # tensor_requires_imatrix
_ATTN_OUT_MOE_Q5K = ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                     "IQ3_M", "IQ4_XS")


class Mix:
    """llama_tensor_get_type_impl with its quantize_state_impl counters (one per decide() call)."""

    def __init__(self, hp: Hparams, ftype: str, opts: QuantizeOptions, names: Sequence[str]) -> None:
        self.hp, self.ft, self.opts = hp, ftype, opts
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(c in _ATTN_V_LIKE for c in cats)
        self.tied = OUTPUT not in cats
        self.n_ffn = hp.n_layer_all  # n_ffn_down = n_ffn_gate = n_ffn_up
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_gqa = hp.n_gqa
        self.is_70b = is_70b(hp)

    def output_branch(self, cat: str) -> bool:
        """The mix's rule for output.weight, which token_embd takes too when embeddings are tied."""
        return cat == OUTPUT or (self.tied and cat == TOKEN_EMBD)

    def _layer(self, counter: int, name: str) -> tuple[int, int]:
        """layer_info: the running counter, or the block number parsed from the name for MoE."""
        n_layer = self.n_ffn
        if max(1, self.hp.n_expert) > 1:
            il = sscanf_layer(name)
            if il is None:
                raise FileFormatError(f"failed to determine layer for tensor {name}")
            if not 0 <= il < n_layer:
                raise FileFormatError(f"bad layer {il} for tensor {name}: must be in [0, {n_layer})")
            return il, n_layer
        return counter, n_layer

    def __call__(self, new: str, name: str, shape: Sequence[int], cat: str) -> str:
        hp, ft, arch = self.hp, self.ft, self.hp.arch
        if arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            if new not in ("F32", "BF16", "F16"):
                return "Q8_0"
        if self.output_branch(cat):
            if self.opts.output_tensor_type:
                new = qtypes.get(self.opts.output_tensor_type).name
            elif ft == "MXFP4_MOE":
                new = "Q8_0"
            elif arch == "falcon" or shape[0] % qtypes.get(new).block_size:
                new = "Q8_0"
            elif ft in _IQ_LOW_OUTPUT:
                new = "Q5_K"
            elif new != "Q8_0":
                new = "Q6_K"
        elif ft == "MXFP4_MOE":
            expert_role = cat in (FFN_UP, FFN_GATE, FFN_DOWN)
            ne2 = shape[2] if len(shape) > 2 else 1
            new = "MXFP4" if ne2 > 1 and (arch != "bailingmoe3" or expert_role) else "Q8_0"
        elif cat == TOKEN_EMBD:
            if self.opts.token_embedding_type:
                new = qtypes.get(self.opts.token_embedding_type).name
            elif ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
                new = "Q2_K"
            elif ft in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
                new = "IQ3_S"
            elif ft in ("TQ1_0", "TQ2_0", "Q2_0"):
                new = "Q4_K"
        elif ft in _IQ_LOW:
            new = self._iq_low(new, cat)
        elif cat in _ATTN_V_LIKE:
            new = self._attn_v(new)
        elif cat == ATTN_K:
            if hp.n_expert == 8:
                new = "Q8_0"
            elif ft == "IQ3_XS":
                new = "IQ3_XXS"
            elif ft == "IQ3_XXS":
                new = "IQ2_S"
        elif cat == ATTN_Q:
            if ft == "IQ3_XS":
                new = "IQ3_XXS"
            elif ft == "IQ3_XXS":
                new = "IQ2_S"
        elif cat == FFN_DOWN:
            new = self._ffn_down(new, name)
        elif cat == ATTN_OUTPUT:
            new = self._attn_output(new)
        # (the C++ ATTENTION_QKV branch that follows is unreachable: attn_qkv is attn_v-like above)
        elif cat in (FFN_GATE, FFN_UP):
            counter = self.i_ffn_gate if cat == FFN_GATE else self.i_ffn_up
            il, nl = self._layer(counter, name)
            if ft == "IQ3_XS" and nl // 8 <= il < 7 * nl // 8:
                new = "IQ3_XXS"
            if cat == FFN_GATE:
                self.i_ffn_gate += 1
            else:
                self.i_ffn_up += 1
        return new

    def _iq_low(self, new: str, cat: str) -> str:
        hp, ft = self.hp, self.ft
        iq2sm = ft in ("IQ2_S", "IQ2_M")
        if cat in _ATTN_V_LIKE:
            if self.n_gqa >= 4 or hp.n_expert >= 4:
                new = "Q4_K"
            else:
                new = "IQ3_S" if iq2sm else "Q2_K"
            self.i_attention_wv += 1
        elif hp.n_expert == 8 and cat == ATTN_K:
            new = "Q4_K"
        elif cat == FFN_DOWN:
            if self.i_ffn_down < self.n_ffn // 8:
                new = "IQ3_S" if iq2sm else "Q2_K"
            self.i_ffn_down += 1
        elif cat == ATTN_OUTPUT:
            if hp.n_expert == 8:
                new = "Q5_K"
            elif ft in ("IQ1_S", "IQ1_M"):
                new = "IQ2_XXS"
            elif iq2sm:
                new = "IQ3_S"
        return new

    def _attn_v(self, new: str) -> str:
        ft, gqa, i, n = self.ft, self.n_gqa, self.i_attention_wv, self.n_attention_wv
        if ft == "Q2_K":
            new = "Q4_K" if gqa >= 4 else "Q3_K"
        elif ft == "Q2_K_S" and gqa >= 4:
            new = "Q4_K"
        elif ft == "IQ3_XXS":
            new = "Q4_K" if gqa >= 4 else ("IQ3_S" if not self.opts.imatrix else "IQ3_XXS")
        elif ft in ("IQ3_XS", "IQ3_S") and gqa >= 4:
            new = "Q4_K"
        elif ft == "IQ3_M":
            new = "Q4_K"
        elif ft == "Q3_K_M":
            new = "Q5_K" if i < 2 else "Q4_K"
        elif ft == "Q3_K_L":
            new = "Q5_K"
        elif ft in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
            new = "Q5_K"
        elif ft in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
            new = "Q6_K"
        elif ft == "Q4_K_S" and i < 4:
            new = "Q5_K"
        if self.is_70b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        if self.hp.n_expert == 8:
            new = "Q8_0"
        self.i_attention_wv += 1
        return new

    def _ffn_down(self, new: str, name: str) -> str:
        ft, hp, falcon = self.ft, self.hp, self.hp.arch == "falcon"
        il, nl = self._layer(self.i_ffn_down, name)
        imat = self.opts.imatrix
        if ft == "Q2_K":
            new = "Q3_K"
        elif ft == "Q2_K_S":
            if il < nl // 8:
                new = "Q4_K"
        elif ft == "IQ3_XXS" and not imat:
            new = "Q4_K" if il < nl // 8 else "Q3_K"
        elif ft == "Q3_K_M":
            new = ("Q5_K" if il < nl // 16
                   else "Q4_K" if not falcon or use_more_bits(il, nl) else "Q3_K")
        elif ft == "IQ3_M" and (il < nl // 8 or (hp.n_expert == 8 and use_more_bits(il, nl))):
            new = "Q4_K"
        elif ft == "Q3_K_L":
            new = "Q4_K" if falcon else "Q5_K"
        elif ft == "Q4_K_M":
            if falcon:
                new = "Q6_K" if il < nl // 16 else "Q5_K" if use_more_bits(il, nl) else "Q4_K"
            elif use_more_bits(il, nl):
                new = "Q6_K"
        elif il < nl // 8 and ft in ("IQ4_NL", "IQ4_XS") and not imat:
            new = "Q5_K"
        elif ft == "Q5_K_M" and use_more_bits(il, nl):
            new = "Q6_K"
        elif ft == "Q4_K_S" and not falcon and il < nl // 8:
            new = "Q5_K"
        elif ft in ("Q4_0", "Q5_0") and imat and il < nl // 8:
            new = "Q4_1" if ft == "Q4_0" else "Q5_1"
        self.i_ffn_down += 1
        return new

    def _attn_output(self, new: str) -> str:
        ft = self.ft
        if self.hp.arch != "falcon":
            if self.hp.n_expert == 8:
                if ft in _ATTN_OUT_MOE_Q5K:
                    new = "Q5_K"
            else:
                new = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K",
                       "IQ3_M": "Q4_K"}.get(ft, new)
        elif ft == "Q3_K_L":
            new = "Q4_K"
        return new


def requires_imatrix(name: str, target: QType, ftype: str) -> bool:
    """tensor_requires_imatrix."""
    if category(name) in (TOKEN_EMBD, OUTPUT):
        return False
    if target.name in IMATRIX_TYPES:
        return True
    return target.name == "Q2_K" and ftype == "Q2_K_S"


def planned_requires_imatrix(name: str, type_name: str) -> str | None:
    """Why llama-quantize refuses to give tensor `name` the type `type_name` of a plan without --imatrix,
    or None. A plan's recipe names a type that is its own ftype (plan.recipe), never Q2_K_S."""
    if not requires_imatrix(name, qtypes.get(type_name), type_name):
        return None
    return (f"llama-quantize writes {type_name} on {name} only with an imatrix "
            "(this quantization requires an importance matrix)")

