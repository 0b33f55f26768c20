"""Exact size accounting (prism_native.llama.sizes) against files llama-quantize really writes."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from prism_native import qtypes
from prism_native.errors import PrismError
from prism_native.gguf.constants import pad
from prism_native.gguf.writer import tensor_info
from prism_native.llama import sizes
from prism_native.llama.command import QuantizeCommand
from prism_native.llama.decide import decide
from prism_native.llama.options import QuantizeOptions
from prism_native.read.model import Model
from prism_native.tools.binaries import run
from prism_native.tools.quantize_log import dry_run
from support import synth


def test_tensor_nbytes_and_padding():
    assert sizes.tensor_nbytes((576, 192), "Q8_0") == 192 * 18 * 34
    assert sizes.tensor_nbytes((256, 64, 8), "Q4_K") == 64 * 8 * 144
    assert pad(33) == 64 and pad(64) == 64
    assert len(tensor_info("a.weight", (576, 1), 0, 0)) == 8 + 8 + 4 + 8 + 4 + 8  # [576, 1] is 1-D


def test_unchanged_model_size_is_its_own_layout(tmp_path):
    """With every tensor kept, only the two u32 keys llama-quantize sets can change the size."""
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=2, kv={"general.file_type": 1, "general.quantization_version": 2}))
    m = Model(path)
    est = sizes.estimate(m, {})
    assert est.file_bytes == path.stat().st_size
    assert est.tensor_bytes == sum(t.n_bytes for t in m.tensors)
    assert est.n_params == m.n_params


def test_bpw_definitions(tmp_path):
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=2))
    m = Model(path)
    ds = decide(m.tensors, m.hparams, QuantizeOptions("Q8_0"))
    est = sizes.estimate_decisions(m, ds)
    assert est.bpw_quantized == pytest.approx(8.5)  # every matrix becomes Q8_0
    assert est.bpw == pytest.approx(8 * est.tensor_bytes / m.n_params)
    assert est.bpw_file > est.bpw


def test_rows_that_do_not_fit_are_an_error(tmp_path):
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_layer=1, n_embd=320, n_head=5))
    with pytest.raises(PrismError, match="do not fit Q4_K"):
        sizes.estimate(Model(path), {"token_embd.weight": "Q4_K"})


# -- against real llama-quantize runs --------------------------------------------------------------

REAL_CASES = {
    "dense-Q4_K_M": (synth.Spec(n_layer=8, kv={"test.nul": "before\0after"}), "Q4_K_M", {}),
    "tied-Q3_K_M": (synth.Spec(tied=True, n_embd=320, n_head=5, n_ff=200, n_layer=4), "Q3_K_M",
                    dict(tensor_types=[r"blk\.1\.ffn_up=q8_0"])),
    "moe-Q4_K_S": (synth.Spec(n_expert=8, n_layer=2, n_ff=256, layer_names=("attn_q", "attn_v")),
                   "Q4_K_S", {}),
    "bf16-align64-IQ4_NL": (synth.Spec(n_layer=2, dtype="BF16", alignment=64), "IQ4_NL", {}),
    "q8src-Q6_K": (synth.Spec(n_layer=2, dtype="Q8_0"), "Q6_K", dict(output_tensor_type="q8_0")),
    # low-bit mixes: Q2_0 (unknown to the gguf package), fallbacks of 320-wide rows, MXFP4 experts
    "tied-Q2_0": (synth.Spec(tied=True, n_embd=320, n_head=5, n_ff=200, n_layer=2), "Q2_0", {}),
    "dense-TQ1_0-types": (synth.Spec(n_layer=2), "TQ1_0",
                          dict(tensor_types=["ffn_down=nvfp4", "attn_q=q1_0", "ffn_up=tq2_0"])),
    "moe-MXFP4_MOE": (synth.Spec(n_expert=8, n_layer=2, n_ff=256, layer_names=("attn_q", "attn_v")),
                      "MXFP4_MOE", {}),
}


def _check_real(bin_, src, out, opts, *, imatrix=None, extra_kv=()):
    model = Model(src)
    ds = decide(model.tensors, model.hparams, opts)
    est = sizes.estimate_decisions(model, ds, extra_kv=extra_kv)
    run(QuantizeCommand.of(opts, src, out, imatrix=imatrix, allow_requantize=True, nthreads=2,
                           program=str(bin_)).argv())
    assert out.stat().st_size == est.file_bytes
    q = Model(out)
    assert {t.name: t.type_name for t in q.tensors} == {d.name: d.target.name for d in ds}
    assert [t.name for t in q.tensors] == [d.name for d in ds]  # llama's order
    assert sum(t.n_bytes for t in q.tensors) == est.tensor_bytes
    return est


@pytest.mark.parametrize("case", list(REAL_CASES))
def test_real_quantize_size_is_exact(llama_quantize_bin, tmp_path, case):
    spec, ftype, kw = REAL_CASES[case]
    src = tmp_path / "src.gguf"
    synth.write(src, spec)
    _check_real(llama_quantize_bin, src, tmp_path / "out.gguf", QuantizeOptions.build(ftype, **kw))


def test_real_quantize_with_imatrix(llama_quantize_bin, tmp_path):
    spec = synth.Spec(n_layer=4)
    src, imat = tmp_path / "src.gguf", tmp_path / "imatrix.gguf"
    synth.write(src, spec)
    n = synth.write_imatrix(imat, spec, dataset="calibration-data.txt", chunks=10)
    extra = sizes.imatrix_kv(str(imat), "calibration-data.txt", has_chunks=True)
    assert n > 0
    _check_real(llama_quantize_bin, src, tmp_path / "out.gguf", QuantizeOptions("Q4_0", imatrix=True),
                imatrix=imat, extra_kv=extra)


def test_real_quantize_of_a_split_set(llama_quantize_bin, tmp_path):
    first = tmp_path / "split-00001-of-00003.gguf"
    synth.write(tmp_path / "split.gguf", synth.Spec(n_layer=4), split_max_tensors=16)
    assert first.exists() and (tmp_path / "split-00003-of-00003.gguf").exists()
    _check_real(llama_quantize_bin, first, tmp_path / "out.gguf", QuantizeOptions("Q4_K_M"))


def test_real_quantize_smollm2(llama_quantize_bin, smollm2_path, tmp_path):
    opts = QuantizeOptions.build("Q4_K_M", tensor_types=[r"blk\.(2|3)\.ffn_down=q8_0"])
    est = _check_real(llama_quantize_bin, smollm2_path, tmp_path / "out.gguf", opts)
    got = dry_run(llama_quantize_bin, QuantizeCommand.of(opts, smollm2_path))
    assert got.quant_mib == pytest.approx(est.tensor_bytes / 2**20, abs=0.006)
    assert got.bpw == pytest.approx(est.bpw, abs=0.006)


def test_dequantized_values_of_a_quantized_output(llama_quantize_bin, tmp_path):
    """Reading llama-quantize's Q8_0 output gives back the source within Q8_0's error."""
    src = tmp_path / "src.gguf"
    values = synth.write(src, synth.Spec(n_layer=1, dtype="F32"))
    run(QuantizeCommand.of(QuantizeOptions("Q8_0", pure=True), src, tmp_path / "q.gguf",
                           program=str(llama_quantize_bin)).argv())
    q = Model(tmp_path / "q.gguf")
    t = q.tensor("blk.0.attn_q.weight")
    assert t.type_name == "Q8_0" and t.requantized
    x = values["blk.0.attn_q.weight"]
    ref = gguf.quants.dequantize(gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                                 gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_allclose(q.read(t), ref, rtol=0, atol=1e-6)
    assert qtypes.get(t.ggml_type).bpw == 8.5
