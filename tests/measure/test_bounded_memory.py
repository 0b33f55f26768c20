"""Analysis in bounded memory: tensors larger than a slab are read slab by slab, never converted whole.

A tensor of one slab is measured exactly as before (the errors, spectra and every other field equal);
split into slabs, the errors only sum the same kernel statistics in more pieces and the experts' spectra
are unchanged; a single matrix larger than a slab takes its spectrum from a sample of lines, with sigma_1
from products streamed from the file (docs/metrics.md, "Bounded memory")."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import synth
from support.child import child_env

from prism_native.measure import analyze as A
from prism_native.measure.eigen import gram_operator
from prism_native.measure.spectral import LineSample, SpectralConfig, sample_lines, spectral_metrics
from prism_native.measure.structure import line_norms
from prism_native.read.model import Model



def _run(path: Path, slab: int, monkeypatch: pytest.MonkeyPatch, mode: str = "default") -> dict:
    monkeypatch.setattr(A, "SLAB_VALUES", slab)
    return A.analyze(Model(path), A.Settings(mode=mode, threads=2)).tensors


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slabs") / "moe.gguf"
    synth.write(path, synth.Spec(n_expert=16, n_layer=2, n_embd=256, n_ff=512, n_vocab=4096, dtype="BF16"))
    return path


@pytest.mark.parametrize("mode", ["default", "exact"])
def test_slabs_keep_errors_and_expert_spectra(moe_model: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    whole = _run(moe_model, 1 << 26, monkeypatch, mode)
    slabs = _run(moe_model, 40_000, monkeypatch, mode)   # ~2 experts of 512 x 256 per slab; embeddings in 156-row slabs
    assert whole.keys() == slabs.keys()
    for name, w in whole.items():
        s = slabs[name]
        assert s.rows_measured == w.rows_measured, name
        for t, e in w.errors.items():
            assert s.errors[t]["type"] == e["type"]
            assert s.rel_error(t) == pytest.approx(w.rel_error(t), rel=1e-12, nan_ok=True), (name, t)
        assert s.boundary == pytest.approx(w.boundary, rel=1e-12)
        if "_exps" in name:        # each expert measured whole within its slab: the same spectra
            for m in ("alpha", "dominance", "spectral_norm", "imbalance"):
                assert getattr(s, m) == getattr(w, m), (name, m)
        elif w.n_params > 40_000:  # one matrix over several slabs: a line sample, the exact imbalance
            assert s.spectral_method.startswith("sampled-") and not w.spectral_method.startswith("sampled-")
            assert s.imbalance == pytest.approx(w.imbalance, rel=1e-9)
            assert s.spectral_norm == pytest.approx(w.spectral_norm, rel=0.05)   # Gaussian: clustered top
        else:                      # one slab: measured as in one piece
            for m in ("alpha", "dominance", "spectral_norm", "imbalance", "fragility"):
                assert getattr(s, m) == getattr(w, m) or math.isnan(getattr(w, m)), (name, m)


def test_line_sample_equals_a_sampled_plan() -> None:
    """A LineSample of the lines a sampled plan draws, with the whole matrix's product, is that plan."""
    rng = np.random.default_rng(3)
    for shape in ((600, 64), (64, 600)):       # tall: lines are rows; wide: columns
        w = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
        cfg = SpectralConfig(gram_flop_budget=64 * 64 * 150)   # 150 lines < 4 N = 256 -> sample 256
        ref = spectral_metrics(w, rng_seed=7, config=cfg)
        assert ref.sampled_lines == 256
        lines = sample_lines(shape, "default", 1 << 20, rng_seed=7, config=cfg)
        x = w if shape[0] >= shape[1] else w.T
        sample = LineSample(shape, lines, np.ascontiguousarray(x[lines]),
                            lambda dtype, scale, x=x: gram_operator(x, dtype))
        assert spectral_metrics(sample, rng_seed=7, config=cfg, norms=line_norms(w)) == ref


_PEAK = """
import json, resource, sys
from prism_native.measure import analyze as A
from prism_native.read.model import Model
A.SLAB_VALUES = int(sys.argv[2])
m = Model(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
A.analyze(m, A.Settings(threads=2))
print(json.dumps({"before": before, "after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_peak_rss_independent_of_the_largest_tensor(tmp_path: Path) -> None:
    """Peak resident memory of analyze (ru_maxrss, in a fresh process) grows by far less than one float32
    copy of the largest tensor (134 MB here; the code before slabs grew by 486 MB: two workers' copies and
    every mapped page). With 1 Mi-value slabs it grew by ~40 MB."""
    path = tmp_path / "moe.gguf"
    synth.write(path, synth.Spec(n_expert=32, n_layer=1, n_embd=1024, n_ff=1024, n_vocab=512, layer_names=("attn_q",)))
    largest = max(t.n_elements for t in Model(path).tensors) * 4
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(1 << 20)], capture_output=True, text=True, check=False,
                         timeout=300, env=child_env({}, OMP_NUM_THREADS="1", PATH="/usr/bin:/bin"))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    grown = (r["after"] - r["before"]) * 1024
    assert grown < largest / 2, f"peak grew by {grown / 1e6:.0f} MB; the largest tensor is {largest / 1e6:.0f} MB as float32"
    assert math.isfinite(grown)
