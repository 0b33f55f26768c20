"""Plans below 3 bpw: llama-quantize's imatrix rule in the planner, low budgets without an imatrix, the
sweep down to them, and `quantize` refusing the very-low-bit types without an imatrix as llama-quantize does.

Everything is keyed off the type table: the types the rule covers are those llama.mix.requires_imatrix
names for a layer tensor, whichever of them prism_native implements."""
from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from support import synth

from prism_native import qtypes
from prism_native.cli import main
from prism_native.llama.mix import planned_requires_imatrix
from prism_native.measure.quant_error import CANDIDATES, measure_errors
from prism_native.plan.planner import build_groups

SPEC = synth.SMALL_DENSE
HYBRID = synth.Spec(n_layer=4, dtype="BF16", layer_names=synth.QWEN35_LAYER + ("ffn_up_shexp", "ffn_down_shexp"),
                    seed=9)
MOE = synth.VARIANTS["moe"]
LAYER = "blk.0.ffn_down.weight"
# every type llama-quantize writes on a layer tensor only with an imatrix (IQ3_XXS, IQ2_*, IQ1_*)
IMATRIX_ONLY = [t for t in qtypes.all_types() if planned_requires_imatrix(LAYER, t)]


def test_the_rule_covers_llama_quantizes_types():
    assert set(IMATRIX_ONLY) == {"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"}
    assert planned_requires_imatrix("token_embd.weight", "IQ2_XXS") is None
    assert planned_requires_imatrix("output.weight", "IQ1_S") is None
    assert planned_requires_imatrix(LAYER, "Q2_K") is None        # a plan's ftype is never Q2_K_S
    assert all(planned_requires_imatrix(LAYER, t) is None for t in CANDIDATES if t not in IMATRIX_ONLY)


def _with_imatrix_only_types(a):
    """The analysis with made-up, tiny errors for the imatrix-only types on every tensor: the allocator
    would take them everywhere if it could."""
    b = replace(a, tensors={n: replace(r, errors=dict(r.errors)) for n, r in a.tensors.items()})
    for r in b.tensors.values():
        for t in IMATRIX_ONLY:
            r.errors[t] = {"type": t, "rel_error": 1e-6}
    return b


def test_planner_never_picks_imatrix_types_without_an_imatrix(analysed):
    model, a, _ = analysed
    types = list(CANDIDATES) + [t for t in IMATRIX_ONLY if t not in CANDIDATES]
    groups = build_groups(model, _with_imatrix_only_types(a), types, padded=False)
    for g in groups:
        allowed = set(g.candidates) & set(IMATRIX_ONLY)
        if g.name in ("token_embd", "output"):
            assert allowed == set(IMATRIX_ONLY), g.name
        else:
            assert not allowed, (g.name, allowed)
    with_im = _with_imatrix_only_types(replace(a, imatrix={"path": "imatrix.gguf"}))
    for g in build_groups(model, with_im, types, padded=False):
        assert set(IMATRIX_ONLY) <= set(g.candidates), g.name


def test_imatrix_types_alone_without_an_imatrix_is_one_line(analysed):
    model, a, _ = analysed
    with pytest.raises(Exception, match="only with an imatrix"):
        build_groups(model, _with_imatrix_only_types(a), IMATRIX_ONLY, padded=False)


def test_types_that_cannot_be_written_get_a_reason():
    """Rows of 288: Q1_0 and NVFP4 (blocks of 128 and 64) have no fallback, Q2_0 falls back to Q4_0; a
    refused type is not measured."""
    x = np.random.default_rng(0).normal(0, 0.02, (8, 288)).astype(np.float32)
    m = measure_errors(x, False, where="t", n_mat=1, candidates=["Q1_0", "NVFP4", "Q2_0", "MXFP4", "TQ1_0"],
                       weights=None, sample_values=0, seed=0, delta=0.1, threads=1,
                       refused={"TQ1_0": "not for this tensor"})
    for t in ("Q1_0", "NVFP4"):
        assert m.errors[t]["rel_error"] is None and "no fallback" in m.errors[t]["reason"], t
    assert m.errors["TQ1_0"] == {"type": "TQ1_0", "rel_error": None, "reason": "not for this tensor"}
    assert m.errors["Q2_0"]["type"] == "Q4_0" and m.errors["Q2_0"]["rel_error"] > 0   # llama's fallback
    assert m.errors["MXFP4"]["type"] == "MXFP4" and m.errors["MXFP4"]["rel_error"] > 0


def test_low_budget_and_sweep_without_imatrix(analysed, capsys):
    model, _, out = analysed
    assert main(["plan", str(model.path), "--from", str(out), "--bpw", "2.6", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["size"]["bpw_quantized"] <= 2.6
    assert all(planned_requires_imatrix(n, t) is None for n, t in d["recipe"]["written"].items())   # llama-quantize's rule
    assert main(["plan", str(model.path), "--from", str(out), "--sweep", "1.8:4.0:0.2", "--json"]) == 0
    curve = json.loads(capsys.readouterr().out)
    assert len(curve) == 12
    bpw = [p["size"]["bpw_quantized"] for p in curve]
    dist = [p["total_distortion"] for p in curve]
    assert all(b <= 1.8 + 0.2 * i + 1e-9 for i, b in enumerate(bpw))
    assert all(x >= y for x, y in zip(dist, dist[1:]))


def test_sweep_skips_infeasible_budgets(analysed, capsys):
    model, _, out = analysed
    assert main(["plan", str(model.path), "--from", str(out), "--sweep", "0.5:2.5:1.0", "--json"]) == 0
    cap = capsys.readouterr()
    assert len(json.loads(cap.out)) == 2 and cap.err.count("# skipped:") == 1
    assert main(["plan", str(model.path), "--from", str(out), "--sweep", "0.2:0.8:0.2"]) == 2


@pytest.mark.parametrize("name,spec,bpw", [("dense", SPEC, "2.6"), ("hybrid", HYBRID, "2.6"), ("moe", MOE, "2.3")])
def test_low_bit_plan_written_as_llama_quantize_writes_it(llama_quantize_bin, synthetic, tmp_path, capsys,
                                                          monkeypatch, name, spec, bpw):
    """quantize --bpw below 3 without an imatrix: the file of the plan's own llama-quantize command."""
    monkeypatch.chdir(tmp_path)
    src = synthetic(f"low-bit-{name}", spec)
    assert main(["quantize", str(src), "--bpw", bpw, "-o", "ours.gguf", "-q"]) == 0
    capsys.readouterr()
    assert main(["plan", str(src), "--bpw", bpw, "--json", "-q"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(set(plan["recipe"]["written"].values())) >= 2         # a mix
    argv = list(plan["argv"])
    argv[0], argv[-2] = str(llama_quantize_bin), str(tmp_path / "ref.gguf")
    subprocess.run(argv, check=True, capture_output=True)
    assert (tmp_path / "ref.gguf").read_bytes() == (tmp_path / "ours.gguf").read_bytes()
    assert (tmp_path / "ours.gguf").stat().st_size == plan["size"]["file_bytes"]


@pytest.mark.parametrize("args", [["--tensor-type", "ffn_down=iq2_xxs", "Q4_K_M"], ["IQ3_XXS"], ["IQ1_M"]])
def test_quantize_refuses_imatrix_types_without_one(synthetic, tmp_path, capsys, args):
    src = synthetic("plan-dense", SPEC)
    out = tmp_path / "out.gguf"
    assert main(["quantize", str(src), "-o", str(out), "-q", "--", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "requires an importance matrix" in err[0] and "blk." in err[0], err
    assert not out.exists()


def test_inspect_and_analyze_a_low_bit_file(synthetic, tmp_path, capsys):
    """A file of low-bit types (Q2_0 among them, which the gguf package does not know) is read through
    prism_native's own reader: inspected, and analyzed from its dequantized values."""
    src = synthetic("plan-dense", SPEC)
    q = tmp_path / "q.gguf"
    assert main(["quantize", str(src), "-o", str(q), "-q", "--", "--tensor-type", "ffn_down=nvfp4",
                 "--tensor-type", "attn_q=q1_0", "--tensor-type", "attn_k=mxfp4", "Q2_0"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(q)]) == 0
    out = capsys.readouterr().out
    assert all(t in out for t in ("Q2_0", "Q1_0", "NVFP4", "MXFP4"))
    assert main(["analyze", str(q), "-o", str(tmp_path / "q.prism.json"), "-q"]) == 0
    d = json.loads((tmp_path / "q.prism.json").read_text())
    assert {r["source_type"] for r in d["tensors"].values()} >= {"Q2_0", "Q1_0", "NVFP4", "MXFP4"}


@pytest.mark.parametrize("t", sorted(q.name for q in qtypes.all_types().values() if q.needs_imatrix))
def test_quantize_refuses_ggml_imatrix_types_on_the_embeddings_without_one(synthetic, tmp_path, capsys, t):
    """token_embd may take any type without --imatrix by llama-quantize's rule, but ggml_quantize_chunk
    asserts importance weights for IQ2_XXS, IQ2_XS and IQ1_S (llama-quantize aborts): one line."""
    src = synthetic("plan-dense", SPEC)
    out = tmp_path / "out.gguf"
    assert main(["quantize", str(src), "-o", str(out), "-q", "--", "--token-embedding-type", t.lower(), "Q4_K_M"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "token_embd.weight" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["quantize", "check-recipe"])
def test_rows_no_type_or_fallback_fits_are_one_line(synthetic, tmp_path, capsys, cmd):
    """Rows of 320 with Q1_0 (blocks of 128, no fallback): llama-quantize throws; so do we, in one line."""
    src = synthetic("tied", synth.VARIANTS["tied"])
    out = tmp_path / "out.gguf"
    args = [cmd, str(src)] + (["-o", str(out), "-q"] if cmd == "quantize" else []) + ["--", "Q1_0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no fallback" in err[0] and "320" in err[0], err
    assert not out.exists()


def test_rows_no_type_fits_are_no_overflow_warning(smollm2_path, tmp_path, capsys, monkeypatch):
    """SmolLM2's 576-wide rows fit neither Q1_0 nor NVFP4: a reason in the results, not the overflow warning;
    and its plans now go below 3 bpw without an imatrix (Q2_0 fits rows of 576)."""
    monkeypatch.chdir(tmp_path)   # (the analysis is saved in the working directory)
    assert main(["plan", str(smollm2_path), "--bpw", "2.6", "--sample-values", "16384", "--json"]) == 0
    cap = capsys.readouterr()
    assert "overflow" not in cap.err
    assert json.loads(cap.out)["size"]["bpw_quantized"] <= 2.6
