"""The mutation fuzzer in the test suite: a quick seeded subset always, the full run on request.

The full run (>= 2,000 mutants) is `PYTHONPATH=src python -m tests.fuzz`, or in pytest
`PRISM_FUZZ_FULL=1 pytest -m fuzz_full tests/fuzz`.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from . import campaign, harness, mutate, oracle, spec

QUICK = campaign.Plan(mutants=200, seed=1, weights_share=0.0, thorough=False)


def test_quick_subset_has_no_bad_outcome(tmp_path: Path) -> None:
    records = campaign.run_campaign(QUICK, tmp_path)
    bad = [r for r in records if r.outcome.bad]
    assert not bad, f"\n{campaign.table(records)}\n{campaign.failures(bad)}"
    seen = {r.mutant.strategy for r in records}
    assert seen == set(mutate.STRATEGIES)
    outcomes = {r.outcome for r in records}
    assert {campaign.Outcome.VALID_OK, campaign.Outcome.MALFORMED_REJECTED} <= outcomes


def test_real_command_line_on_a_malformed_and_a_valid_mutant(tmp_path: Path) -> None:
    """The fork shortcut against `python -m prism_native` itself (interpreter start-up, rlimit, stderr)."""
    bases = campaign.make_bases(tmp_path / "bases")
    env = campaign.make_env(tmp_path, harness.Limits())
    f16 = next(b for b in bases if b.name == "f16")
    g = spec.parse(f16.files[0])
    cases = [(mutate.overlap(random.Random(0), g)[0], False), (f16.files[0], True)]
    for i, (data, valid) in enumerate(cases):
        m = campaign.Mutant(i, "exec", "f16", "", [data], f16.names, oracle.judge([data]))
        assert m.verdict.valid is valid
        rec = campaign.run_mutant(m, ["inspect"], tmp_path / "work", env, harness.run_exec)
        expected = campaign.Outcome.VALID_OK if valid else campaign.Outcome.MALFORMED_REJECTED
        assert rec.outcome is expected, rec.failures


@pytest.mark.fuzz_full
@pytest.mark.skipif(not os.environ.get("PRISM_FUZZ_FULL"), reason="the full fuzz run: set PRISM_FUZZ_FULL=1")
def test_full_run_has_no_bad_outcome(tmp_path: Path) -> None:
    plan = campaign.Plan(mutants=int(os.environ.get("PRISM_FUZZ_MUTANTS", "2000")), seed=0, exec_every=25)
    records = campaign.run_campaign(plan, tmp_path)
    print(campaign.table(records))
    bad = [r for r in records if r.outcome.bad]
    assert not bad, campaign.failures(bad, 50)
