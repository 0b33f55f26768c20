"""With an importance matrix: analyze weights every error by it, plan passes it to llama-quantize."""
from __future__ import annotations

import json

import numpy as np
import pytest

from prism_native.cli import main
from prism_native.measure import analyze as an
from prism_native.quant import dequantize, quantize
from prism_native.read.imatrix import load_imatrix, write_dat
from prism_native.read.model import open_model
from support import synth
from support.recipes import run_recipe

MOE = synth.Spec(n_expert=4, n_layer=2, n_embd=256, n_ff=256, n_vocab=256,
                 layer_names=("attn_q", "attn_k", "attn_v", "attn_output"), seed=8)


@pytest.fixture(scope="module")
def moe(synthetic, tmp_path_factory):
    path = synthetic("imat-moe", MOE)
    d = tmp_path_factory.mktemp("imat")
    synth.write_imatrix(d / "moe.imatrix.gguf", MOE)
    im = load_imatrix(d / "moe.imatrix.gguf")
    # the same importances in the legacy format (mean * ncall; ncall 4 divides back exactly)
    write_dat(d / "moe.imatrix.dat", {n: (v * np.float32(4), 4) for n, v in im.entries.items()}, 10, "calib")
    return path, d


def test_expert_slices_weight_their_own_rows(moe):
    path, d = moe
    m = open_model(path)
    im = load_imatrix(d / "moe.imatrix.gguf")
    t = m.tensor("blk.1.ffn_up_exps.weight")
    r = an.measure_tensor(m, t, an.Settings(mode="exact"), im)
    x = m.read(t)                                   # (n_expert, ne1, ne0)
    w = im.weights_for(t.name, t.n_per_row, x.shape[0])
    num = den = 0.0
    for e in range(x.shape[0]):
        y = dequantize(quantize(x[e], "Q4_K", w[e]), "Q4_K", x[e].shape)
        num += float(((x[e].astype(np.float64) - y) ** 2 * w[e]).sum())
        den += float((x[e].astype(np.float64) ** 2 * w[e]).sum())
    assert r.imatrix and r.rel_error("Q4_K") == pytest.approx(num / den, rel=1e-9)


def test_dat_and_gguf_give_the_same_analysis(moe):
    path, d = moe
    m = open_model(path)
    t = m.tensor("blk.0.attn_q.weight")
    a = an.measure_tensor(m, t, an.Settings(mode="exact"), load_imatrix(d / "moe.imatrix.gguf"))
    b = an.measure_tensor(m, t, an.Settings(mode="exact"), load_imatrix(d / "moe.imatrix.dat"))
    assert a.errors == b.errors


def test_plan_passes_imatrix_and_records_it(moe, tmp_path, capsys):
    path, d = moe
    res = tmp_path / "r.prism.json"
    imat = str(d / "moe.imatrix.gguf")
    assert main(["analyze", str(path), "--imatrix", imat, "-o", str(res), "-q"]) == 0
    assert json.loads(res.read_text())["imatrix"]["path"] == imat
    capsys.readouterr()
    assert main(["plan", str(path), "--from", str(res), "--bpw", "4.0", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    i = p["argv"].index("--imatrix")
    assert p["argv"][i + 1] == imat


def test_llama_quantize_with_imatrix_matches_plan(moe, tmp_path, llama_quantize_bin, capsys):
    path, d = moe
    res = tmp_path / "r.prism.json"
    imat = str(d / "moe.imatrix.gguf")
    assert main(["analyze", str(path), "--imatrix", imat, "-o", str(res), "-q"]) == 0
    capsys.readouterr()
    assert main(["plan", str(path), "--from", str(res), "--bpw", "3.6", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    got, size = run_recipe(llama_quantize_bin, p, tmp_path)
    assert all(got[n] == typ for n, typ in p["recipe"]["written"].items())
    assert size == p["size"]["file_bytes"]
