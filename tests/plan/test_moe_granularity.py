"""The granularity a plan has on a DeepSeek-style mixture of experts: one type per tensor (an expert
stack is one tensor for --tensor-type), and every separate tensor kind its own decision: the leading
dense blocks' FFN, the routed expert stacks, the shared expert; the router (ffn_gate_inp) is copied."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from support import synth
from support.moe_shapes import DEEPSEEK_V3

from prism_native.llama.decide import TensorSpec
from prism_native.llama.quantizable import quantizable_tensors
from prism_native.plan.recipe import build_recipe
from prism_native.read.model import Model
from prism_native.read.taxonomy import classify

# DeepSeek-V3's layout at toy size: 1 dense block, then 2 MoE blocks of 8 experts and a shared expert
TOY = dataclasses.replace(DEEPSEEK_V3, name="toy-deepseek", n_layer=3, n_dense=1, n_embd=256, n_ff=512, n_ff_exp=256,
                          n_expert=8, n_head=4, n_vocab=512, q_lora=256, kv_lora=256, rope_dim=64, head_k=64)

# a different type for each FFN kind of the same role (gate): the plan can say each
TYPES = {"ffn_gate": "Q6_K", "ffn_gate_exps": "Q2_K", "ffn_gate_shexp": "Q5_K"}


def _fill(name: str, shape: tuple[int, ...], nbytes: int):
    rng = np.random.default_rng(len(name))
    if len(shape) == 1 or "gate_inp" in name:
        yield (rng.standard_normal(nbytes // 4, dtype=np.float32) * 0.02).tobytes()
    else:
        yield (rng.standard_normal(nbytes // 2, dtype=np.float32) * 0.02).astype(np.float16).tobytes()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "toy.gguf"
    tensors = {n: (s, "F16" if t == "BF16" else t) for n, (s, t) in TOY.tensors().items()}
    synth.write_layout(path, "deepseek2", TOY.kv(), tensors, fill=_fill)
    return path


def _plan(model: Model) -> dict[str, str]:
    return {t.name: TYPES.get(classify(t.name).cls, "Q4_K") for t in quantizable_tensors(model)}


def test_dense_blocks_shared_and_routed_experts_are_separate_decisions(toy):
    model = Model(toy)
    q = {t.name for t in quantizable_tensors(model)}
    assert "blk.0.ffn_gate.weight" in q and "blk.1.ffn_gate_exps.weight" in q and "blk.1.ffn_gate_shexp.weight" in q
    assert "blk.1.ffn_gate_inp.weight" not in q            # the router: llama-quantize copies it
    assert {classify(n).cls for n in q} >= set(TYPES)     # three classes, not one "ffn_gate"
    recipe = build_recipe([TensorSpec.of(t, model.arch) for t in model.tensors], _plan(model), hparams=model.hparams)
    assert recipe.written["blk.0.ffn_gate.weight"] == "Q6_K"
    assert recipe.written["blk.2.ffn_gate_exps.weight"] == "Q2_K"
    assert recipe.written["blk.2.ffn_gate_shexp.weight"] == "Q5_K"


@pytest.mark.needs_llama_cpp("llama-quantize")
def test_llama_quantize_writes_each_kind_its_type(toy, llama_quantize_bin, tmp_path):
    from support.recipes import run_recipe

    model = Model(toy)
    recipe = build_recipe([TensorSpec.of(t, model.arch) for t in model.tensors], _plan(model), hparams=model.hparams)
    argv = recipe.command(toy, tmp_path / "out.gguf").argv()
    written, _ = run_recipe(llama_quantize_bin, {"argv": argv}, tmp_path)
    for name, want in recipe.written.items():
        assert written[name] == want, name
    assert written["blk.1.ffn_gate_inp.weight"] == "F32"
