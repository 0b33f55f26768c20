"""Tensor names -> (layer, class) for any architecture (prism_native.read.taxonomy)."""
from __future__ import annotations

import pytest

from prism_native.read.taxonomy import classify


@pytest.mark.parametrize("name,layer,cls,role", [
    ("blk.12.attn_qkv.weight", 12, "attn_qkv", "dense"),
    ("token_embd.weight", None, "token_embd", "dense"),
    ("output.weight", None, "output", "dense"),
    ("output_norm.weight", None, "output_norm", "dense"),
    ("per_layer_token_embd.weight", None, "per_layer_token_embd", "dense"),
    ("blk.3.ffn_up_exps.weight", 3, "ffn_up_exps", "expert"),
    ("blk.3.ffn_down_shexp.weight", 3, "ffn_down_shexp", "shared_expert"),
    ("blk.3.ffn_gate_inp.weight", 3, "ffn_gate_inp", "expert_gate"),
    ("blk.3.exp_probs_b.bias", 3, "exp_probs_b.bias", "expert_gate"),
    ("blk.7.ssm_alpha.weight", 7, "ssm_alpha", "dense"),
    ("blk.7.ssm_beta.weight", 7, "ssm_beta", "dense"),
    ("blk.7.ssm_out.weight", 7, "ssm_out", "dense"),
    ("blk.7.attn_gate.weight", 7, "attn_gate", "dense"),
    ("blk.0.attn_q.bias", 0, "attn_q.bias", "dense"),
    ("blk.46.nextn.eh_proj.weight", 46, "nextn.eh_proj", "dense"),
    ("v.blk.2.attn_q.weight", 2, "v.attn_q", "vision"),
    ("v.patch_embd.weight", None, "v.patch_embd", "vision"),
    ("mm.0.weight", None, "mm.0", "projector"),
    ("a.blk.1.ffn_up.weight", 1, "a.ffn_up", "audio"),
    ("enc.blk.5.attn_rel_b.weight", 5, "enc.attn_rel_b", "encoder"),
    ("rope_freqs.weight", None, "rope_freqs", "dense"),
    ("myblk.3.x.weight", None, "myblk.3.x", "dense"),  # "blk." must start a name component
])
def test_classify(name, layer, cls, role):
    t = classify(name)
    assert (t.layer, t.cls, t.role) == (layer, cls, role)
