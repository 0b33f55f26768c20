"""llama-quantize's per-tensor type decision (prism_native.llama.decide): unit cases, and every built-in ftype
and flag combination checked against `llama-quantize --dry-run` when the binary is available."""
from __future__ import annotations

import pytest

from prism_native.errors import PrismError
from prism_native.llama import ftypes, mix, patterns, quantizable
from prism_native.llama.command import QuantizeCommand
from prism_native.llama.decide import decide
from prism_native.llama.options import QuantizeOptions
from prism_native.read.model import Hparams, Model, TensorInfo
from prism_native.tools.quantize_log import dry_run
from support import synth


def _tensors(spec: synth.Spec, ggml_type: int = 1) -> list[TensorInfo]:
    return [TensorInfo(n, s, ggml_type if len(s) > 1 else 0, 0, 0, 0) for n, s in spec.shapes().items()]


def _hp(spec: synth.Spec) -> Hparams:
    return Hparams(spec.arch, spec.n_layer, 0, spec.n_expert, spec.n_head, spec.n_head_kv, spec.n_embd)


def _types(spec: synth.Spec, ftype: str, **kw) -> dict[str, str]:
    ds = decide(_tensors(spec), _hp(spec), QuantizeOptions.build(ftype, **kw))
    return {d.name: d.target.name for d in ds}


# -- unit cases (no binary needed) -----------------------------------------------------------------

def test_q3_k_m_mix_on_dense_model():
    t = _types(synth.VARIANTS["dense"], "Q3_K_M")
    assert [t[f"blk.{i}.attn_v.weight"] for i in range(4)] == ["Q5_K", "Q5_K", "Q4_K", "Q4_K"]
    assert t["blk.0.ffn_down.weight"] == "Q5_K" and t["blk.1.ffn_down.weight"] == "Q4_K"  # n/16 = 1
    assert t["output.weight"] == "Q6_K" and t["token_embd.weight"] == "Q3_K"
    assert t["blk.3.attn_output.weight"] == "Q4_K" and t["blk.3.ffn_up.weight"] == "Q3_K"
    assert t["blk.3.attn_norm.weight"] == "F32"


def test_q4_k_m_use_more_bits_pattern():
    t = _types(synth.VARIANTS["dense"], "Q4_K_M")
    six = [i for i in range(16) if t[f"blk.{i}.ffn_down.weight"] == "Q6_K"]
    assert six == [i for i in range(16) if mix.use_more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]


def test_tied_embeddings_take_the_output_branch_and_fallbacks():
    spec = synth.VARIANTS["tied"]  # rows of 320 and ffn_down rows of 200
    ds = {d.name: d for d in decide(_tensors(spec), _hp(spec), QuantizeOptions("Q4_K_M"))}
    assert ds["token_embd.weight"].target.name == "Q8_0"   # 320 % 256: Q8_0 instead of Q6_K
    q = ds["blk.0.attn_q.weight"]
    assert (q.wanted.name, q.target.name) == ("Q4_K", "Q5_0")
    down = ds["blk.0.ffn_down.weight"]                       # Q6_K -> Q8_0 -> 200 % 32 -> F16
    assert (down.wanted.name, down.target.name) == ("Q6_K", "F16")


def test_flags_precedence():
    spec = synth.VARIANTS["ple"]
    t = _types(spec, "Q4_K_M", token_embedding_type="Q4_K",
               tensor_types=["per_layer_token_embd=q8_0", "token_embd=q2_k", "attn=q5_0", "attn_v=q8_0"])
    assert t["token_embd.weight"] == "Q4_K"             # the dedicated flag beats --tensor-type
    assert t["per_layer_token_embd.weight"] == "Q8_0"   # ...except for per_layer_token_embd
    assert t["blk.0.attn_v.weight"] == "Q5_0"           # first matching pattern wins
    t = _types(spec, "Q4_K_M", token_embedding_type="Q4_K")
    assert t["per_layer_token_embd.weight"] == "Q4_K"


def test_dedicated_flags_get_no_fallback_but_tied_output_type_does():
    spec = synth.VARIANTS["tied"]
    t = _types(spec, "Q4_K_M", token_embedding_type="Q4_K")
    assert t["token_embd.weight"] == "Q4_K"  # no fallback (llama-quantize itself cannot write this)
    t = _types(spec, "Q4_K_M", output_tensor_type="Q5_K")
    assert t["token_embd.weight"] == "Q5_1"  # tied: --output-tensor-type goes through the mix + fallback


def test_pure_and_non_quantized_default_ignore_the_mix():
    spec = synth.VARIANTS["dense"]
    t = _types(spec, "Q4_K_M", pure=True)
    assert {v for k, v in t.items() if "norm" not in k} == {"Q4_K"}
    t = _types(spec, "F16", tensor_types=["attn_v=q8_0"], token_embedding_type="Q8_0")
    assert t["blk.0.attn_v.weight"] == "F16" and t["token_embd.weight"] == "Q8_0"


def test_partial_override_shifts_the_counters():
    spec = synth.VARIANTS["dense"]
    t = _types(spec, "Q4_K_M", tensor_types=[r"blk\.[0-3]\.ffn_down=q8_0"])
    # the heuristic sees blk.4 as its first ffn_down (i_ffn_down = 0): use_more_bits(0, 16)
    assert t["blk.4.ffn_down.weight"] == "Q6_K" and t["blk.5.ffn_down.weight"] == "Q6_K"


def test_hybrid_names_and_what_is_not_quantized():
    spec = synth.VARIANTS["hybrid"]
    ds = {d.name: d for d in decide(_tensors(spec), _hp(spec), QuantizeOptions("Q3_K_M"))}
    for cls in ("ssm_alpha", "ssm_beta", "ssm_out", "attn_gate"):
        assert ds[f"blk.2.{cls}.weight"].quantized
        assert ds[f"blk.2.{cls}.weight"].target.name == "Q3_K"
    assert not ds["blk.2.ssm_conv1d.weight"].quantized
    assert [ds[f"blk.{i}.attn_qkv.weight"].target.name for i in range(3)] == ["Q5_K", "Q5_K", "Q4_K"]


def test_not_quantized_reasons():
    r = quantizable.not_quantized_reason
    assert r("blk.0.attn_norm.weight", 2, "llama") == "norm"
    assert r("blk.0.attn_q.weight", 1, "llama") == "1-D"
    assert r("blk.0.attn_q.bias", 2, "llama") == "not a weight"
    assert r("blk.0.ffn_gate_inp.weight", 2, "llama") == "expert router (ffn_gate_inp)"
    assert r("output.weight", 2, "llama", quantize_output_tensor=False) == "--leave-output-tensor"
    assert r("position_embd.weight", 2, "gpt2") is not None
    assert r("v.patch_embd.weight", 4, "clip") is not None
    assert r("blk.0.ssm_beta.weight", 2, "glm5-next") is not None
    assert r("blk.0.ssm_beta.weight", 2, "qwen35") is None


def test_llama_order():
    names = ["blk.10.a.weight", "output.weight", "blk.9.b.weight", "blk.9.a.weight", "token_embd.weight"]
    assert quantizable.llama_order(names) == ["output.weight", "token_embd.weight", "blk.9.a.weight",
                                        "blk.9.b.weight", "blk.10.a.weight"]


def test_moe_layers_come_from_names():
    spec = synth.VARIANTS["moe"]
    tensors = _tensors(spec) + [TensorInfo("ffn_down_extra.weight", (256, 256), 1, 0, 0, 0)]
    with pytest.raises(PrismError, match="failed to determine layer"):
        decide(tensors, _hp(spec), QuantizeOptions("Q4_K_M"))


@pytest.mark.parametrize("pattern,name,hit", [
    (r"BLK\.\D+\.ATTN_K", "blk.12.attn_k.weight", True),   # \D lower-cased to \d, as llama-quantize does
    (r"attn_q", "blk.0.attn_qkv.weight", True),            # unanchored
    (r"^blk\.1\.attn_q\.weight$", "blk.11.attn_q.weight", False),
    (r"blk\.\d", "blk.\u0661.x", False),                    # ECMAScript \d is ASCII only
    (r"[^]", "x", True), (r"a[]", "a", False),
    (r"\Attn_q", "blk.0.attn_q.weight", True),              # \a: identity escape, not BEL
    (r"\Qkv", "blk.0.attn_qkv.weight", True),
    (r"at++n", "blk.0.attn_k.weight", True), (r"x*+attn", "attn", True),  # nested, not possessive
])
def test_tensor_type_patterns(pattern, name, hit):
    assert patterns.TensorTypeRule.make(pattern, "Q8_0").matches(name) is hit


@pytest.mark.parametrize("pattern", [r"(?P<x>attn)", r"(?i)attn", r"(?<=blk)\.0", r"attn{,2}", r"\cA",
                                     r"a{1,2}+"])
def test_python_only_regex_is_rejected(pattern):
    with pytest.raises(PrismError):
        patterns.TensorTypeRule.make(pattern, "Q8_0")


def test_tensor_type_parsing():
    r = patterns.TensorTypeRule.parse("ATTN_V=q4_K")
    assert (r.pattern, r.qtype.name) == ("attn_v", "Q4_K")
    for bad in ("attn_v", "=q4_k", "attn_v="):
        with pytest.raises(PrismError):
            patterns.TensorTypeRule.parse(bad)
    with pytest.raises(PrismError):
        patterns.TensorTypeRule.parse("attn_v=q9_z")


def test_ftype_names():
    assert ftypes.get_ftype("q4_k").name == "Q4_K_M" and ftypes.get_ftype(15).name == "Q4_K_M"
    with pytest.raises(PrismError):
        ftypes.get_ftype("Q7_K")


# -- against llama-quantize --dry-run --------------------------------------------------------------

K_MIXES = ["Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
           "IQ3_XXS", "IQ3_XS", "IQ3_M", "IQ2_XXS", "IQ2_M", "IQ4_XS"]
FTYPE_CASES = ([(v, f) for v in ("dense", "tied", "moe", "hybrid") for f in ftypes.FTYPES]
               + [(v, f) for v in ("mha", "falcon", "ple") for f in K_MIXES])


def _compare(bin_, path, opts, imatrix=None):
    model = Model(path)
    try:
        mine = {d.name: d.target.name for d in decide(model.tensors, model.hparams, opts)}
    except PrismError as e:
        with pytest.raises(PrismError):
            dry_run(bin_, QuantizeCommand.of(opts, path, imatrix=imatrix))
        return str(e)
    got = dry_run(bin_, QuantizeCommand.of(opts, path, imatrix=imatrix))
    assert set(got.types) == set(mine)
    diff = {n: (got.types[n], mine[n]) for n in mine if got.types[n] != mine[n]}
    assert not diff, f"llama-quantize vs prism (first 5): {list(diff.items())[:5]}"
    return None


@pytest.mark.parametrize("variant,ftype", FTYPE_CASES)
def test_ftypes_match_llama_quantize(llama_quantize_bin, synthetic, variant, ftype):
    path = synthetic(variant, synth.VARIANTS[variant])
    _compare(llama_quantize_bin, path, QuantizeOptions(ftype))


@pytest.mark.parametrize("ftype", list(ftypes.FTYPES))
def test_ftypes_match_llama_quantize_smollm2(llama_quantize_bin, smollm2_path, ftype):
    _compare(llama_quantize_bin, smollm2_path, QuantizeOptions(ftype))


@pytest.mark.parametrize("ftype", ["Q2_K", "Q3_K_M", "Q4_K_M", "IQ2_XXS"])
def test_70b_rule_matches_llama_quantize(llama_quantize_bin, synthetic, ftype):
    spec = synth.Spec(n_layer=80, layer_names=("attn_v", "ffn_down"), n_vocab=256)
    _compare(llama_quantize_bin, synthetic("seventy", spec), QuantizeOptions(ftype))


FLAG_CASES = [
    ("dense", "Q4_K_M", dict(pure=True)),
    ("dense", "Q3_K_M", dict(tensor_types=["attn_v=q8_0", "ffn_down=q5_k"])),
    ("dense", "Q4_K_M", dict(tensor_types=[r"blk\.[0-3]\.ffn_down=q8_0"])),
    ("dense", "Q4_K_M", dict(tensor_types=[r"BLK\.\D+\.ATTN_K=Q5_0", "attn=q4_0"])),
    ("dense", "Q3_K_M", dict(tensor_types=[r"^blk\.(1|3|5)\.attn_(q|k)\.weight$=iq4_nl", "[^]=q6_K"])),
    ("dense", "Q4_K_M", dict(tensor_types=[r"a[]=q8_0", r"ffn_(up|gate)=q5_k"])),
    ("dense", "Q4_K_M", dict(tensor_types=[r"blk\.1\.\Attn_q=q8_0", r"at++n_k=q5_0", r"f*+n_up=q6_k"])),
    ("dense", "Q4_K_M", dict(token_embedding_type="q4_K", output_tensor_type="q5_K")),
    ("dense", "Q4_K_M", dict(leave_output_tensor=True)),
    ("dense", "F16", dict(tensor_types=["attn_v=q8_0"], token_embedding_type="q8_0")),
    ("dense", "Q5_K_M", dict(pure=True, tensor_types=["output=q8_0"])),
    ("tied", "Q4_K_M", dict(output_tensor_type="q5_K")),
    ("tied", "Q4_K_M", dict(token_embedding_type="q8_0")),
    ("tied", "Q4_K_M", dict(tensor_types=["ffn_down=q4_k"])),
    ("tied", "Q3_K_M", dict(tensor_types=["token_embd=q4_k"])),
    ("ple", "Q4_K_M", dict(token_embedding_type="q4_K", tensor_types=["per_layer_token_embd=q8_0"])),
    ("ple", "Q4_K_M", dict(token_embedding_type="q4_K")),
    ("hybrid", "Q3_K_M", dict(tensor_types=["attn_q=q6_k"])),
    ("moe", "Q4_K_M", dict(tensor_types=["exps=q2_k", "shexp=q8_0"])),
]


@pytest.mark.parametrize("variant,ftype,kw", FLAG_CASES)
def test_flags_match_llama_quantize(llama_quantize_bin, synthetic, variant, ftype, kw):
    path = synthetic(variant, synth.VARIANTS[variant])
    _compare(llama_quantize_bin, path, QuantizeOptions.build(ftype, **kw))


@pytest.mark.parametrize("variant,ftype", [("dense", "Q4_0"), ("dense", "Q5_0"), ("dense", "IQ4_XS"),
                                           ("dense", "IQ3_XXS"), ("mha", "IQ3_XXS"), ("mha", "IQ4_NL"),
                                           ("dense", "Q2_K_S")])
def test_imatrix_rules_match_llama_quantize(llama_quantize_bin, synthetic, tmp_path, variant, ftype):
    spec = synth.VARIANTS[variant]
    path = synthetic(variant, spec)
    imat = tmp_path / "imatrix.gguf"
    synth.write_imatrix(imat, spec)
    _compare(llama_quantize_bin, path, QuantizeOptions(ftype, imatrix=True), imatrix=imat)
