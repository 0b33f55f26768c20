"""The fuzzer of every input besides the model (tests/fuzz/inputs.py): a quick seeded subset always.

The full run (>= 1,000 cases) is `PYTHONPATH=src python -m tests.fuzz.inputs --cases 1200`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import campaign, harness, inputs

QUICK = inputs.Plan(cases=2 * len(inputs.STRATEGIES), seed=7)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> inputs.Env:
    return inputs.make_env(tmp_path_factory.mktemp("inputs-fuzz"))


def test_quick_subset_has_no_bad_outcome(env: inputs.Env, tmp_path: Path) -> None:
    records = inputs.run_campaign(QUICK, tmp_path, env=env)
    bad = [r for r in records if r.outcome.bad]
    assert not bad, f"\n{campaign.table(records)}\n{campaign.failures(bad)}"
    assert {r.mutant.strategy for r in records} == set(inputs.STRATEGIES)
    assert {campaign.Outcome.VALID_OK, campaign.Outcome.MALFORMED_REJECTED} <= {r.outcome for r in records}


def test_real_command_line_refuses_a_fifo_output(env: inputs.Env, tmp_path: Path) -> None:
    """The fork shortcut against `python -m prism_native` itself, on an output that must not be opened."""
    fifo = tmp_path / "out.gguf"
    os.mkfifo(fifo)
    c = inputs.Case(0, "exec", "quantize", "fifo", campaign.oracle.Verdict("fifo"),
                    inputs._quantize(env, str(fifo), "Q4_K_M"), [str(fifo)], [env.model], [fifo])
    rec = inputs.run_case(c, tmp_path, harness.run_exec)
    assert rec.outcome is campaign.Outcome.MALFORMED_REJECTED, rec.failures
