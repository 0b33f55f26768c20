"""Large expert stacks in the default mode: only SAMPLED_EXPERTS evenly spread experts (and the spectral
ones) are read, and the stack is measured as the stack of those experts alone. The errors of
exchangeable experts are then estimated as from a sample of rows; the spectra are the same experts'."""
from __future__ import annotations

from pathlib import Path

import pytest
from support import synth

from prism_native.measure import analyze as A
from prism_native.read.model import Model

N_EXPERT = 40
_READ_ROWS = Model.read_rows


@pytest.fixture(scope="module")
def big_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("experts") / "moe.gguf"
    synth.write(path, synth.Spec(n_expert=N_EXPERT, n_layer=1, n_embd=256, n_ff=256, n_vocab=512, dtype="BF16"))
    return path


def _analyze(path: Path, monkeypatch: pytest.MonkeyPatch, sampled: int) -> tuple[dict, dict[str, int]]:
    monkeypatch.setattr(A, "SAMPLED_EXPERTS", sampled)
    rows: dict[str, int] = {}

    def count(self, t, a, b, out=None):
        rows[t.name] = rows.get(t.name, 0) + b - a
        return _READ_ROWS(self, t, a, b, out)
    monkeypatch.setattr(Model, "read_rows", count)
    return A.analyze(Model(path), A.Settings(threads=2)).tensors, rows


def test_sampled_experts_are_spread_and_include_the_spectral_ones() -> None:
    s = A.Settings()
    got = A.sampled_experts(256, s)
    assert got is not None and got[0] == 0 and got[-1] == 255 and len(got) <= A.SAMPLED_EXPERTS + 4
    assert set(A._spectral_mats(256, s)) <= set(got)
    assert A.sampled_experts(A.SAMPLED_EXPERTS, s) is None
    assert A.sampled_experts(256, A.Settings(mode="exact")) is None


def test_a_large_stack_is_read_in_part_and_measured_alike(big_moe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full, full_rows = _analyze(big_moe, monkeypatch, N_EXPERT)
    part, part_rows = _analyze(big_moe, monkeypatch, 8)
    for name, f in full.items():
        p = part[name]
        if "_exps" not in name:
            assert p.errors == f.errors and part_rows[name] == full_rows[name], name
            continue
        per = f.shape[1]
        assert full_rows[name] == N_EXPERT * per
        assert part_rows[name] < N_EXPERT * per // 3          # 8 spread + the 4 spectral, 10 distinct
        for m in ("alpha", "dominance", "spectral_norm", "imbalance"):   # the same four experts
            assert getattr(p, m) == getattr(f, m), (name, m)
        for t in f.errors:                                    # i.i.d. experts: within sampling error
            assert p.rel_error(t) == pytest.approx(f.rel_error(t), rel=0.03, nan_ok=True), (name, t)
