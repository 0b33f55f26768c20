"""The composite's structural terms: facts of the model's graph, 0 or 1 per tensor."""
import numpy as np
import pytest

from prism_native.plan.score import FITTED_GROWTH, STRUCTURAL, Weights, error_cost, structural_metrics


def _by_class(classes: list[str], layers: list[int | None]) -> dict[tuple[str, int | None], dict[str, float]]:
    return {(c, il): m for c, il, m in zip(classes, layers, structural_metrics(classes, layers))}


def test_untied_dense_model():
    classes = ["token_embd", "output"] + ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_down", "ffn_up"] * 2
    layers = [None, None] + [0] * 6 + [9] * 6
    got = _by_class(classes, layers)
    assert got[("output", None)] == {"head": 1, "embedding": 0, "first": 0, "linear": 0, "tied": 0, "key": 0}
    assert got[("token_embd", None)]["embedding"] == 1 and got[("token_embd", None)]["head"] == 0
    assert got[("attn_k", 0)]["key"] == 1 and got[("attn_q", 0)]["key"] == 0
    assert got[("attn_v", 9)]["linear"] == 1 and got[("ffn_up", 9)]["linear"] == 0
    assert got[("attn_k", 0)]["first"] == 1 and got[("attn_k", 9)]["first"] == 0      # 10 layers: only block 0


def test_tied_embedding_is_head_embedding_and_tied():
    got = _by_class(["token_embd", "attn_k_b", "ffn_down"], [None, 0, 0])
    assert got[("token_embd", None)] == {"head": 1, "embedding": 1, "first": 0, "linear": 0, "tied": 1, "key": 0}
    assert got[("attn_k_b", 0)]["key"] == 1          # MLA's per-head key part


def test_every_structural_term_has_a_weight():
    assert set(STRUCTURAL) <= set(Weights().to_json())


def _fan_outs(synthetic, name: str, spec, cases):
    from prism_native.plan.score import fan_out
    from prism_native.read.model import open_model
    model = open_model(synthetic(name, spec))
    return [fan_out(model, cls, layer) for cls, layer in cases]


def test_grouped_query_attention_counts_each_kv_row_once_per_query_head(synthetic):
    """GQA is MHA with every K/V row repeated for the n_head / n_head_kv heads of its group, so the
    distortion counts a K or V weight that many times; MHA and every other tensor count once."""
    from support import synth
    cases = [("attn_k", 0), ("attn_v", 3), ("attn_q", 0), ("attn_output", 0), ("ffn_down", 0), ("token_embd", None)]
    assert _fan_outs(synthetic, "dense", synth.VARIANTS["dense"], cases) == [4, 4, 1, 1, 1, 1]    # 4 heads, 1 KV
    assert _fan_outs(synthetic, "mha", synth.VARIANTS["mha"], cases) == [1] * 6


def test_fan_out_of_fused_and_per_layer_attention(synthetic):
    from support import synth
    # fused QKV, 4 query heads and 1 KV head: rows q 4 + k 1 + v 1 heads, read as 4 + 4 + 4
    fused = synth.Spec(n_layer=2, layer_names=("attn_qkv", "attn_output"))
    assert _fan_outs(synthetic, "fused", fused, [("attn_qkv", 0), ("attn_output", 1)]) == [2.0, 1.0]
    # Gated DeltaNet (ssm keys): q and k heads (group_count 2) broadcast over 4 value heads; rows 2+2+4 -> 4+4+4
    delta = synth.Spec(n_layer=2, layer_names=synth.QWEN35_LAYER,
                       kv={"llama.ssm.group_count": 2, "llama.ssm.time_step_rank": 4})
    assert _fan_outs(synthetic, "delta", delta, [("attn_qkv", 0), ("ssm_out", 0), ("attn_gate", 1)]) == [1.5, 1, 1]
    # head_count_kv per layer (0 on a recurrent layer, as hybrids store it): each layer its own group
    per_layer = synth.Spec(n_layer=3, kv={"llama.attention.head_count_kv": [0, 2, 1]})
    assert _fan_outs(synthetic, "per-layer", per_layer, [("attn_k", 0), ("attn_k", 1), ("attn_v", 2)]) == [1, 2, 4]


def test_routed_experts_count_at_their_routing_share(synthetic):
    """A token uses expert_used_count (2) of expert_count (8) experts: an expert weight counts 1/4; the
    attention of the same model counts as usual (its 4 heads share 1 KV head)."""
    from support import synth
    cases = [("ffn_gate_exps", 0), ("ffn_up_exps", 1), ("ffn_down_exps", 3), ("attn_k", 0), ("attn_q", 0)]
    assert _fan_outs(synthetic, "moe", synth.VARIANTS["moe"], cases) == [0.25, 0.25, 0.25, 4, 1]


def test_effective_params_scale_by_fan_out():
    from prism_native.plan.score import effective_params
    assert effective_params("attn_k", [256, 64], 256 * 64, 4.0) == 4 * 256 * 64
    assert effective_params("attn_v", None, 1000) == 1000                       # older ablation files: no fan_out


def test_error_cost_is_linear_at_small_errors_and_grows_at_large_ones():
    """g(e) = e exp(kappa e^2): kappa 0 is the linear distortion; with the fitted kappa a Q1_0-like error
    (0.35) costs more per unit of error than a Q4_K-like one (0.005); arrays work as floats do, and the
    price stays finite however large the error."""
    assert error_cost(0.2, 0.0) == 0.2 and error_cost(0.0) == 0.0
    assert error_cost(0.1, 5.0) == pytest.approx(0.1 * np.exp(0.05))
    assert np.allclose(error_cost(np.array([0.005, 0.35]), 2.0), [0.005 * np.exp(5e-5), 0.35 * np.exp(0.245)])
    assert np.isfinite(error_cost(1e3, 50.0)) and error_cost(1e3, 50.0) > error_cost(10.0, 50.0)
    assert FITTED_GROWTH >= 0.0
    if FITTED_GROWTH > 0:
        assert error_cost(0.35) / 0.35 > error_cost(0.005) / 0.005 >= 1.0
