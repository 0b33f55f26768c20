"""Values beyond float16's range: the types whose float16 block scales overflow on a tensor are no
candidates of its class; a class left with none is one clear error."""
from __future__ import annotations

import numpy as np
import pytest

from prism_native.errors import FileFormatError
from prism_native.measure import analyze as an
from prism_native.plan.budget import Budget
from prism_native.plan.planner import make_plan
from prism_native.plan.score import Weights, score_analysis
from prism_native.read.model import open_model
from support import synth

SPEC = synth.Spec(n_layer=2, n_vocab=256, dtype="F32", seed=3)


def _planned(tmp_path, value: float):
    path = tmp_path / "m.gguf"
    synth.write(path, SPEC)
    model = open_model(path)
    t = model.tensor("blk.1.attn_q.weight")
    data = bytearray(path.read_bytes())
    data[t.offset + 4 * 1000:t.offset + 4 * 1001] = np.float32(value).tobytes()
    path.write_bytes(bytes(data))
    model = open_model(path)
    analysis = an.analyze(model, an.Settings(threads=1))
    score_analysis(analysis, Weights())
    return model, analysis


def test_overflowing_types_are_left_out_of_the_class(tmp_path):
    # Q4_0 (max/8), Q4_1 and the types scaled by max |x| itself (TQ*, Q2_0) overflow; Q8_0 (max/127) and
    # the float-scaled MXFP4 (E8M0) and NVFP4 (saturating UE4M3) do not
    model, analysis = _planned(tmp_path, 1e6)
    r = analysis.tensors["blk.1.attn_q.weight"]
    bad = [q for q in r.errors if r.errors[q].get("overflow")]
    assert {"Q4_0", "Q4_1"} <= set(bad) and not {"Q8_0", "MXFP4", "NVFP4"} & set(bad)
    assert all("float16 block scales overflow" in r.errors[q]["reason"] for q in bad)
    assert r.rows_measured == 256             # beyond float16's range every row is measured
    for bpw in (4.0, 4.5, 5.0):
        p = make_plan(model, analysis, Budget("bpw", bpw))
        assert p.allocation.group_types["attn_q"] not in bad
        assert all(p.allocation.tensor_types[n] not in bad for n in ("blk.0.attn_q.weight", "blk.1.attn_q.weight"))


def test_a_class_no_type_can_hold_is_one_error(tmp_path):
    model, analysis = _planned(tmp_path, 1e12)   # (MXFP4 and NVFP4 would still hold it)
    with pytest.raises(FileFormatError) as e:
        make_plan(model, analysis, Budget("bpw", 4.5), types=("Q2_K", "Q4_K", "Q6_K", "Q8_0"))
    assert str(e.value) == (f"{model.path}: tensor 'blk.1.attn_q.weight': llama-quantize can write none of the "
                            "candidate types for class attn_q (Q2_K's float16 block scales overflow on values up to "
                            "1e+12; llama-quantize rejects the result)")
