"""Tensor tables of the largest open mixtures of experts, with their real dimensions, for header-only
(sparse) files and for the throughput bench: DeepSeek-V3 (671B) and Kimi-K2 (1T), both llama.cpp's
deepseek2 architecture (MLA attention, leading dense blocks, one shared expert, 256 / 384 routed ones)."""
from __future__ import annotations

from dataclasses import dataclass

Table = dict[str, tuple[tuple[int, ...], str]]   # name -> (ggml shape, type)


@dataclass(frozen=True)
class MoeShape:
    name: str
    n_layer: int = 61
    n_dense: int = 3            # leading dense blocks
    n_embd: int = 7168
    n_ff: int = 18432           # dense blocks' FFN
    n_ff_exp: int = 2048
    n_expert: int = 256
    n_expert_used: int = 8
    n_head: int = 128
    n_vocab: int = 129280
    q_lora: int = 1536
    kv_lora: int = 512
    rope_dim: int = 64
    head_k: int = 128           # qk_nope 128 + rope 64 per head; v 128

    def tensors(self, layers: range | None = None, experts: int | None = None, dtype: str = "BF16",
                embeddings: bool = True) -> Table:
        """The model's tensors (`layers`: a slice of its blocks; `experts`: fewer routed experts)."""
        e, x = self.n_embd, experts or self.n_expert
        t: Table = {}
        if embeddings:
            t["token_embd.weight"] = ((e, self.n_vocab), dtype)
        t["output_norm.weight"] = ((e,), "F32")
        if embeddings:
            t["output.weight"] = ((e, self.n_vocab), dtype)
        for il in layers if layers is not None else range(self.n_layer):
            b = f"blk.{il}."
            t[b + "attn_norm.weight"] = ((e,), "F32")
            t[b + "attn_q_a_norm.weight"] = ((self.q_lora,), "F32")
            t[b + "attn_kv_a_norm.weight"] = ((self.kv_lora,), "F32")
            t[b + "attn_q_a.weight"] = ((e, self.q_lora), dtype)
            t[b + "attn_q_b.weight"] = ((self.q_lora, self.n_head * (self.head_k + self.rope_dim)), dtype)
            t[b + "attn_kv_a_mqa.weight"] = ((e, self.kv_lora + self.rope_dim), dtype)
            t[b + "attn_kv_b.weight"] = ((self.kv_lora, self.n_head * 2 * self.head_k), dtype)
            t[b + "attn_output.weight"] = ((self.n_head * self.head_k, e), dtype)
            t[b + "ffn_norm.weight"] = ((e,), "F32")
            if il < self.n_dense:
                t[b + "ffn_gate.weight"] = ((e, self.n_ff), dtype)
                t[b + "ffn_up.weight"] = ((e, self.n_ff), dtype)
                t[b + "ffn_down.weight"] = ((self.n_ff, e), dtype)
                continue
            f = self.n_ff_exp
            t[b + "ffn_gate_inp.weight"] = ((e, x), "F32")
            t[b + "exp_probs_b.bias"] = ((x,), "F32")
            t[b + "ffn_gate_exps.weight"] = ((e, f, x), dtype)
            t[b + "ffn_up_exps.weight"] = ((e, f, x), dtype)
            t[b + "ffn_down_exps.weight"] = ((f, e, x), dtype)
            t[b + "ffn_gate_shexp.weight"] = ((e, f), dtype)
            t[b + "ffn_up_shexp.weight"] = ((e, f), dtype)
            t[b + "ffn_down_shexp.weight"] = ((f, e), dtype)
        return t

    def kv(self, n_layer: int | None = None, experts: int | None = None) -> dict[str, object]:
        """The deepseek2 keys llama.cpp's loader (and llama-quantize) need."""
        a = "deepseek2"
        return {f"{a}.block_count": n_layer or self.n_layer, f"{a}.context_length": 4096,
                f"{a}.embedding_length": self.n_embd, f"{a}.feed_forward_length": self.n_ff,
                f"{a}.attention.head_count": self.n_head, f"{a}.attention.head_count_kv": self.n_head,
                f"{a}.expert_count": experts or self.n_expert,
                f"{a}.expert_used_count": min(self.n_expert_used, experts or self.n_expert),
                f"{a}.leading_dense_block_count": self.n_dense, f"{a}.expert_feed_forward_length": self.n_ff_exp,
                f"{a}.expert_shared_count": 1, f"{a}.attention.q_lora_rank": self.q_lora,
                f"{a}.attention.kv_lora_rank": self.kv_lora, f"{a}.rope.dimension_count": self.rope_dim,
                f"{a}.attention.key_length": self.head_k + self.rope_dim, f"{a}.attention.value_length": self.head_k,
                f"{a}.attention.layer_norm_rms_epsilon": 1e-6, f"{a}.expert_weights_scale": 2.5,
                f"{a}.expert_weights_norm": True, f"{a}.expert_gating_func": 2, f"{a}.vocab_size": self.n_vocab,
                "general.name": self.name}


DEEPSEEK_V3 = MoeShape("DeepSeek-V3 (shapes)")
KIMI_K2 = MoeShape("Kimi-K2 (shapes)", n_dense=1, n_expert=384, n_head=64, n_vocab=163840)
