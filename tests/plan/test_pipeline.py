"""pipeline: the library's entry points make what the command line makes; make_plan needs no prior step;
the typed records read and write the results file's JSON unchanged."""
from __future__ import annotations

import json
import math

import pytest

from prism_native.measure.analyze import Settings, analyze
from prism_native.measure.results import Analysis, ModelIdentity
from prism_native.pipeline import AnalysisRequest, job_for_budget, quantize_model, reuse_analysis
from prism_native.plan.budget import Budget
from prism_native.plan.planner import make_plan
from prism_native.read.imatrix import ImatrixIdentity, load_imatrix, write_dat
from prism_native.read.model import open_model
from support import synth


def test_records_keep_the_results_file_format(analysed):
    model, a, out = analysed
    raw = json.loads(out.read_text())
    again = Analysis.load(out)
    assert again.model == ModelIdentity.of(model) and again.model.to_json() == raw["model"]
    assert list(again.to_json()["model"]) == list(raw["model"])     # key order too
    assert again.to_json()["imatrix"] is None


def test_imatrix_identity_round_trips(tmp_path):
    p = tmp_path / "im.dat"
    write_dat(p, {"blk.0.attn_q.weight": (__import__("numpy").ones(8, "f4"), 2)}, chunk_count=3, dataset="t.txt")
    ident = load_imatrix(p).identity()
    d = ident.to_json()
    assert list(d) == ["path", "format", "entries", "datasets", "chunk_count", "chunk_size"]
    assert d["datasets"] == ["t.txt"] and ImatrixIdentity.from_json(json.loads(json.dumps(d))) == ident


def test_make_plan_scores_and_counts_metadata_itself(synthetic, tmp_path):
    """An unscored analysis is scored with the default weights; the plan's size is the file's."""
    model = open_model(synthetic("plan-dense", synth.SMALL_DENSE))
    a = analyze(model, Settings())
    assert not a.weights
    p = make_plan(model, a, Budget("bpw", 4.5))
    assert a.weights and all(math.isfinite(r.sensitivity) for r in a.tensors.values())
    assert p.classes and p.classes == sorted(p.classes, key=lambda c: -c.sensitivity)
    assert [c["class"] for c in p.to_json()["classes"]] == [c.cls for c in p.classes]


def test_budget_entry_point_reuses_the_results_file(analysed, tmp_path, monkeypatch):
    model, a, out = analysed
    monkeypatch.chdir(tmp_path)
    scored = reuse_analysis(out)
    assert scored.model.path == model.path and scored.results == out
    t = job_for_budget(Budget("bpw", 4.5), model.path, request=AnalysisRequest(results=str(out)))
    assert t.plan is not None and t.job.file_bytes == t.plan.size.file_bytes
    assert t.output == f"{model.path.stem}-prism-4.5bpw.gguf" and str(out) in map(str, t.inputs)
    res = quantize_model(model.path, tmp_path / "lib.gguf", t.plan, progress=False)
    assert res.file_bytes == t.plan.size.file_bytes


def test_quantize_model_takes_a_budget(synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = synthetic("plan-dense", synth.SMALL_DENSE)
    res = quantize_model(src, tmp_path / "b.gguf", Budget("bpw", 4.0), progress=False)
    assert res.file_bytes == res.predicted_bytes
    assert (tmp_path / f"{src.stem}.prism.json").is_file()      # later plans reuse the analysis


def test_bad_imatrix_argument_is_one_line():
    from prism_native.errors import PrismError
    from prism_native.pipeline import open_imatrix
    with pytest.raises(PrismError, match="imatrix must be"):
        open_imatrix(3, None)  # type: ignore[arg-type]
