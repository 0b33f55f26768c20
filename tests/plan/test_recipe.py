"""Recipes: anchored patterns, the llama-quantize simulator (precedence, fallback, substring pitfalls),
rendering, parsing, and an end-to-end check against llama-quantize --dry-run when it is built."""
from __future__ import annotations

import re
import shlex

import pytest

from prism_native import qtypes
from prism_native.errors import PrismError
from prism_native.llama.command import QuantizeCommand
from prism_native.llama.decide import TensorSpec
from prism_native.llama.ftypes import parse_ftype
from prism_native.llama.options import QuantizeOptions
from prism_native.llama.patterns import TensorTypeRule, class_pattern, escape, parse_tensor_type_file
from prism_native.llama.simulate import simulate
from prism_native.plan.recipe import build_recipe
from prism_native.read.model import Hparams
from prism_native.read.taxonomy import classify
from prism_native.tools.quantize_log import dry_run


def _sim(ts, rules, *, hparams=None, ftype="Q8_0", **flags):
    """simulate() with the options spelled as keywords."""
    return simulate(ts, QuantizeOptions.build(ftype, tensor_types=rules, **flags), hparams=hparams)


_rule = TensorTypeRule.make


def _dense(n_layers: int, hidden: int = 576, ffn: int = 1536, tied: bool = True) -> list[TensorSpec]:
    """A llama-like model in llama.cpp's tensor order (norms are not quantizable)."""
    ts = [TensorSpec("token_embd.weight", hidden, source_type="F16")]
    if not tied:
        ts.append(TensorSpec("output.weight", hidden))
    ts.append(TensorSpec("output_norm.weight", hidden, quantizable=False, source_type="F32"))
    for i in range(n_layers):
        for role, ne0 in (("attn_k", hidden), ("attn_norm", hidden), ("attn_output", hidden), ("attn_q", hidden),
                          ("attn_v", hidden), ("ffn_down", ffn), ("ffn_gate", hidden), ("ffn_norm", hidden),
                          ("ffn_up", hidden)):
            norm = "norm" in role
            ts.append(TensorSpec(f"blk.{i}.{role}.weight", ne0, not norm, "F32" if norm else "F16"))
    return ts


def _hybrid(n_layers: int = 20) -> list[TensorSpec]:
    """Qwen3.5-like names: attn_q next to attn_qkv, ssm_beta in 20 layers, MoE down/shexp, per-layer embd."""
    ts = [TensorSpec("token_embd.weight", 1024), TensorSpec("per_layer_token_embd.weight", 256),
          TensorSpec("output.weight", 1024)]
    for i in range(n_layers):
        ts += [TensorSpec(f"blk.{i}.attn_q.weight", 1024), TensorSpec(f"blk.{i}.attn_qkv.weight", 1024),
               TensorSpec(f"blk.{i}.attn_output.weight", 1024), TensorSpec(f"blk.{i}.ssm_beta.weight", 1024),
               TensorSpec(f"blk.{i}.ffn_down.weight", 2048), TensorSpec(f"blk.{i}.ffn_down_exps.weight", 512),
               TensorSpec(f"blk.{i}.ffn_down_shexp.weight", 512)]
    return ts


def _q(ts: list[TensorSpec]) -> list[TensorSpec]:
    return [t for t in ts if t.quantizable]


def _plan(ts: list[TensorSpec], by_role: dict[str, str], default: str = "Q4_K") -> dict[str, str]:
    plan = {}
    for t in _q(ts):
        role = classify(t.name).key.replace("blk.#.", "").removesuffix(".weight")
        plan[t.name] = by_role.get(role, default)
    return plan


# ---------------------------------------------------------------------------------------------
# building

def test_every_class_collapses_to_one_anchored_pattern():
    ts = _dense(30)
    plan = _plan(ts, {"ffn_down": "Q6_K", "attn_v": "Q5_K", "token_embd": "Q8_0"})
    r = build_recipe(ts, plan)
    pats = [o.pattern for o in r.overrides]
    assert len(pats) == 8          # token_embd + 7 layer classes
    assert r"^blk\.[0-9]+\.ffn_down\.weight$" in pats and r"^token_embd\.weight$" in pats
    for p in pats:
        assert p.startswith("^") and p.endswith("$") and p == p.lower() and "=" not in p
        assert not re.search(r"\\[DSWB]", p)
    assert r.base_type == "Q4_K"
    assert r.planned == plan
    # Q6_K and Q4_K on 1536/576-wide rows: 576 % 256 != 0 falls back, 1536 fits
    assert r.written["blk.0.ffn_down.weight"] == "Q6_K"
    assert r.written["blk.0.attn_q.weight"] == "Q5_0"
    assert r.written["token_embd.weight"] == "Q8_0"


def test_per_tensor_overrides_come_first_and_are_exact():
    ts = _hybrid(20)
    plan = _plan(ts, {}, "Q4_K")
    plan["blk.4.ssm_beta.weight"] = "Q6_K"
    plan["blk.1.ffn_down.weight"] = plan["blk.14.ffn_down.weight"] = plan["blk.4.ffn_down.weight"] = "Q5_K"
    r = build_recipe(ts, plan)
    pats = [o.arg for o in r.overrides]
    assert pats.index(r"^blk\.4\.ssm_beta\.weight$=Q6_K") < pats.index(r"^blk\.[0-9]+\.ssm_beta\.weight$=Q4_K")
    assert r"^blk\.(1|4|14)\.ffn_down\.weight$=Q5_K" in pats
    sim = _sim(ts, r.overrides, ftype=r.base_type)
    got = sim.by_name()
    assert got["blk.14.ssm_beta.weight"].requested == "Q4_K"
    assert got["blk.4.ffn_down_exps.weight"].requested == "Q4_K"
    assert sim.problems() == []


def test_substring_pitfalls_are_exact_in_built_recipes():
    ts = _hybrid(20)
    plan = _plan(ts, {"attn_q": "Q3_K", "attn_qkv": "Q6_K", "attn_output": "Q5_K", "output": "Q8_0",
                      "token_embd": "Q6_K", "per_layer_token_embd": "Q4_0", "ffn_down": "Q4_K",
                      "ffn_down_exps": "IQ4_XS", "ffn_down_shexp": "Q8_0"})
    r = build_recipe(ts, plan)
    got = _sim(ts, r.overrides, ftype=r.base_type).by_name()
    assert {n: got[n].requested for n in plan} == plan
    assert got["per_layer_token_embd.weight"].written == "Q4_0"


def test_class_with_mixed_types_keeps_majority_as_class_pattern():
    ts = _dense(4)
    plan = _plan(ts, {})
    for i in (0, 1, 2):
        plan[f"blk.{i}.ffn_down.weight"] = "Q6_K"
    r = build_recipe(ts, plan)
    args = [o.arg for o in r.overrides]
    assert r"^blk\.3\.ffn_down\.weight$=Q4_K" in args
    assert r"^blk\.[0-9]+\.ffn_down\.weight$=Q6_K" in args


def test_unusual_names_are_escaped_not_mangled():
    ts = [TensorSpec("blk.0.Attn=Q+x.weight", 256), TensorSpec("blk.1.Attn=Q+x.weight", 256),
          TensorSpec("v.blk.0.a b.weight", 256)]
    r = build_recipe(ts, {t.name: "Q4_K" for t in ts})
    for o in r.overrides:
        assert o.pattern == o.pattern.lower() and "=" not in o.pattern and " " not in o.pattern
    assert parse_tensor_type_file(r.tensor_type_file()) == list(r.overrides)
    assert escape("A.b") == r"\x41\.b"
    with pytest.raises(PrismError, match="ASCII"):
        escape("blk.0.é")


def test_base_type_choice():
    ts = _dense(2)
    plan = {t.name: "F16" for t in _q(ts)}
    r = build_recipe(ts, plan)
    assert r.base_type == "F16" and r.overrides == ()
    plan["token_embd.weight"] = "Q8_0"
    r = build_recipe(ts, plan)
    assert r.base_type == "Q8_0"                  # the only quantized type: patterns must apply
    assert r.written["blk.0.attn_q.weight"] == "F16"
    plan = {t.name: "IQ2_S" for t in _q(ts)}     # ftype IQ2_S defaults to IQ2_XS: still any quantized ftype
    r = build_recipe(ts, plan)
    assert r.base_type in ("Q8_0",) and all(v == "IQ2_S" for v in r.planned.values())
    with pytest.raises(PrismError, match="unquantized"):
        build_recipe(ts, {n: ("F16" if i % 2 else "BF16") for i, n in enumerate(plan)})


def test_build_rejects_incomplete_plans():
    ts = _dense(1)
    plan = _plan(ts, {})
    with pytest.raises(ValueError, match="no planned type"):
        build_recipe(ts, {k: v for k, v in plan.items() if "attn_k" not in k})
    with pytest.raises(ValueError, match="not quantizable"):
        build_recipe(ts, {**plan, "blk.0.attn_norm.weight": "Q8_0"})


# ---------------------------------------------------------------------------------------------
# simulator

@pytest.mark.parametrize("pattern, meant, caught", [
    ("attn_q", "blk.3.attn_q.weight", "blk.3.attn_qkv.weight"),
    ("output", "output.weight", "blk.3.attn_output.weight"),
    ("token_embd", "token_embd.weight", "per_layer_token_embd.weight"),
    (r"4\.ssm_beta", "blk.4.ssm_beta.weight", "blk.14.ssm_beta.weight"),
    ("ffn_down", "blk.3.ffn_down.weight", "blk.3.ffn_down_exps.weight"),
])
def test_substring_pitfalls_are_reported(pattern, meant, caught):
    ts = _hybrid(20)
    sim = _sim(ts, [_rule(pattern, "Q8_0")], ftype="Q4_K", pure=True)
    got = sim.by_name()
    assert got[meant].requested == "Q8_0" and got[caught].requested == "Q8_0"
    flagged = {m.tensor for m in sim.partial}
    assert caught in flagged and meant not in flagged
    assert any("part of a longer name" in p for p in sim.problems())


def test_first_match_wins_and_shadowed_unused_reported():
    ts = _dense(3)
    ov = [_rule(r"ffn_.*", "Q5_K"), _rule(r"^blk\.[0-9]+\.ffn_down\.weight$", "Q6_K"),
          _rule("^nope$", "Q8_0"), _rule("attn_k", "Q8_0")]
    sim = _sim(ts, ov, ftype="Q4_K_M", pure=True)
    got = sim.by_name()
    assert got["blk.0.ffn_down.weight"].requested == "Q5_K"
    assert got["blk.0.ffn_down.weight"].pattern == 0
    assert sim.shadowed == (1,) and sim.unused == (2,)
    assert got["blk.0.attn_q.weight"].rule == "default"
    assert got["blk.0.attn_norm.weight"].rule == "kept" and got["blk.0.attn_norm.weight"].written == "F32"


def test_pattern_is_lower_cased_like_llama_quantize():
    ts = _dense(1)
    sim = _sim(ts, [_rule(r"blk\.0\.ATTN_Q", "Q8_0"), _rule(r"\Dffn_up", "Q8_0")], ftype="Q4_K",
                   pure=True)
    got = sim.by_name()
    assert got["blk.0.attn_q.weight"].requested == "Q8_0"       # upper-case letters became lower-case
    assert got["blk.0.ffn_up.weight"].requested == "Q4_K"       # \D became \d and stopped matching
    assert sim.lowercased == (0, 1)


def test_token_embedding_type_precedes_patterns_and_skips_fallback():
    ts = _dense(2, tied=False)
    sim = _sim(ts, [_rule(r"^token_embd\.weight$", "Q8_0")], ftype="Q4_K",
                   token_embedding_type="Q4_K", output_tensor_type="Q6_K", pure=True)
    got = sim.by_name()
    assert got["token_embd.weight"].rule == "token-embedding-type"
    assert got["token_embd.weight"].written == "Q4_K"          # 576 % 256 != 0 and no fallback
    assert got["output.weight"].written == "Q6_K"
    assert set(sim.misfit) == {"token_embd.weight", "output.weight"}
    assert sim.unused == (0,)        # the pattern is never consulted for token_embd


def test_per_layer_token_embd_can_be_named_despite_token_embedding_type():
    ts = _hybrid(1)
    sim = _sim(ts, [_rule(r"^per_layer_token_embd\.weight$", "Q8_0")], ftype="Q4_K",
                   token_embedding_type="Q6_K", pure=True)
    got = sim.by_name()
    assert got["per_layer_token_embd.weight"].requested == "Q8_0"
    assert got["token_embd.weight"].requested == "Q6_K"


def test_tied_embeddings_take_the_output_branch():
    tied = _dense(2, hidden=576, tied=True)
    got = _sim(tied, [], ftype="Q4_K_M").by_name()
    assert got["token_embd.weight"].rule == "output-rule"
    assert got["token_embd.weight"].written == "Q8_0"          # 576 % 256 != 0
    got = _sim(_dense(2, hidden=1024, ffn=2048), [], ftype="Q4_K_M").by_name()
    assert got["token_embd.weight"].written == "Q6_K"
    got = _sim(_dense(2, hidden=1024, ffn=2048), [], ftype="IQ2_M").by_name()
    assert got["token_embd.weight"].written == "Q5_K"
    # --output-tensor-type reaches tied token_embd through the mix, so the fallback does run
    got = _sim(tied, [], ftype="Q8_0", output_tensor_type="Q4_K").by_name()
    assert got["token_embd.weight"].requested == "Q4_K" and got["token_embd.weight"].written == "Q5_0"
    # untied: token_embd is an ordinary mix tensor (the ftype's default type, then the fallback)
    got = _sim(_dense(2, tied=False), [], ftype="Q4_K_M").by_name()
    assert got["token_embd.weight"].rule == "mix"
    assert (got["token_embd.weight"].requested, got["token_embd.weight"].written) == ("Q4_K", "Q5_0")
    assert got["output.weight"].rule == "output-rule"


def test_mix_sees_only_unmatched_tensors_in_order():
    ts = _dense(16, hidden=1024, ffn=1024)
    hp = Hparams("llama", 16, n_head=16, n_head_kv=4)          # GQA 4
    got = _sim(ts, [_rule(r"^blk\.[0-3]\.ffn_down\.weight$", "Q8_0")], ftype="Q4_K_M",
                   hparams=hp).by_name()
    # the mix's ffn_down counter starts at blk.4 (use_more_bits(0, 16)), not at the block number 4
    assert [got[f"blk.{i}.ffn_down.weight"].requested for i in range(4, 8)] == ["Q6_K", "Q6_K", "Q4_K", "Q4_K"]
    assert [got[f"blk.{i}.ffn_down.weight"].rule for i in (3, 4)] == ["pattern", "mix"]
    got = _sim(_dense(3), [_rule(r"^blk\.[0-9]+\.ffn_down\.weight$", "Q6_K")], ftype="Q3_K_M").by_name()
    assert got["blk.1.attn_q.weight"].requested == "Q3_K"
    assert got["blk.1.attn_q.weight"].written == "Q4_0"        # Q3_K on 576 falls back
    assert [got[f"blk.{i}.attn_v.weight"].requested for i in range(3)] == ["Q5_K", "Q5_K", "Q4_K"]


def test_hparams_drive_the_mix():
    ts = _dense(2, hidden=1024, ffn=1024)
    plain = _sim(ts, [], ftype="Q2_K").by_name()
    gqa = _sim(ts, [], ftype="Q2_K", hparams=Hparams("llama", 2, n_head=16, n_head_kv=4)).by_name()
    assert plain["blk.0.attn_v.weight"].requested == "Q3_K" and gqa["blk.0.attn_v.weight"].requested == "Q4_K"
    # a few mixes differ when llama-quantize has an imatrix
    assert _sim(ts, [], ftype="IQ3_XXS").by_name()["blk.0.attn_v.weight"].requested == "IQ3_S"
    got = _sim(ts, [], ftype="IQ3_XXS", imatrix=True).by_name()["blk.0.attn_v.weight"]
    assert got.requested == "IQ3_XXS" and got.requires_imatrix


def test_unquantized_ftype_ignores_patterns_and_copy_keeps():
    ts = _dense(1)
    got = _sim(ts, [_rule("ffn_down", "Q4_K")], ftype="F16").by_name()
    assert got["blk.0.ffn_down.weight"].rule == "default" and got["blk.0.ffn_down.weight"].written == "F16"
    got = _sim(ts, [_rule("ffn_down", "Q4_K")], ftype="COPY").by_name()
    assert got["blk.0.ffn_down.weight"].rule == "kept"


def test_leave_output_tensor():
    got = _sim(_dense(1, tied=False), [_rule("output", "Q4_K")], ftype="Q8_0",
                   leave_output_tensor=True).by_name()
    assert got["output.weight"].rule == "kept"


def test_fallback_table():
    # the simulator's fallback is qtypes.effective (tensor_type_fallback)
    def fallback_type(requested: str, n_per_row: int) -> str:
        return qtypes.effective(qtypes.get(requested), n_per_row).name

    assert fallback_type("Q4_K", 576) == "Q5_0"
    assert fallback_type("Q5_K", 576) == "Q5_1"
    assert fallback_type("Q6_K", 576) == "Q8_0"
    assert fallback_type("Q3_K", 576) == "Q4_0"
    assert fallback_type("IQ2_XXS", 576) == "IQ4_NL"
    assert fallback_type("Q4_K", 1024) == "Q4_K"
    assert fallback_type("Q4_K", 100) == "F16"
    assert fallback_type("Q8_0", 100) == "F16"
    with pytest.raises(PrismError, match="no fallback"):
        fallback_type("Q1_0", 576)
    got = _sim([TensorSpec("blk.0.ffn_down.weight", 576)], [_rule("ffn_down", "IQ2_XXS")]).by_name()
    assert (got["blk.0.ffn_down.weight"].requested, got["blk.0.ffn_down.weight"].written) == ("IQ2_XXS", "IQ4_NL")


def test_bad_regex_is_a_user_error():
    with pytest.raises(PrismError, match="not a valid regex"):
        _sim(_dense(1), [_rule("ffn_(", "Q4_K")])


# ---------------------------------------------------------------------------------------------
# rendering and parsing

def _recipe():
    ts = _hybrid(20)
    plan = _plan(ts, {"attn_qkv": "Q6_K", "output": "Q8_0"})
    plan["blk.4.ssm_beta.weight"] = "Q8_0"
    return ts, build_recipe(ts, plan)


def test_shell_command_round_trips_through_the_parser():
    ts, r = _recipe()
    c = r.command("in model.gguf", "out.gguf", imatrix="imat.gguf", allow_requantize=True, nthreads=4)
    argv = shlex.split(c.shell().replace("\\\n", " "))
    assert argv == c.argv()
    assert argv[0] == "llama-quantize" and argv[-4:] == ["in model.gguf", "out.gguf", r.base_type, "4"]
    parsed = QuantizeCommand.parse(argv)
    assert parsed.imatrix == "imat.gguf" and parsed.allow_requantize and parsed.nthreads == 4
    assert parsed.overrides() == list(r.overrides)
    sim = parsed.simulate(ts)
    assert {n: sim.by_name()[n].requested for n in r.planned} == r.planned


def test_tensor_type_file_alternative(tmp_path):
    ts, r = _recipe()
    f = tmp_path / "types.txt"
    f.write_text(r.tensor_type_file())
    cmd = r.command("in.gguf", "out.gguf", tensor_type_file=str(f)).shell(multiline=False)
    assert "--tensor-type " not in cmd and "--tensor-type-file" in cmd
    assert QuantizeCommand.parse(shlex.split(cmd)).overrides() == list(r.overrides)
    d = r.to_dict()
    assert d["base_type"] == r.base_type and len(d["tensor_types"]) == len(r.overrides)


def test_shell_guards():
    ts = _dense(1)
    plan = _plan(ts, {"ffn_down": "IQ2_XXS"})
    r = build_recipe(ts, plan)
    assert r.requires_imatrix == ("blk.0.ffn_down.weight",)
    with pytest.raises(PrismError, match="--imatrix"):
        r.command("in.gguf", "out.gguf")
    r.command("in.gguf", "out.gguf", imatrix="i.dat").shell()
    r2 = build_recipe(ts, _plan(ts, {"token_embd": "IQ2_XXS"}))
    assert r2.requires_imatrix == ()
    with pytest.raises(PrismError, match="reads as an ftype"):
        r2.command("in.gguf", "8b.gguf").shell()        # std::stoi("8B.GGUF") == 8: llama-quantize takes it as Q5_0
    with pytest.raises(PrismError, match="same"):
        r2.command("m.gguf", "./m.gguf").shell()


def test_parse_command_positional_forms_and_flags(tmp_path):
    c = QuantizeCommand.parse(["in.gguf", "q4_k_m"])
    assert c.model_in == "in.gguf" and c.model_out is None and c.ftype == "Q4_K_M"
    c = QuantizeCommand.parse(["./llama-quantize", "--pure", "--leave-output-tensor", "--token-embedding-type", "q8_0",
                       "--output-tensor-type", "Q6_k", "--tensor-type", "ATTN_V=q5_k", "in.gguf", "out.gguf", "15",
                       "8"])
    # 15 is LLAMA_FTYPE_MOSTLY_Q4_K_M, but QUANT_OPTIONS lists its alias Q4_K first
    assert c.pure and c.leave_output_tensor and c.ftype == "Q4_K" and c.nthreads == 8
    assert c.token_embedding_type == "Q8_0" and c.output_tensor_type == "Q6_K"
    assert c.overrides() == [_rule("ATTN_V", "Q5_K")]
    f = tmp_path / "t.txt"
    f.write_text("a=q4_k\n  b=Q8_0 ")
    c = QuantizeCommand.parse(["--tensor-type", "x=q6_k", "--tensor-type-file", str(f), "--tensor-type", "y=f16",
                       "in.gguf", "out.gguf", "Q8_0"])
    assert [o.pattern for o in c.overrides()] == ["x", "a", "b", "y"]


@pytest.mark.parametrize("argv, msg", [
    (["--tensor-type=ffn_down=q4_k", "in.gguf", "Q4_K"], "next argument"),
    (["--bogus", "in.gguf", "Q4_K"], "does not accept"),
    (["--tensor-type", "ffn_down", "in.gguf", "Q4_K"], "malformed"),
    (["--tensor-type", "=q4_k", "in.gguf", "Q4_K"], "missing tensor name"),
    (["--tensor-type", "ffn_down=", "in.gguf", "Q4_K"], "missing quantization type"),
    (["--tensor-type", "ffn_down=q9_k", "in.gguf", "Q4_K"], "unknown quant type"),
    (["in.gguf", "out.gguf", "Q9"], "invalid ftype"),
    (["in.gguf"], "at least"),
    (["--imatrix"], "needs a value"),
    (["--include-weights", "a", "--exclude-weights", "b", "in.gguf", "Q4_K"], "together"),
])
def test_parse_command_errors(argv, msg):
    with pytest.raises(PrismError, match=msg):
        QuantizeCommand.parse(argv)


def test_tensor_type_file_without_equals_is_an_error():
    with pytest.raises(PrismError, match="malformed"):
        parse_tensor_type_file("# comment\nffn_down=q4_k")


def test_parse_ftype_mirrors_try_parse_ftype():
    assert parse_ftype("q4_k") == "Q4_K" and parse_ftype("Q3_K_M") == "Q3_K_M"
    assert parse_ftype("7") == "Q8_0" and parse_ftype("0") == "F32"
    assert parse_ftype("out.gguf") is None and parse_ftype("99") is None
    assert TensorTypeRule.parse("blk=iq4_xs") == _rule("blk", "IQ4_XS")
    assert class_pattern(classify("blk.12.ffn_down.weight").key) == r"^blk\.[0-9]+\.ffn_down\.weight$"


# ---------------------------------------------------------------------------------------------
# end to end: llama-quantize --dry-run on SmolLM2-135M agrees with the recipe

def test_recipe_matches_llama_quantize_dry_run(llama_quantize_bin, smollm2_path):
    import gguf

    model = smollm2_path
    reader = gguf.GGUFReader(str(model))
    ts = []
    for t in reader.tensors:
        q = len(t.shape) >= 2 and t.name.endswith("weight") and "_norm" not in t.name
        ts.append(TensorSpec(t.name, int(t.shape[0]), q, t.tensor_type.name))
    plan = _plan(ts, {"ffn_down": "Q6_K", "attn_v": "Q8_0", "ffn_up": "Q3_K", "token_embd": "Q6_K",
                      "attn_output": "IQ4_XS"}, "Q4_K")
    plan["blk.4.ffn_down.weight"] = "Q4_K"
    plan["blk.14.ffn_down.weight"] = "Q5_K"
    plan["blk.29.attn_q.weight"] = "Q8_0"
    r = build_recipe(ts, plan)
    got = dry_run(llama_quantize_bin, r.command(model, "/tmp/prism-unused.gguf", allow_requantize=True)).types
    assert {n: got[n] for n in r.written} == r.written
    # and the simulator reproduces a hand-written unanchored command, including its pitfalls
    user = QuantizeCommand.parse(["--allow-requantize", "--pure", "--output-tensor-type", "q4_K",
                                  "--tensor-type", "attn_q=q5_0", "--tensor-type", r"4\.ffn_down=q8_0",
                                  str(model), "Q4_0"])
    sim = user.simulate(ts)
    assert {r.name: r.written for r in sim.tensors} == dry_run(llama_quantize_bin, user).types
