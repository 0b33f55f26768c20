"""`prism-native inspect`: text and JSON reports."""
from __future__ import annotations

import json

from prism_native.cli import main
from support import synth


def test_inspect_text_and_json(synthetic, capsys):
    path = synthetic("tied", synth.VARIANTS["tied"])
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "architecture  llama" in out and "ffn_down" in out and "no: 1-D" in out
    assert "tied embeddings" in out and "rows of 320" in out and "falls back to F16" in out
    assert main(["inspect", str(path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["tied_embeddings"] is True and rep["hparams"]["n_layer"] == 10
    classes = {c["class"]: c for c in rep["classes"]}
    assert classes["ffn_down"]["n_tensors"] == 10 and classes["ffn_down"]["shapes"] == [[200, 320]]
    assert classes["attn_norm"]["quantizable"] is False
    assert classes["attn_norm"]["not_quantized_because"] == ["1-D"]
    assert abs(sum(c["share"] for c in rep["classes"]) - 1) < 1e-9
    assert rep["n_params"] == sum(c["n_params"] for c in rep["classes"])
    assert rep["layers"][0]["layers"] == list(range(10))


def test_inspect_hybrid_and_moe(synthetic, capsys):
    assert main(["inspect", str(synthetic("hybrid", synth.VARIANTS["hybrid"])), "--json"]) == 0
    classes = {c["class"]: c for c in json.loads(capsys.readouterr().out)["classes"]}
    assert classes["ssm_alpha"]["quantizable"] and not classes["ssm_conv1d"]["quantizable"]
    assert classes["ffn_up_shexp"]["role"] == "shared_expert"
    assert main(["inspect", str(synthetic("moe", synth.VARIANTS["moe"])), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "ffn_up_exps" in out and "256 x 256 x 8" in out and "expert router" in out


def test_inspect_example(smollm2_path, capsys):
    assert main(["inspect", "--example"]) == 0
    out = capsys.readouterr().out
    assert "134.52M" in out and "--allow-requantize" in out and "rows of 576" in out


def test_inspect_argument_errors(capsys):
    assert main(["inspect"]) == 2
    assert main(["inspect", "x.gguf", "--example"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
