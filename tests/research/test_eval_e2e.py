"""`eval` end to end on a tiny GGUF written here, with the real llama-quantize and llama-perplexity
(skipped unless both are on PATH)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prism_native.cli import main
from support import synth

pytestmark = pytest.mark.needs_llama_cpp("llama-quantize", "llama-perplexity")

# 2 layers of 256 (no K-quant fallbacks), a byte-level vocabulary llama.cpp can tokenize with
TINY = synth.Spec(n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=1, n_vocab=320, byte_tokenizer=True)


def _text(path: Path, n_bytes: int = 4000) -> None:
    rng = np.random.default_rng(0)
    words = "the a of and to in was he she it that with for as his her had not but on at by".split()
    path.write_text(" ".join(rng.choice(words, size=n_bytes // 3))[:n_bytes] + "\n")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # the analysis results file goes to the working directory
    model = tmp_path / "tiny.gguf"
    synth.write(model, TINY)
    _text(tmp_path / "eval.txt")
    return model, tmp_path / "eval.txt", tmp_path / "out"


def _eval(model: Path, text: Path, out: Path, *extra: str) -> int:
    return main(["eval", str(model), "--text", str(text), "--ctx", "64", "--chunks", "4", "-t", "2", "-q",
                 "-o", str(out), *extra])


def test_eval_end_to_end(setup, capsys):
    model, text, out = setup
    args = ("--baselines", "Q3_K_M,Q4_K:pure", "--sizes-of", "Q4_K_M", "--bpw", "4.5,0.5")
    assert _eval(model, text, out, *args) == 0
    md = capsys.readouterr().out
    assert "| Method | Size (MiB) | BPW | PPL | Mean KLD | 99% KLD | Same top |" in md
    d = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in d["rows"]}
    assert set(rows) == {"Q3_K_M", "Q4_K --pure", "Q4_K_M", "prism_native 4.5 bpw", "prism_native size of Q4_K_M"}
    assert d["reference"]["ppl"] > 1 and d["chunks"] == 4 and d["n_ctx"] == 64
    for r in rows.values():
        assert r["kld_mean"] >= 0 and 0 <= r["same_top"] <= 100 and r["kld_p99"] >= r["kld_median"]
        assert r["file_bytes"] < model.stat().st_size
    for name in ("prism_native 4.5 bpw", "prism_native size of Q4_K_M"):
        assert rows[name]["predicted_bytes"] == rows[name]["file_bytes"]     # sizes.py is exact
    assert rows["prism_native size of Q4_K_M"]["file_bytes"] <= rows["Q4_K_M"]["file_bytes"]
    assert d["best_fit"]["prism_native size of Q4_K_M"] == "Q4_K_M"
    assert any("0.5 bpw" in s for s in d["skipped"])
    assert (out / "results.csv").exists() and (out / "results.md").exists()
    cache = out / "cache"
    assert not list(cache.glob("*.gguf")) and not list(cache.glob("*.kld"))   # no --keep: nothing large left

    # a rerun measures nothing again; one new baseline is the only new work
    logs = {p.name: p.stat().st_mtime_ns for p in (cache / "logs").iterdir()}
    assert _eval(model, text, out, *args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "logs").iterdir()} == logs
    assert _eval(model, text, out, "--baselines", "Q6_K", "--keep") == 0
    new = {p.name for p in (cache / "logs").iterdir()} - set(logs)
    assert len([n for n in new if n.endswith(".quantize.log")]) == 1
    assert len(list(cache.glob("*.gguf"))) == 1 and len(list(cache.glob("base-*.kld"))) == 1


def test_eval_a_users_recipe_and_a_plan_of_its_size(setup):
    model, text, out = setup
    card = model.parent / "card.sh"
    card.write_text("llama-quantize --tensor-type 'ffn_down=q8_0' in.gguf out.gguf Q3_K_M\n")
    assert _eval(model, text, out, "--baselines", "", "--recipe", f"card={card}", "--sizes-of", "card") == 0
    d = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in d["rows"]}
    assert set(rows) == {"card", "prism_native size of card"}
    assert rows["card"]["series"] == "recipe" and "ffn_down=Q8_0" in rows["card"]["quantize_args"]
    assert rows["prism_native size of card"]["file_bytes"] <= rows["card"]["file_bytes"]
    assert d["best_fit"]["prism_native size of card"] == "card"


def test_missing_tools_are_reported(setup, monkeypatch, capsys):
    model, text, out = setup
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("PRISM_LLAMA_QUANTIZE", raising=False)
    assert _eval(model, text, out) == 2
    assert "llama-quantize not found on PATH" in capsys.readouterr().err
