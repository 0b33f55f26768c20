"""The composite's structural terms: facts of the model's graph, 0 or 1 per tensor."""
from prism_native.plan.score import STRUCTURAL, Weights, structural_metrics


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
    assert set(STRUCTURAL) <= set(Weights().as_dict())
