"""Exact byte accounting of the file llama-quantize writes for a given type per tensor.

llama-quantize (src/llama-quant.cpp, llama_model_quantize_impl) writes one GGUF with ggml's gguf
writer (ggml/src/gguf.cpp, gguf_write_out): header, the input's key/values (split.* removed,
general.quantization_version and general.file_type set, imatrix keys added when --imatrix is used),
tensor infos in llama's tensor order, zero padding to the alignment, then every tensor's data padded
to the alignment. The alignment is always GGUF_DEFAULT_ALIGNMENT (32): gguf_set_kv copies a
general.alignment key but does not apply it to the output context.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .. import qtypes
from ..errors import RecipeError
from ..gguf.constants import GGML_QNT_VERSION, KEY_FILE_TYPE, KEY_QUANTIZATION_VERSION, SPLIT_KEYS
from ..gguf.writer import KV, WriteLayout, WriteTensor, check_reserved, kv_from_field, remove_kv, set_kv
from ..qtypes import QType
from ..read.model import Model
from .decide import Decision
from .quantizable import llama_order, not_quantized_reason


def tensor_nbytes(shape: tuple[int, ...], qtype: QType | str | int) -> int:
    """ggml_nbytes of a tensor stored as qtype (rows must fit the block size)."""
    qt = qtype if isinstance(qtype, QType) else qtypes.get(qtype)
    n_rows = 1
    for d in shape[1:]:
        n_rows *= d
    return n_rows * qt.row_bytes(shape[0])


def imatrix_kv(file: str, dataset: str | None, has_chunks: bool, *, entries: int = 0,
               chunks: int = 0) -> tuple[KV, ...]:
    """The keys quantize.cpp adds with --imatrix, in its order (strings are strncpy'd into 128-byte
    buffers). The counts do not change the size; the writer passes the real ones."""
    out = [KV.string("quantize.imatrix.file", file, 127)]
    if dataset is not None:
        out.append(KV.string("quantize.imatrix.dataset", dataset, 127))
    out.append(KV.u32("quantize.imatrix.entries_count", entries))
    if has_chunks:
        out.append(KV.u32("quantize.imatrix.chunks_count", chunks))
    return tuple(out)


def output_kvs(fields: Iterable[Any], file_type: int, overrides: Sequence[KV] = ()) -> list[KV]:
    """The key/values of llama-quantize's output, in order (llama_model_quantize_impl): the input's
    (gguf_set_kv), general.quantization_version and general.file_type set, the split keys removed, then
    the overrides (--override-kv, then the imatrix keys) set one after the other."""
    kvs: list[KV] = []
    for f in fields:
        kv = kv_from_field(f)
        check_reserved(kv)
        set_kv(kvs, kv)
    set_kv(kvs, KV.u32(KEY_QUANTIZATION_VERSION, GGML_QNT_VERSION))
    set_kv(kvs, KV.u32(KEY_FILE_TYPE, file_type))
    for k in SPLIT_KEYS:
        remove_kv(kvs, k)
    for kv in overrides:
        check_reserved(kv)
        set_kv(kvs, kv)
    return kvs


def output_layout(model: Model, types: Mapping[str, QType | str | int], *, extra_kv: Iterable[KV] = (),
                  file_type: int = 0, rename: Mapping[str, str | None] | None = None) -> WriteLayout:
    """The output file as llama-quantize lays it out: key/values, then the tensors in llama's order, each
    at its type in `types` (tensors not named keep theirs). `rename` (--prune-layers): each tensor's name
    in the output, None for the tensors dropped; the order stays that of the input's names."""
    by_name = {t.name: t for t in model.tensors}
    entries = []
    for name in llama_order(by_name):
        t = by_name[name]
        out_name = name if rename is None else rename[name]
        if out_name is None:
            continue
        want = types.get(name)
        qt = t.qtype if want is None else (want if isinstance(want, QType) else qtypes.get(want))
        if not qt.fits(t.n_per_row):
            raise RecipeError(f"{t.name}: rows of {t.n_per_row} values do not fit {qt.name} (blocks of "
                             f"{qt.block_size}); llama-quantize would abort")
        entries.append(WriteTensor(out_name, t.shape, qt.ggml_type, tensor_nbytes(t.shape, qt)))
    kvs = output_kvs(model.fields.values(), file_type, tuple(extra_kv))
    return WriteLayout(tuple(kvs), tuple(entries))


@dataclass(frozen=True)
class SizeEstimate:
    tensor_bytes: int      # sum of tensor data, what llama-quantize reports as "quant size"
    file_bytes: int        # exact size of the output file
    meta_bytes: int        # header + key/values + tensor infos, padded
    n_params: int          # all tensors (llama's ml.n_elements)
    quantized_params: int  # tensors llama-quantize quantizes
    quantized_bytes: int

    @property
    def bpw(self) -> float:
        """llama-quantize's BPW: 8 x tensor bytes / all parameters (also llama's 'file size' BPW)."""
        return 8.0 * self.tensor_bytes / self.n_params

    @property
    def bpw_file(self) -> float:
        """8 x output file bytes / all parameters."""
        return 8.0 * self.file_bytes / self.n_params

    @property
    def bpw_quantized(self) -> float:
        """8 x bytes / parameters over the quantized tensors only."""
        return 8.0 * self.quantized_bytes / self.quantized_params if self.quantized_params else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tensor_bytes": self.tensor_bytes, "file_bytes": self.file_bytes,
                "meta_bytes": self.meta_bytes, "n_params": self.n_params,
                "quantized_params": self.quantized_params, "quantized_bytes": self.quantized_bytes,
                "bpw": self.bpw, "bpw_file": self.bpw_file, "bpw_quantized": self.bpw_quantized}


def estimate(model: Model, types: Mapping[str, QType | str | int], *, extra_kv: Iterable[KV] = (),
             quantized: Iterable[str] | None = None) -> SizeEstimate:
    """Sizes of the output for `types` (tensor name -> type; tensors not named keep theirs).

    `quantized` names the tensors counted in bpw_quantized; by default those llama-quantize allows.
    """
    layout = output_layout(model, types, extra_kv=extra_kv)
    if quantized is None:
        qset = {t.name for t in model.tensors if not_quantized_reason(t.name, t.n_dims, model.arch) is None}
    else:
        qset = set(quantized)
    n_elements = {t.name: t.n_elements for t in model.tensors}
    q_params = sum(n_elements[e.name] for e in layout.tensors if e.name in qset)
    q_bytes = sum(e.nbytes for e in layout.tensors if e.name in qset)
    data = sum(e.nbytes for e in layout.tensors)
    return SizeEstimate(data, layout.file_nbytes, layout.meta_nbytes, model.n_params, q_params, q_bytes)


def estimate_decisions(model: Model, decisions: Iterable[Decision], *,
                       extra_kv: Iterable[KV] = ()) -> SizeEstimate:
    """Sizes of what llama-quantize writes for decide()'s decisions."""
    ds = list(decisions)
    return estimate(model, {d.name: d.target for d in ds}, extra_kv=extra_kv,
                    quantized=[d.name for d in ds if d.quantized])
