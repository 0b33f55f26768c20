"""plan: budgets honoured exactly, infeasible budgets named, recipes that llama-quantize applies as planned."""
from __future__ import annotations

import json

import pytest

from prism_native.cli import main
from prism_native.errors import PrismError
from prism_native.plan.budget import Budget, parse_size
from prism_native.plan.planner import make_plan
from support import synth
from support.recipes import run_recipe

SPEC = synth.SMALL_DENSE
TIED = synth.Spec(tied=True, n_embd=320, n_head=5, n_ff=640, n_layer=3, seed=6)
# Qwen3.5-style hybrid names (ssm_alpha/ssm_beta/ssm_out, attn_gate, attn_qkv, shared experts) in BF16
HYBRID = synth.Spec(n_layer=4, dtype="BF16", layer_names=synth.QWEN35_LAYER + ("ffn_up_shexp", "ffn_down_shexp"),
                    seed=9)


def test_parse_size():
    assert parse_size("4.2GiB") == int(4.2 * 2**30)
    assert parse_size("3.5GB") == 3_500_000_000
    assert parse_size("900 MiB") == 900 * 2**20
    with pytest.raises(PrismError):
        parse_size("lots")


@pytest.mark.parametrize("bpw", [2.8, 3.5, 4.25, 5.0, 6.0])
def test_bpw_budget_is_met(analysed, bpw):
    model, a, _ = analysed
    p = make_plan(model, a, Budget("bpw", bpw))
    assert p.size.bpw_quantized <= bpw + 1e-12
    assert set(p.recipe.written) == set(a.tensors)


def test_more_budget_never_more_distortion(analysed):
    model, a, _ = analysed
    d = [make_plan(model, a, Budget("bpw", b)).allocation.total_distortion for b in (3.0, 3.5, 4.0, 5.0, 6.0)]
    assert all(x >= y for x, y in zip(d, d[1:]))


def test_size_budget_is_met(analysed):
    model, a, _ = analysed
    lo = make_plan(model, a, Budget("bpw", 3.0)).size.file_bytes
    hi = make_plan(model, a, Budget("bpw", 6.0)).size.file_bytes
    target = (lo + hi) // 2
    p = make_plan(model, a, Budget("size", target))
    assert p.size.file_bytes <= target
    assert p.size.file_bytes > lo


def test_infeasible_budget_names_range(analysed):
    model, a, _ = analysed
    with pytest.raises(PrismError, match="feasible range"):
        make_plan(model, a, Budget("bpw", 1.0))
    best = make_plan(model, a, Budget("bpw", 9.0))      # above the dearest plan: that plan, and a note
    assert best.notes and "above the most expensive plan" in best.notes[0]
    assert best.allocation.total_bytes == make_plan(model, a, Budget("bpw", 30.0)).allocation.total_bytes


def test_cli_plan_json_and_errors(analysed, capsys):
    model, _, out = analysed
    assert main(["plan", str(model.path), "--from", str(out), "--bpw", "4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["size"]["bpw_quantized"] <= 4 and d["argv"][0] == "llama-quantize"
    assert main(["plan", str(model.path), "--from", str(out), "--bpw", "1.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feasible range" in err[0]
    assert main(["plan", str(model.path), "--from", str(out), "--sweep", "3:4:0.5"]) == 0
    assert capsys.readouterr().out.count("\nllama-quantize ") == 3


@pytest.mark.parametrize("name,spec,budgets", [("plan-dense", SPEC, ("3.3", "4.6")),
                                               ("plan-tied", TIED, ("4.6", "5.6")),
                                               ("plan-hybrid", HYBRID, ("3.9", "5.1"))])
def test_llama_quantize_applies_plan_exactly(llama_quantize_bin, synthetic, tmp_path, name, spec, budgets, capsys):
    path = synthetic(name, spec)
    res = tmp_path / "r.prism.json"
    assert main(["analyze", str(path), "-o", str(res), "-q"]) == 0
    capsys.readouterr()
    for bpw in budgets:
        assert main(["plan", str(path), "--from", str(res), "--bpw", bpw, "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        written, size = run_recipe(llama_quantize_bin, d, tmp_path)
        for t, typ in d["recipe"]["written"].items():
            assert written[t] == typ, t
        assert size == d["size"]["file_bytes"]


def test_smollm2_recipe_applies_exactly(llama_quantize_bin, smollm2_path, tmp_path, capsys):
    res = tmp_path / "smol.prism.json"
    assert main(["analyze", str(smollm2_path), "-o", str(res), "-q", "--sample-values", "16384"]) == 0
    capsys.readouterr()
    assert main(["plan", str(smollm2_path), "--from", str(res), "--size", "80MB", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    written, size = run_recipe(llama_quantize_bin, d, tmp_path)
    assert all(written[t] == typ for t, typ in d["recipe"]["written"].items())
    assert size == d["size"]["file_bytes"] <= 80_000_000


def test_distortion_models(analysed):
    from prism_native.errors import PrismError
    from prism_native.plan.planner import size_exponent
    from prism_native.plan.score import FITTED_BETA
    assert size_exponent("params") == 1.0 and size_exponent("relative") == 0.0 and size_exponent("0.4") == 0.4
    assert size_exponent("fitted") == size_exponent("linear") == FITTED_BETA
    from prism_native.plan.planner import distortion_model
    assert distortion_model("0.7:2.5") == (0.7, 2.5) and distortion_model("linear") == (FITTED_BETA, 0.0)
    for bad in ("1.5", "-0.1", "nope", "0.5:-1", "0.5:inf", "0.5:x", ":1"):
        with pytest.raises(PrismError, match="distortion"):
            size_exponent(bad)
    model, a, _ = analysed
    half = make_plan(model, a, Budget("bpw", 4.0), distortion="0.5").allocation
    one = make_plan(model, a, Budget("bpw", 4.0), distortion="1").allocation
    fitted = make_plan(model, a, Budget("bpw", 4.0), distortion=str(FITTED_BETA)).allocation
    assert fitted.total_distortion == make_plan(model, a, Budget("bpw", 4.0)).allocation.total_distortion
    assert half.total_distortion != one.total_distortion


def test_the_error_cost_prices_every_candidate(analysed):
    """Each tensor's distortion is s * g(e) * n^beta with g = score.error_cost of the distortion's growth:
    FITTED_GROWTH by default, 0 (D proportional to e) for 'linear'; the costs do not depend on it."""
    from prism_native.plan.planner import build_groups, error_growth, size_exponent
    from prism_native.plan.score import FITTED_GROWTH, effective_params, error_cost, fan_out
    model, a, _ = analysed
    make_plan(model, a, Budget("bpw", 4.0))                  # scores the analysis
    assert error_growth("fitted") == error_growth("0.5") == FITTED_GROWTH and error_growth("linear") == 0.0
    types = ["Q2_K", "Q4_K", "Q8_0"]
    fitted, linear = (build_groups(model, a, types, padded=False, distortion=d) for d in ("fitted", "linear"))
    for g, gl in zip(fitted, linear):
        for t, tl in zip(g.tensors, gl.tensors):
            r = a.tensors[t.name]
            n = effective_params(r.cls, r.shape, r.n_params, fan_out(model, r.cls, r.layer)) ** size_exponent("fitted")
            for req in types:
                e = r.rel_error(req)
                assert t.distortion[req] == pytest.approx(r.sensitivity * error_cost(e, FITTED_GROWTH) * n, rel=1e-12)
                assert tl.distortion[req] == pytest.approx(r.sensitivity * e * n, rel=1e-12)
            assert t.cost == tl.cost


def test_large_vocabularies_count_their_active_rows_only():
    """An embedding/output matrix larger than ACTIVE_VOCAB rows prices its distortion as if it had
    ACTIVE_VOCAB of them; every other tensor, and a vocabulary within it, counts all its parameters."""
    from prism_native.plan.score import ACTIVE_VOCAB, effective_params
    d, v = 640, 262144
    assert effective_params("token_embd", [d, v], d * v) == d * ACTIVE_VOCAB
    assert effective_params("output", [d, v], d * v) == d * ACTIVE_VOCAB
    assert effective_params("token_embd", [d, ACTIVE_VOCAB], d * ACTIVE_VOCAB) == d * ACTIVE_VOCAB
    assert effective_params("ffn_up", [d, v], d * v) == d * v                 # not a vocabulary matrix
    assert effective_params("token_embd", None, d * v) == d * v               # older ablation files: no shape
