"""`ablate` recipes and the weight fit: the recipes lower exactly one unit; the fit recovers planted
weights; the end-to-end ablation runs with the real tools (skipped without them)."""
from __future__ import annotations

import json
from pathlib import Path
import math

import numpy as np
import pytest

from prism_native.cli import main
from prism_native.llama.command import QuantizeCommand
from prism_native.llama.decide import TensorSpec
from prism_native.measure.analyze import Settings, analyze
from prism_native.plan.score import STRUCTURAL, Weights, score_analysis
from prism_native.read.model import open_model
from prism_native.research import ablate, fit
from support import synth

SMALL = synth.Spec(n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=1, n_vocab=320, byte_tokenizer=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("abl") / "small.gguf"
    synth.write(path, SMALL)
    model = open_model(path)
    a = analyze(model, Settings(threads=1))
    score_analysis(a, Weights())
    return model, a


@pytest.mark.parametrize("by", ["class", "layer"])
def test_each_recipe_lowers_exactly_its_unit(small, by):
    model, analysis = small
    units = ablate.units(analysis, by)
    assert units and len({n for u in units for n in u.tensors}) == sum(len(u.tensors) for u in units)
    base, todo = ablate.methods(model, analysis, units, ["Q3_K", "Q4_K"], "Q8_0", imatrix=False, requantize=False)
    assert len(todo) == 2 * len(units)
    specs = [TensorSpec.of(t, model.arch) for t in model.tensors]
    for u, low, m in todo:
        sim = QuantizeCommand.parse(["llama-quantize", *m.args]).simulate(specs).by_name()
        for name in analysis.tensors:
            assert sim[name].requested == (low if name in u.tensors else "Q8_0"), (u.name, name)


def test_unknown_unit_and_type(small):
    model, analysis = small
    from prism_native.errors import PrismError
    with pytest.raises(PrismError, match="no class nope"):
        ablate.units(analysis, "class", ["nope"])
    with pytest.raises(PrismError):
        ablate.methods(model, analysis, ablate.units(analysis, "class"), ["Q9_X"], "Q8_0", imatrix=False,
                       requantize=False)


def test_a_type_llama_quantize_would_refuse_is_refused_before_any_file(small):
    """IQ2_XXS needs importance weights (ggml) and an imatrix (llama-quantize's rule): without one, or where the
    analysis measured it unwritable, the run would abort part way; it is one line up front instead."""
    from prism_native.errors import UsageError
    model, analysis = small
    units = ablate.units(analysis, "class", ["attn_q"])
    with pytest.raises(UsageError, match="class attn_q cannot be lowered to IQ2_XXS: .*imatrix"):
        ablate.methods(model, analysis, units, ["Q3_K", "IQ2_XXS"], "Q8_0", imatrix=False, requantize=False)
    r = analysis.tensors[units[0].tensors[0]]
    saved = r.errors.get("IQ2_XXS")
    r.errors["IQ2_XXS"] = {"type": "IQ2_XXS", "rel_error": None, "reason": "ggml needs importance weights"}
    try:
        with pytest.raises(UsageError, match="needs importance weights"):
            ablate.methods(model, analysis, units, ["IQ2_XXS"], "Q8_0", imatrix=True, requantize=False)
    finally:
        if saved is None:
            del r.errors["IQ2_XXS"]
        else:
            r.errors["IQ2_XXS"] = saved


def _planted(seed: int, w: np.ndarray, beta: float, n_units: int = 14) -> dict:
    """An ablation file whose damage follows the model exactly (times a model-specific scale)."""
    rng = np.random.default_rng(seed)
    names = list(Weights().to_json())
    tensors, records = [], []
    for i in range(3 * n_units):
        tensors.append({"name": f"t{i}", "cls": f"c{i % n_units}", "layer": i // n_units,
                        "n_params": int(rng.integers(10_000, 1_000_000)),
                        "metrics": {k: float(rng.normal()) for k in names},
                        "errors": {"Q3_K": {"type": "Q3_K", "rel_error": float(rng.uniform(0.01, 0.05))},
                                   "Q4_K": {"type": "Q4_K", "rel_error": float(rng.uniform(0.002, 0.01))},
                                   "Q8_0": {"type": "Q8_0", "rel_error": 1e-5}}})
    from prism_native.plan.score import combine, metric_records, z_matrix
    z = z_matrix(metric_records(tensors), names)
    n = np.array([t["n_params"] for t in tensors], dtype=np.float64)
    labels = sorted({t["cls"] for t in tensors})
    s = combine(z, w, names, n, np.array([labels.index(t["cls"]) for t in tensors])) * n ** beta
    scale = 10.0 ** rng.uniform(-4, -2)
    for u in range(n_units):                      # units cut across classes, like layers do
        idx = [i for i in range(len(tensors)) if (i // 3) % n_units == u]
        for low in ("Q3_K", "Q4_K"):
            p = sum(s[i] * (tensors[i]["errors"][low]["rel_error"] - 1e-5) for i in idx)
            records.append({"unit": f"class c{u}", "tensors": [f"t{i}" for i in idx], "low": low,
                            "kld": scale * p + 1e-4, "kld_err": 1e-9, "damage": scale * p, "file_bytes": 1, "ppl": 1.0})
    return {"format": ablate.FORMAT, "model": {"name": f"m{seed}"}, "model_name": f"m{seed}", "high": "Q8_0",
            "base": {"kld": 1e-4, "kld_err": 1e-9, "file_bytes": 1}, "records": records, "tensors": tensors}


def _weights(*planted: float) -> np.ndarray:
    """The planted weights of the first metrics, 0 for the rest."""
    return np.array(list(planted) + [0.0] * (len(fit.METRICS) - len(planted)))


def test_fit_recovers_planted_weights_and_scores_held_out(tmp_path, capsys):
    w = _weights(-0.4, 0.2, 0.0, 0.3, 0.0, 0.25, -0.3)     # the structural metrics are all 0 here
    files = []
    for seed in (1, 2):
        p = tmp_path / f"a{seed}.json"
        p.write_text(json.dumps(_planted(seed, w, 0.5)))
        files.append(str(p))
    data = [fit.model_data(ablate.load(f)) for f in files]
    got = fit.fit(data, lam=0.0)
    assert got.rms_log < 1e-3 and abs(got.beta - 0.5) < 0.01
    fitted = [getattr(got.weights, k) for k in fit.METRICS if k not in STRUCTURAL]
    assert np.allclose(fitted, [v for k, v in zip(fit.METRICS, w) if k not in STRUCTURAL], atol=0.01)
    s = fit.score(data[1], fit.fit(data[:1], lam=0.0).weights, 0.5)
    assert s.spearman > 0.999 and s.pairs == 1.0
    assert main(["fit-weights", *files, "--lambda", "0", "--beta", "fit", "--json-out", str(tmp_path / "fit.json")]) == 0
    out = capsys.readouterr().out
    assert "fitted on the other models (held out)" in out
    d = json.loads((tmp_path / "fit.json").read_text())
    assert abs(d["fit"]["beta"] - 0.5) < 0.01 and len(d["scores"]) == 2 * 6


def test_lambda_is_chosen_by_leaving_a_model_out(tmp_path, capsys):
    """Noisy planted damage on three models: the grid's candidates are scored by how well fits on two
    models predict the third, and the CLI reports the figures and the pick."""
    rng = np.random.default_rng(7)
    files = []
    for seed in (4, 5, 6):
        ab = _planted(seed, _weights(-0.4, 0.2, 0.0, 0.3), 0.5)
        for r in ab["records"]:
            r["damage"] *= float(np.exp(rng.normal(0.0, 0.3)))
        p = tmp_path / f"n{seed}.json"
        p.write_text(json.dumps(ab))
        files.append(str(p))
    data = [fit.model_data(ablate.load(f)) for f in files]
    lam, cv = fit.choose_lambda(data, [10.0, 0.01])
    assert set(cv) == {10.0, 0.01} and lam == min(cv, key=cv.get)
    assert cv[lam] == pytest.approx(fit.held_out_rms(data, lam, None, None))
    assert fit.choose_lambda(data[:2], [10.0, 0.01]) == (10.0, {})     # two models: no cross-validation
    assert main(["fit-weights", *files, "--lambda", "10,0.01", "--json-out", str(tmp_path / "f.json")]) == 0
    assert f"-> {lam:g}" in capsys.readouterr().out
    assert json.loads((tmp_path / "f.json").read_text())["lambda"] == lam
    assert main(["fit-weights", *files, "--lambda", "0.1,x"]) == 2
    assert "--lambda wants numbers" in capsys.readouterr().err


def test_fit_leaves_out_noise_and_lossless_records(tmp_path):
    ab = _planted(3, _weights(), 1.0)
    ab["records"][0]["damage"] = 1e-12                              # inside the noise
    for t in ab["records"][1]["tensors"]:                            # lossless: no error increase
        next(x for x in ab["tensors"] if x["name"] == t)["errors"]["Q4_K"]["rel_error"] = 1e-5
    d = fit.model_data(ab)
    assert len(d.dropped) == 2 and len(d.damage) == len(ab["records"]) - 2


def test_bad_ablation_files(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert main(["fit-weights", str(bad)]) == 2
    assert "not an ablation file" in capsys.readouterr().err
    assert main(["fit-weights", str(tmp_path / "missing.json")]) == 2


@pytest.mark.needs_llama_cpp("llama-quantize", "llama-perplexity")
def test_ablate_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "tiny.gguf"
    synth.write(model, SMALL)
    rng = np.random.default_rng(0)
    words = "the a of and to in was he she it that with for as his her had not but on at by".split()
    (tmp_path / "t.txt").write_text(" ".join(rng.choice(words, size=1400)) + "\n")
    argv = ["ablate", str(model), "--text", str(tmp_path / "t.txt"), "--ctx", "64", "--chunks", "4", "-t", "2",
            "-q", "-o", str(tmp_path / "out"), "--only", "ffn_down,attn_v", "--low", "Q2_K"]
    assert main(argv) == 0
    d = ablate.load(tmp_path / "out" / "ablation-class.json")
    assert sorted(r["unit"] for r in d["records"]) == ["class attn_v", "class ffn_down"]
    for r in d["records"]:
        assert r["kld"] >= 0 and math.isclose(r["damage"], r["kld"] - d["base"]["kld"])
    assert len(d["tensors"]) == len(open_model(model).tensors) - sum(1 for t in open_model(model).tensors
                                                                      if len(t.shape) < 2)
    fan = {t["cls"]: t["fan_out"] for t in d["tensors"]}      # SMALL: 4 query heads, 1 KV head
    assert fan["attn_k"] == fan["attn_v"] == 4 and fan["attn_q"] == fan["ffn_down"] == 1


def test_fit_counts_kv_rows_once_per_query_head():
    ab = _planted(0, _weights(), 1.0)
    n0 = ab["tensors"][0]["n_params"]
    ab["tensors"][0]["fan_out"] = 3.0
    n = fit.model_data(ab).n
    assert n[0] == 3 * n0 and n[1] == ab["tensors"][1]["n_params"]      # files without fan_out: 1


def test_shipped_default_weights_are_the_documented_fit():
    """score.Weights' defaults and FITTED_BETA are the fit on the zoo's ablation files in docs/results/zoo,
    with the options docs/metrics.md gives (only the structural terms free, lambda chosen by leave-one-model-out
    cross-validation among fit-weights' default candidates, beta fitted)."""
    from pathlib import Path

    from prism_native.cli.fit import LAMBDA_GRID
    from prism_native.plan.score import FITTED_BETA
    root = Path(__file__).resolve().parents[2] / "docs" / "results" / "zoo"
    files = sorted(root.glob("*-ablation-*.json"))
    assert len(files) == 12
    data = fit.models_from_files(files)
    assert sorted(d.name for d in data) == [f"Hf (austen-{m})" for m in ("llama", "moe", "odd", "qwen3", "qwen35", "smol")]
    free = {"head", "embedding", "first", "linear", "tied"}
    fixed = {k: 0.0 for k in fit.METRICS if k not in free}
    lam, cv = fit.choose_lambda(data, [float(v) for v in LAMBDA_GRID.split(",")], None, fixed)
    assert lam == 0.001 and min(cv.values()) == cv[0.001]
    got = fit.fit(data, lam=lam, beta=None, fixed=fixed)
    for k, v in Weights().to_json().items():
        assert getattr(got.weights, k) == pytest.approx(v, abs=2e-3), k
    assert got.beta == pytest.approx(FITTED_BETA, abs=2e-3)


def _planted_growth(seed: int, growth: float) -> dict:
    """_planted's file with a third low type of large error (Q1_0, e 0.2-0.4) and every record's damage from
    the error cost g(e) = e exp(growth e^2), the shipped weights and beta."""
    from prism_native.plan.score import FITTED_BETA, combine, error_cost, metric_records, z_matrix
    ab = _planted(seed, _weights(), 1.0)
    rng = np.random.default_rng(seed + 100)
    tensors = ab["tensors"]
    for t in tensors:
        t["errors"]["Q1_0"] = {"type": "Q1_0", "rel_error": float(rng.uniform(0.2, 0.4))}
    names = list(Weights().to_json())
    w = np.array([Weights().to_json()[k] for k in names])
    n = np.array([t["n_params"] for t in tensors], dtype=np.float64)
    labels = sorted({t["cls"] for t in tensors})
    s = combine(z_matrix(metric_records(tensors), names), w, names, n,
                np.array([labels.index(t["cls"]) for t in tensors])) * n ** FITTED_BETA
    units = {r["unit"]: r["tensors"] for r in ab["records"]}
    index = {t["name"]: i for i, t in enumerate(tensors)}
    ab["records"] = []
    for unit, members in units.items():
        for low in ("Q4_K", "Q3_K", "Q1_0"):
            p = sum(s[index[m]] * (error_cost(tensors[index[m]]["errors"][low]["rel_error"], growth)
                                   - error_cost(1e-5, growth)) for m in members)
            ab["records"].append({"unit": unit, "tensors": members, "low": low, "kld": 1e-3 * p + 1e-4,
                                  "kld_err": 1e-9, "damage": 1e-3 * p, "file_bytes": 1, "ppl": 1.0})
    return ab


def test_fit_growth_recovers_a_planted_growth_held_out(tmp_path, capsys):
    """Damage planted with g(e) = e exp(8 e^2): the fit finds kappa 8 on every fold, the held-out error
    vanishes where the linear model's does not, and the ratio table grows with the error."""
    files = []
    for seed in (11, 12, 13):
        p = tmp_path / f"g{seed}.json"
        p.write_text(json.dumps(_planted_growth(seed, 8.0)))
        files.append(str(p))
    from prism_native.plan.score import FITTED_BETA
    rep = fit.growth_report(files, Weights(), FITTED_BETA)
    assert rep.growth == pytest.approx(8.0, rel=1e-2)
    for r in rep.rows:
        assert r.growth_without == pytest.approx(8.0, rel=1e-2)
        assert r.rms_held_out < 1e-3 < 0.1 < r.rms_linear
    ratios = fit.damage_per_error(rep.data[0], Weights(), FITTED_BETA)
    assert all(row["Q1_0"] > row["Q3_K"] > row["Q4_K"] for row in ratios.values())
    linear = fit.growth_report(files[:1], Weights(), FITTED_BETA)      # one model: no held-out rows
    assert linear.growth == pytest.approx(8.0, rel=1e-2) and linear.rows == []
    assert main(["fit-growth", *files, "--json-out", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "kappa fitted on all models: 8" in out and "Q4_K (e 0.0" in out and out.index("Q3_K (e") < out.index("Q1_0 (e")
    assert json.loads((tmp_path / "g.json").read_text())["growth"] == rep.growth
    before = Path(files[0]).read_bytes()                # --json-out naming an input: one line, input intact
    for cmd in ("fit-growth", "fit-weights"):
        assert main([cmd, *files, "--json-out", files[0]]) == 2
        assert "input" in capsys.readouterr().err and Path(files[0]).read_bytes() == before


def test_fit_growth_is_zero_on_linear_damage(tmp_path):
    p = tmp_path / "lin.json"
    p.write_text(json.dumps(_planted_growth(14, 0.0)))
    from prism_native.plan.score import FITTED_BETA
    assert fit.growth_report([p], Weights(), FITTED_BETA).growth == 0.0


def test_shipped_growth_is_the_documented_fit():
    """score.FITTED_GROWTH is fit-growth's kappa on the low-type ablations in docs/results/lowbit (the shipped
    weights and beta held), and it leaves the zoo's Q3_K/Q4_K records as the linear model predicts them."""
    from pathlib import Path

    from prism_native.plan.score import FITTED_BETA, FITTED_GROWTH
    root = Path(__file__).resolve().parents[2] / "docs" / "results"
    files = sorted((root / "lowbit").glob("*-ablation-*.json"))
    assert len(files) >= 2
    rep = fit.growth_report(files, Weights(), FITTED_BETA, check=sorted((root / "zoo").glob("*-ablation-class.json")))
    assert rep.growth == pytest.approx(FITTED_GROWTH, abs=0.05)
    assert all(r.rms_held_out < r.rms_linear for r in rep.rows)
    assert all(abs(r.rms_held_out - r.rms_linear) < 0.01 for r in rep.check)
    smol = fit.growth_report(files, Weights(), FITTED_BETA, check=[root / "lowbit" / "check" / "austen-smol-ablation-lowbit.json"])
    assert smol.check[0].rms_held_out < 0.7 * smol.check[0].rms_linear      # a third model, in no fit: 0.890 -> 0.524
