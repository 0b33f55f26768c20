"""plan --plot: the allocation as a picture (plan/plot.py), headless, and its one-line refusals."""
from __future__ import annotations

import json
import sys

import pytest

from prism_native.cli import main
from prism_native.errors import UsageError
from prism_native.measure.results import Analysis
from prism_native.plan.budget import Budget
from prism_native.plan.planner import make_plan
from prism_native.plan.plot import AllocationGrid, Cell, allocation_grid, check_plot_path, draw_allocation
from prism_native.plan.score import Weights, score_analysis
from prism_native.read.model import open_model
from support import synth

pytest.importorskip("matplotlib")

MOE = synth.Spec(n_expert=8, n_layer=4, n_embd=256, n_ff=256, layer_names=("attn_q", "attn_k", "attn_v", "attn_output",
                                                                         "ffn_up_shexp", "ffn_down_shexp"), seed=11)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def moe(synthetic, tmp_path_factory):
    """The model, its scored analysis and the analysis file (as `analyze` writes it)."""
    path = synthetic("plot-moe", MOE)
    res = tmp_path_factory.mktemp("plot") / "moe.prism.json"
    assert main(["analyze", str(path), "-o", str(res), "-q"]) == 0
    analysis = Analysis.load(res)
    score_analysis(analysis, Weights())
    return open_model(path), analysis, res


def test_grid_has_every_planned_tensor_once(moe):
    model, a, _ = moe
    plan = make_plan(model, a, Budget("bpw", 4.0))
    g = allocation_grid(plan, model.name)
    assert g.layers == (0, 1, 2, 3)
    assert g.columns == ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_exps", "ffn_up_exps",
                         "ffn_down_exps", "ffn_up_shexp", "ffn_down_shexp")
    assert [name for name, _ in g.outside] == ["token_embd", "output"]
    assert len(g.cells) + len(g.outside) == len(plan.recipe.written)
    for (layer, cls), cell in g.cells.items():
        assert cell.type == plan.recipe.written[f"blk.{layer}.{cls}.weight"]
        assert cell.override == (f"blk.{layer}.{cls}.weight" in plan.allocation.overrides)
    assert "4 bpw" in g.title and "predicted file" in g.title


@pytest.mark.parametrize("ext, magic", [(".png", PNG_MAGIC), (".svg", b"<?xml")])
def test_plan_plot_writes_the_picture(moe, tmp_path, capsys, ext, magic):
    model, _, res = moe
    pyplot_before = "matplotlib.pyplot" in sys.modules
    out = tmp_path / f"alloc{ext}"
    assert main(["plan", str(model.path), "--from", str(res), "--bpw", "4", "--plot", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)                 # stdout stays the JSON plan
    assert f"allocation drawn in {out}" in captured.err
    assert out.read_bytes().startswith(magic)
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_before    # no pyplot, no backend switch


def test_sweep_draws_one_picture_per_budget(moe, tmp_path):
    model, _, res = moe
    assert main(["plan", str(model.path), "--from", str(res), "--sweep", "3:4:0.5", "--plot",
                 str(tmp_path / "a.png")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-3.5bpw.png", "a-3bpw.png", "a-4bpw.png"]


def test_missing_cells_and_outside_only(tmp_path):
    """A block without a class (hybrid models) leaves its cell empty; a grid of outside tensors alone draws."""
    q4, q8 = Cell("Q4_K", 4.5), Cell("Q8_0", 8.5, override=True)
    g = AllocationGrid("t", ("attn_qkv", "ssm_out"), (0, 1), {(0, "attn_qkv"): q4, (1, "ssm_out"): q8},
                       (("token_embd", q8),))
    assert draw_allocation(g, tmp_path / "h.png").read_bytes().startswith(PNG_MAGIC)
    g = AllocationGrid("t", (), (), {}, (("token_embd", q4),))
    assert draw_allocation(g, tmp_path / "o.svg").stat().st_size > 0


@pytest.mark.parametrize("name", ["alloc.jpg", "alloc", "alloc.gguf"])
def test_unknown_format_is_refused_before_any_work(moe, tmp_path, capsys, name):
    model, _, res = moe
    assert main(["plan", str(model.path), "--from", str(res), "--bpw", "4", "--plot", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".png or .svg" in err
    assert not (tmp_path / name).exists()


def test_missing_matplotlib_is_one_line(moe, tmp_path, capsys, monkeypatch):
    model, _, res = moe
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # as if not installed
    with pytest.raises(UsageError, match="matplotlib"):
        check_plot_path("x.png")
    assert main(["plan", str(model.path), "--from", str(res), "--bpw", "4", "--plot", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prism-native[plot]" in err


def test_unwritable_destination_is_one_line(moe, tmp_path, capsys):
    model, _, res = moe
    assert main(["plan", str(model.path), "--from", str(res), "--bpw", "4", "--plot",
                 str(tmp_path / "no" / "such" / "a.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
