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
from typing import Any, Iterable, Mapping

import gguf

from .. import qtypes
from ..errors import RecipeError
from ..qtypes import QType
from ..read.model import GGUF_HEADER_BYTES, Model, ggml_n_dims
from .decide import Decision
from .quantizable import not_quantized_reason

ALIGNMENT = 32
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
_U32_KEYS = ("general.quantization_version", "general.file_type")  # set by llama-quantize
_VT = gguf.GGUFValueType


def pad(n: int, align: int = ALIGNMENT) -> int:
    return (n + align - 1) // align * align


def tensor_nbytes(shape: tuple[int, ...], qtype: QType | str | int) -> int:
    """ggml_nbytes of a tensor stored as qtype (rows must fit the block size)."""
    qt = qtype if isinstance(qtype, QType) else qtypes.get(qtype)
    n_rows = 1
    for d in shape[1:]:
        n_rows *= d
    return n_rows * qt.row_bytes(shape[0])


def _cstr_len(data: Any) -> int:
    """Length of a string as gguf_set_val_str copies it (std::string from c_str: cut at a NUL)."""
    b = bytes(data)
    nul = b.find(b"\0")
    return len(b) if nul < 0 else nul


def kv_nbytes(field: Any) -> int:
    """Bytes of one key/value as ggml writes it after gguf_set_kv copied it from a reader field."""
    key_len = _cstr_len(field.parts[1])
    head = 8 + key_len + 4
    main = field.types[0]
    if main == _VT.STRING:
        return head + 8 + _cstr_len(field.parts[field.data[0]])
    if main != _VT.ARRAY:
        return head + int(field.parts[-1].nbytes)
    head += 4 + 8  # element type, count
    count = int(field.parts[4][0])
    if count == 0:
        return head
    sub = field.types[-1]
    if sub == _VT.STRING:
        return head + sum(8 + _cstr_len(field.parts[i]) for i in field.data)
    return head + sum(int(field.parts[i].nbytes) for i in field.data)


@dataclass(frozen=True)
class ExtraKV:
    """A key/value llama-quantize adds (imatrix keys, --override-kv): key and its value bytes."""

    key: str
    value_bytes: int  # serialized value size after the type tag (u32: 4; string: 8 + length)

    @property
    def nbytes(self) -> int:
        return 8 + len(self.key.encode()) + 4 + self.value_bytes

    @classmethod
    def u32(cls, key: str) -> "ExtraKV":
        return cls(key, 4)

    @classmethod
    def string(cls, key: str, value: str, max_bytes: int | None = None) -> "ExtraKV":
        b = value.encode()
        return cls(key, 8 + (len(b) if max_bytes is None else min(len(b), max_bytes)))


def imatrix_kv(file: str, dataset: str | None, has_chunks: bool) -> tuple[ExtraKV, ...]:
    """The keys quantize.cpp adds with --imatrix (strings are strncpy'd into 128-byte buffers)."""
    out = [ExtraKV.string("quantize.imatrix.file", file, 127)]
    if dataset is not None:
        out.append(ExtraKV.string("quantize.imatrix.dataset", dataset, 127))
    out.append(ExtraKV.u32("quantize.imatrix.entries_count"))
    if has_chunks:
        out.append(ExtraKV.u32("quantize.imatrix.chunks_count"))
    return tuple(out)


def tensor_info_nbytes(name: str, shape: tuple[int, ...]) -> int:
    """gguf write_tensor_meta: name, n_dims (ggml_n_dims), ne[0..n_dims), type, offset."""
    return 8 + len(name.encode()) + 4 + 8 * ggml_n_dims(shape) + 4 + 8


def output_kv_nbytes(model: Model, extra: Iterable[ExtraKV] = ()) -> int:
    extra = tuple(extra)
    replaced = set(SPLIT_KEYS) | set(_U32_KEYS) | {e.key for e in extra}
    total = sum(kv_nbytes(f) for k, f in model.fields.items() if k not in replaced)
    total += sum(ExtraKV.u32(k).nbytes for k in _U32_KEYS)
    return total + sum(e.nbytes for e in extra)


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


def estimate(model: Model, types: Mapping[str, QType | str | int], *, extra_kv: Iterable[ExtraKV] = (),
             quantized: Iterable[str] | None = None) -> SizeEstimate:
    """Sizes of the output for `types` (tensor name -> type; tensors not named keep theirs).

    `quantized` names the tensors counted in bpw_quantized; by default those llama-quantize allows.
    """
    chosen = {n: (t if isinstance(t, QType) else qtypes.get(t)) for n, t in types.items()}
    if quantized is None:
        qset = {t.name for t in model.tensors if not_quantized_reason(t.name, t.n_dims, model.arch) is None}
    else:
        qset = set(quantized)
    meta = GGUF_HEADER_BYTES + output_kv_nbytes(model, extra_kv)
    data = padded = q_params = q_bytes = 0
    for t in model.tensors:
        qt = chosen.get(t.name, t.qtype)
        if not qt.fits(t.n_per_row):
            raise RecipeError(f"{t.name}: rows of {t.n_per_row} values do not fit {qt.name} (blocks of "
                             f"{qt.block_size}); llama-quantize would abort")
        nb = tensor_nbytes(t.shape, qt)
        meta += tensor_info_nbytes(t.name, t.shape)
        data += nb
        padded += pad(nb)
        if t.name in qset:
            q_params += t.n_elements
            q_bytes += nb
    meta = pad(meta)
    return SizeEstimate(data, meta + padded, meta, model.n_params, q_params, q_bytes)


def estimate_decisions(model: Model, decisions: Iterable[Decision], *,
                       extra_kv: Iterable[ExtraKV] = ()) -> SizeEstimate:
    """Sizes of what llama-quantize writes for decide()'s decisions."""
    ds = list(decisions)
    return estimate(model, {d.name: d.target for d in ds}, extra_kv=extra_kv,
                    quantized=[d.name for d in ds if d.quantized])
