"""`prism-native check-recipe`: the report, every flag it raises, its argument forms and errors, and
its types and sizes against `llama-quantize --dry-run` when the binary is available."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism_native.cli import main
from prism_native.llama.command import QuantizeCommand
from prism_native.llama.decide import decide
from prism_native.llama.options import QuantizeOptions
from prism_native.llama.sizes import estimate_decisions
from prism_native.read.model import Model
from prism_native.tools.quantize_log import dry_run
from support import synth

# attn_q next to attn_qkv, attn_output next to output, 12 layers (blk.1 is a prefix of blk.10/11)
PITFALLS = synth.Spec(n_layer=12, layer_names=("attn_q", "attn_qkv", "attn_output", "ffn_down", "ssm_beta"))


def _check(capsys, *argv: str) -> dict:
    assert main(["check-recipe", *argv[:argv.index("--")], "--json", *argv[argv.index("--"):]]) == 0
    return json.loads(capsys.readouterr().out)


def _problems(rep: dict, kind: str) -> list[dict]:
    return [p for p in rep["problems"] if p["kind"] == kind]


def test_types_and_size_follow_rules_and_sizes(synthetic, capsys):
    path = synthetic("dense", synth.VARIANTS["dense"])
    rep = _check(capsys, str(path), "--", "--tensor-type", r"^blk\.[0-3]\.ffn_down\.weight$=q8_0", "Q4_K_M")
    model = Model(path)
    ds = decide(model.tensors, model.hparams,
                QuantizeOptions.build("Q4_K_M", tensor_types=[r"^blk\.[0-3]\.ffn_down\.weight$=q8_0"]))
    assert {t["name"]: t["type"] for t in rep["tensors"]} == {d.name: d.target.name for d in ds}
    assert rep["size"]["file_bytes"] == estimate_decisions(model, ds).file_bytes
    assert rep["problems"] == []
    down = next(c for c in rep["classes"] if c["class"] == "ffn_down")
    assert down["types"] == {"Q4_K": 7, "Q6_K": 5, "Q8_0": 4}
    assert down["layers_by_type"]["Q6_K"] == [4, 5, 8, 11, 14]         # the mix counts from blk.4 as 0
    assert down["layers_by_type"]["Q8_0"] == [0, 1, 2, 3]
    assert down["set_by"]["mix"] == 12


def test_pattern_pitfalls_are_flagged(synthetic, capsys):
    path = synthetic("pitfalls", PITFALLS)
    rep = _check(capsys, str(path), "--", "--tensor-type", "attn_q=q6_k", "--tensor-type", r"blk\.1=q8_0",
                 "--tensor-type", r"^blk\.1\.ssm_beta\.weight$=q4_0", "--tensor-type", "nope=q8_0",
                 "--tensor-type", "SSM_BETA=q5_k", "--tensor-type", "output=q5_0", "Q4_K_M")
    other = {p["pattern"]: p for p in _problems(rep, "other-class")}
    assert sorted(other) == [0, 5]
    assert set(other[0]["tensors"]) == {f"blk.{i}.attn_qkv.weight" for i in range(12)}
    assert r"'^blk\.[0-9]+\.attn_q\.weight$'" in other[0]["message"]
    assert "meant for output, also catches 9 attn_output" in other[5]["message"]   # blk.1, 10, 11 go to #1
    [unanchored] = _problems(rep, "unanchored")
    assert unanchored["pattern"] == 1
    assert {n.split(".")[1] for n in unanchored["tensors"]} == {"10", "11"}
    assert [p["pattern"] for p in _problems(rep, "shadowed")] == [2]
    assert "taken by #1" in _problems(rep, "shadowed")[0]["message"]
    assert [p["pattern"] for p in _problems(rep, "unused")] == [3]
    assert [p["pattern"] for p in _problems(rep, "lowercased")] == [4]
    got = {t["name"]: t for t in rep["tensors"]}
    assert got["blk.1.attn_qkv.weight"]["type"] == "Q6_K"            # attn_q comes first
    assert got["blk.1.attn_q.weight"]["set_by"] == "--tensor-type #0 attn_q=Q6_K"
    assert got["blk.10.ssm_beta.weight"]["type"] == "Q8_0"
    assert main(["check-recipe", str(path), "--", "--tensor-type", "attn_q=q6_k", "Q4_K_M"]) == 0
    out = capsys.readouterr().out
    assert "problems  1 warning" in out and "meant for attn_q, also catches 12 attn_qkv" in out


def test_pattern_matching_only_inside_names(synthetic, capsys):
    path = synthetic("tied", synth.VARIANTS["tied"])              # no output.weight
    rep = _check(capsys, str(path), "--", "--tensor-type", "output=q8_0", "Q4_K_M")
    [p] = _problems(rep, "partial-only")
    assert p["severity"] == "warning" and len(p["tensors"]) == 10
    assert r"'^blk\.[0-9]+\.attn_output\.weight$'" in p["message"]


def test_unused_pattern_says_why(synthetic, capsys):
    path = synthetic("dense", synth.VARIANTS["dense"])
    rep = _check(capsys, str(path), "--", "--token-embedding-type", "q8_0", "--tensor-type", "token_embd=q4_k",
                 "--tensor-type", "norm=q8_0", "Q4_K_M")
    msgs = [p["message"] for p in _problems(rep, "unused")]
    assert "--token-embedding-type" in msgs[0] and "kept: 1-D" in msgs[1]
    rep = _check(capsys, str(path), "--", "--tensor-type", "attn_v=q8_0", "F16")
    assert [p["kind"] for p in rep["problems"]] == ["ignored-patterns"]


def test_dedicated_flag_misfit_is_an_error_and_blocks_the_size(synthetic, capsys):
    path = synthetic("tied", synth.VARIANTS["tied"])              # rows of 320
    rep = _check(capsys, str(path), "--", "--token-embedding-type", "q4_k", "Q4_K_M")
    [p] = _problems(rep, "dedicated-misfit")
    assert p["severity"] == "error" and p["tensors"] == ["token_embd.weight"] and "give Q5_0" in p["message"]
    assert rep["size"] is None and "token_embd.weight" in rep["size_unavailable_because"]
    # through the mix (tied: --output-tensor-type) the fallback runs, nothing to flag
    rep = _check(capsys, str(path), "--", "--output-tensor-type", "q4_k", "Q4_K_M")
    assert not _problems(rep, "dedicated-misfit") and rep["size"] is not None
    assert {t["name"]: t["type"] for t in rep["tensors"]}["token_embd.weight"] == "Q5_0"


def test_refusals_imatrix_and_requantize(synthetic, capsys, tmp_path):
    spec = synth.Spec(n_layer=4, dtype="Q8_0")
    path = synthetic("q8", spec)
    rep = _check(capsys, str(path), "--", "IQ2_XXS")
    kinds = {p["kind"] for p in rep["problems"] if p["severity"] == "error"}
    assert kinds == {"needs-imatrix", "needs-requantize"}
    imat = tmp_path / "imatrix.gguf"
    synth.write_imatrix(imat, spec)
    rep = _check(capsys, str(path), "--", "--allow-requantize", "--imatrix", str(imat), "IQ2_XXS")
    assert not [p for p in rep["problems"] if p["severity"] == "error"]
    assert any("--imatrix" in n for n in rep["notes"])


def test_argument_forms(synthetic, capsys):
    path = str(synthetic("dense", synth.VARIANTS["dense"]))
    forms = [[path, "--", "Q4_K_M"],                                           # ftype only
             ["--", "llama-quantize", "--pure", path, "out.gguf", "Q4_K_M", "4"],  # the input from the command
             [path, "--", "./llama-quantize", path, "Q4_K_M"]]
    reps = [_check(capsys, *f) for f in forms]
    assert reps[0]["file"] == reps[1]["file"] == reps[2]["file"]
    assert reps[1]["options"]["pure"]
    assert {c["class"]: c["types"] for c in reps[1]["classes"]}["ffn_down"] == {"Q4_K": 16}
    assert main(["check-recipe", path, "--", "--tensor-type", r"ffn_down=q5_k", "other.gguf", "Q4_K_M"]) == 0
    out = capsys.readouterr().out
    assert "the command's input model is other.gguf" in out and "ffn_down" in out and "problems  none" in out


def test_example(smollm2_path, capsys):
    assert main(["check-recipe", "--example", "--", "Q4_K_M"]) == 0
    out = capsys.readouterr().out
    assert "SmolLM2" in out and "Q4_K->Q5_0" in out and "--allow-requantize" in out and "quant size 98.87 MiB" in out


@pytest.mark.parametrize("argv, msg", [
    ([], "after '--'"),
    (["m.gguf"], "after '--'"),
    (["{model}", "--"], "no llama-quantize arguments"),
    (["{model}", "--", "Q9_K"], "invalid ftype 'Q9_K'"),
    (["{model}", "--", "in.gguf", "out.gguf", "Q9_K"], "invalid ftype"),
    (["{model}", "--", "--pure"], "at least an input model"),
    (["{model}", "--example", "--", "Q4_K_M"], "not both"),
    (["--", "Q4_K_M"], "no model"),
    (["{model}", "extra", "--", "Q4_K_M"], "unexpected argument 'extra'"),
    (["/nonexistent/m.gguf", "--", "Q4_K_M"], "m.gguf"),
    (["{model}", "--", "--prune-layers", "1", "Q4_K_M"], "prune-layers"),
    (["{model}", "--", "--tensor-type", "ffn_(=q4_k", "Q4_K_M"], "not a valid regex"),
    (["{model}", "--", "--tensor-type", "(?i)ffn=q4_k", "Q4_K_M"], "not ECMAScript"),
    (["{model}", "--", "--tensor-type-file", "/nonexistent/types.txt", "Q4_K_M"], "tensor type file not found"),
    (["{model}", "--", "--token-embedding-type", "q9_k", "Q4_K_M"], "unknown quant type"),
])
def test_bad_input_is_one_line_exit_2(synthetic, capsys, argv, msg):
    path = str(synthetic("dense", synth.VARIANTS["dense"]))
    assert main(["check-recipe", *[a.replace("{model}", path) for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


# -- against llama-quantize --dry-run --------------------------------------------------------------

DRY_RUN_CASES = [
    ("dense", ["Q4_K_M"]),
    ("dense", ["--tensor-type", "attn=q5_0", "--tensor-type", r"blk\.1=q8_0", "--output-tensor-type", "q5_K",
               "Q3_K_M"]),
    ("tied", ["--output-tensor-type", "q4_k", "--tensor-type", "ffn_down=q6_k", "Q4_K_M"]),
    ("pitfalls", ["--tensor-type", "attn_q=q6_k", "--tensor-type", "output=q5_0", "--pure", "Q4_0"]),
    ("moe", ["--tensor-type", "exps=q2_k", "IQ3_M"]),
    ("ple", ["--token-embedding-type", "q8_0", "--tensor-type", "per_layer_token_embd=q4_k", "Q5_K_M"]),
    ("smollm2", ["--allow-requantize", "--tensor-type", r"^blk\.(0|1)\.ffn_down\.weight$=q8_0", "Q3_K_M"]),
    ("smollm2", ["--allow-requantize", "--leave-output-tensor", "--tensor-type", "ATTN_K=q4_0", "IQ4_NL"]),
    ("dense", ["TQ1_0"]),
    ("tied", ["Q2_0"]),
    ("hybrid", ["--tensor-type", "ffn_down=nvfp4", "--tensor-type", "attn_v=q1_0", "TQ2_0"]),
    ("moe", ["MXFP4_MOE"]),
    ("smollm2", ["--allow-requantize", "Q2_0"]),
]


@pytest.mark.parametrize("variant, args", DRY_RUN_CASES)
def test_matches_llama_quantize_dry_run(llama_quantize_bin, synthetic, request, capsys, variant, args):
    if variant == "smollm2":
        path = request.getfixturevalue("smollm2_path")
    else:
        path = synthetic(variant, PITFALLS if variant == "pitfalls" else synth.VARIANTS[variant])
    rep = _check(capsys, str(path), "--", *args)
    dry = dry_run(llama_quantize_bin, QuantizeCommand.parse([*args[:-1], str(path), args[-1]]))
    assert dry.types == {t["name"]: t["type"] for t in rep["tensors"]}
    assert f"{rep['size']['quant_mib']:.2f}" == f"{dry.quant_mib:.2f}"
    assert f"{rep['size']['bpw']:.2f}" == f"{dry.bpw:.2f}"


def test_a_command_as_shell_text():
    """A model card's recipe: comments and line continuations, then parsed as llama-quantize's argv."""
    from prism_native.errors import PrismError
    cmd = QuantizeCommand.parse_shell("# card\n./llama-quantize --tensor-type attn_v=q8_0 \\\n  in.gguf out.gguf Q4_K_M 8\n",
                                      "card.sh")
    assert (cmd.model_in, cmd.model_out, cmd.ftype, cmd.nthreads) == ("in.gguf", "out.gguf", "Q4_K_M", 8)
    assert QuantizeCommand.parse_shell("Q4_K_M", "t", input_optional=True).model_in == ""
    for text, msg in (("# nothing\n", "card.sh holds no command"), ("'open", "card.sh is not a shell command line")):
        with pytest.raises(PrismError, match=msg):
            QuantizeCommand.parse_shell(text, "card.sh")


CARD_RECIPES = Path(__file__).resolve().parents[2] / "docs" / "results" / "zoo"


def _card(name: str) -> list[str]:
    """The PRISM-DQ card's recipe (docs/results/zoo/recipe-card-NAME.sh) as llama-quantize's argv, no paths."""
    cmd = QuantizeCommand.parse_shell((CARD_RECIPES / f"recipe-card-{name}.sh").read_text(), name)
    return [a for r in cmd.overrides() for a in ("--tensor-type", r.arg)] + [cmd.ftype]


def test_card_recipes_as_written_lose_rules_that_as_meant_keep(synthetic, capsys):
    """The card's 0.8B recipe puts its two blk.N overrides after the class rules that take those tensors
    first; the 2B recipe's attn_q= claims attn_qkv before attn_qkv= can. check-recipe says so, and the
    reordered ("meant") versions apply them."""
    path = str(synthetic("hybrid", synth.VARIANTS["hybrid"]))
    written = _check(capsys, path, "--", *_card("0.8b"))
    shadowed = " ".join(p["message"] for p in _problems(written, "shadowed"))
    assert r"blk\.(4)\.ssm_beta=Q4_K" in shadowed
    types = {t["name"]: t["type"] for t in written["tensors"]}
    assert types["blk.4.ssm_beta.weight"] != "Q4_K"
    meant = {t["name"]: t["type"] for t in _check(capsys, path, "--", *_card("0.8b-meant"))["tensors"]}
    assert meant["blk.4.ssm_beta.weight"] == "Q4_K"
    qkv = [n for n in types if n.endswith("attn_qkv.weight")]
    w2 = {t["name"]: t["type"] for t in _check(capsys, path, "--", *_card("2b"))["tensors"]}
    m2 = {t["name"]: t["type"] for t in _check(capsys, path, "--", *_card("2b-meant"))["tensors"]}
    assert qkv and all(w2[n] == "Q4_K" and m2[n] == "Q3_K" for n in qkv)


@pytest.mark.parametrize("name", ["0.8b", "2b", "0.8b-meant", "2b-meant"])
def test_card_recipes_match_llama_quantize_dry_run(llama_quantize_bin, synthetic, capsys, name):
    path = synthetic("hybrid", synth.VARIANTS["hybrid"])
    args = _card(name)
    rep = _check(capsys, str(path), "--", *args)
    dry = dry_run(llama_quantize_bin, QuantizeCommand.parse([*args[:-1], str(path), args[-1]]))
    assert dry.types == {t["name"]: t["type"] for t in rep["tensors"]}
