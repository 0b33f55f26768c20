"""Grid-free models from quantized ones: every stored-quantized value plus uniform noise of one step of its
own block, written as F16 (scripts/make_dithered_model.py).

A model that only exists quantized (SmolLM2-135M as Q4_1) sits on that type's grid: requantized to the
same type it comes back losslessly, which flatters any plan that picks the type. Adding U(-s/2, s/2),
s the quantization step of the value's block, is the noise quantization itself adds, so the pretrained
structure stays while no type can rebuild the source. The step is read from the block's scales for the
types whose levels are evenly spaced (the legacy types: d; the K types: d times the sub-block scale,
as their to_float applies it), and for the others (IQ4_NL's and IQ4_XS's non-uniform levels, the IQ1-3,
TQ and MXFP4 grids) taken as the median gap between the distinct values of each 32-value block.
Tensors stored unquantized (norms, F32 biases, an F16 embedding) are copied as they are.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .. import qtypes
from ..errors import FileFormatError, UsageError, quoted
from ..files import AtomicOutput, check_destination, check_space
from ..gguf.constants import pad
from ..gguf.writer import WriteLayout, WriteTensor
from ..llama.sizes import output_kvs
from ..qtypes import QType
from ..quant import FLOAT_TYPES, dequantize, float32_rows
from ..quant import fp32_to_fp16, invalid_data
from ..read.model import Model, TensorInfo
from ..write.encode import slabs
from ..write.source import TensorSource

F16 = qtypes.get("F16")
LLAMA_FTYPE_MOSTLY_F16 = 1
SLAB_VALUES = 1 << 22   # values per slab: a handful of 16 MiB float32 temporaries
LEVEL_BLOCK = 32        # values per block whose distinct levels give the step of a non-uniform type


# -- the step of each block ---------------------------------------------------------------------------

def _f16_at(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The fp16 field at byte `offset` of every block, as float32 (n_blocks,); the scale d is at the type's
    f16_offsets[0] (the native type table's block structs)."""
    return blocks[:, offset:offset + 2].copy().view("<f2")[:, 0].astype(np.float32)


def _legacy(blocks: np.ndarray, d: int) -> np.ndarray:
    """Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: one scale d first in the block, levels |d| apart (dequantize_row_q4_0
    ...; Q4_0's and Q5_0's d carry the sign of the block's extreme value)."""
    return np.abs(_f16_at(blocks, d))[:, None]


def _q2_k(blocks: np.ndarray, d: int) -> np.ndarray:
    """block_q2_K: scales[16] (low nibble: the 16-value sub-block's scale), then qs and d
    (dequantize_row_q2_K: dl = d * (sc & 0xF))."""
    return _f16_at(blocks, d)[:, None] * (blocks[:, 0:16] & 0xF)


def _q3_k(blocks: np.ndarray, d: int) -> np.ndarray:
    """block_q3_K: 6-bit signed scales packed in scales[12] at byte 96, just before d
    (dequantize_row_q3_K: dl = d * (scale - 32)); scale j has its low nibble in byte j (j < 8) or the
    high nibble of byte j - 8, and its top two bits in byte 8 + j % 4 at bit 2 * (j // 4)."""
    s = blocks[:, 96:108].astype(np.int32)
    j = np.arange(16)
    low = np.where(j < 8, s[:, j % 8] & 0xF, s[:, j % 8] >> 4)
    high = (s[:, 8 + j % 4] >> (2 * (j // 4))) & 3
    return np.abs(_f16_at(blocks, d)[:, None] * ((low | (high << 4)) - 32))


def _k4(blocks: np.ndarray, d: int) -> np.ndarray:
    """block_q4_K / block_q5_K: d, dmin, then eight 6-bit scales packed in scales[12] at byte 4
    (get_scale_min_k4: scale j < 4 is the low six bits of byte j; j >= 4 is the low nibble of byte j + 4
    with the top two bits of byte j - 4 above it)."""
    s = blocks[:, 4:16].astype(np.int32)
    sc = np.empty((len(blocks), 8), dtype=np.int32)
    sc[:, :4] = s[:, 0:4] & 63
    sc[:, 4:] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    return _f16_at(blocks, d)[:, None] * sc


def _q6_k(blocks: np.ndarray, d: int) -> np.ndarray:
    """block_q6_K: int8 scales[16] at byte 192, then d (dequantize_row_q6_K: d * sc[is])."""
    return np.abs(_f16_at(blocks, d)[:, None] * blocks[:, 192:208].view(np.int8))


# type -> (values per scale, steps of every block (n_blocks, scales per block)), for evenly spaced levels
_UNIFORM: dict[str, tuple[int, Callable[[np.ndarray, int], np.ndarray]]] = {
    "Q4_0": (32, _legacy), "Q4_1": (32, _legacy), "Q5_0": (32, _legacy), "Q5_1": (32, _legacy),
    "Q8_0": (32, _legacy), "Q2_K": (16, _q2_k), "Q3_K": (16, _q3_k), "Q4_K": (32, _k4), "Q5_K": (32, _k4),
    "Q6_K": (16, _q6_k),
}


def level_spacing(values: np.ndarray, block: int = LEVEL_BLOCK) -> np.ndarray:
    """The median gap between the distinct values of each `block` consecutive values (0 where a block
    holds a single value): the step of a grid whose levels are not evenly spaced."""
    v = np.sort(values.reshape(-1, block), axis=1)
    gaps = np.diff(v, axis=1)
    gaps[gaps == 0] = np.nan
    out = np.zeros(len(v), dtype=np.float32)
    some = ~np.isnan(gaps).all(axis=1)
    out[some] = np.nanmedian(gaps[some], axis=1)
    return out


def value_steps(raw: np.ndarray, qt: QType, values: np.ndarray) -> np.ndarray:
    """The quantization step of every value of whole rows of a quantized tensor (same shape as `values`,
    its dequantized float32 values): from the block scales in `raw` for evenly spaced types, from the
    distinct levels of each block otherwise."""
    if qt.name in _UNIFORM:
        per, steps = _UNIFORM[qt.name]
        s = steps(np.asarray(raw).reshape(-1, qt.type_size), qt.f16_offsets[0])
    else:
        per = min(LEVEL_BLOCK, qt.block_size)
        s = level_spacing(values, per)
    return np.repeat(s.reshape(-1), per).reshape(values.shape)


# -- the model ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorDither:
    """What was done to one tensor: `mse` is the mean squared difference between the written F16 values
    and the source's, `step_sq` the mean squared step; uniform noise of one step gives mse ~ step_sq / 12."""

    name: str
    source_type: str
    written_type: str
    n_values: int
    mse: float = 0.0
    step_sq: float = 0.0
    max_excess: float = 0.0   # max of (|written - source| - step/2) / half an F16 ulp of written: <= 1 (2 with values=)

    @property
    def dithered(self) -> bool:
        return self.written_type != self.source_type

    @property
    def noise_ratio(self) -> float:
        """mse / (step_sq / 12): 1 for noise of exactly one uniform step."""
        return 12 * self.mse / self.step_sq if self.step_sq > 0 else 0.0


@dataclass(frozen=True)
class DitherResult:
    path: Path
    seed: int
    noise: bool
    file_bytes: int
    tensors: tuple[TensorDither, ...]


def _tensor_seed(seed: int, name: str) -> np.random.Generator:
    """Each tensor's own stream: its noise does not depend on the tensors before it or on the slab size."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def _dequantize(raw: np.ndarray, qt: QType, n_rows: int, n_per_row: int) -> np.ndarray:
    """Whole rows of a quantized type as float32: the native to_float (bit-exact), else the gguf package's."""
    if qt.native:
        return dequantize(raw, qt, (n_rows, n_per_row))
    with np.errstate(all="ignore"):
        return gguf.quants.dequantize(np.asarray(raw).reshape(n_rows, -1), gguf.GGMLQuantizationType(qt.ggml_type))


def _as_float32(raw: np.ndarray, qt: QType, n_rows: int, n_per_row: int) -> np.ndarray:
    if qt.name in FLOAT_TYPES:
        return float32_rows(np.asarray(raw).reshape(n_rows, -1), qt.name)
    return _dequantize(raw, qt, n_rows, n_per_row)


def _check_values_model(src: Model, values: Model) -> None:
    for t in src.tensors:
        if t.name not in values:
            raise FileFormatError(f"{values.path}: has no tensor {quoted(t.name)} of {src.path}")
        v = values.tensor(t.name)
        if v.shape != t.shape:
            raise FileFormatError(f"{values.path}: tensor {quoted(t.name)} has shape {list(v.shape)}, "
                                  f"{src.path} has {list(t.shape)}")
        if t.qtype.quantized and v.qtype.quantized:
            raise FileFormatError(f"{values.path}: tensor {quoted(t.name)} is {v.type_name}; the values must be "
                                  "unquantized (F16, BF16 or F32)")


class _Dither:
    """Turns one quantized source tensor into dithered F16 bytes, slab by slab."""

    def __init__(self, t: TensorInfo, seed: int, noise: bool) -> None:
        self.t, self.noise = t, noise
        self.rng = _tensor_seed(seed, t.name)
        self.sq_err = self.sq_step = 0.0
        self.excess = 0.0

    def slab(self, raw: np.ndarray, given: np.ndarray | None, n_rows: int) -> np.ndarray:
        t = self.t
        src = _dequantize(raw, t.qtype, n_rows, t.n_per_row)
        step = value_steps(raw, t.qtype, src)
        x = src if given is None else given
        if self.noise:
            u = self.rng.random(x.shape, dtype=np.float32)
            x = x + (u - np.float32(0.5)) * step
        out = fp32_to_fp16(x)
        if invalid_data(out, F16):
            raise FileFormatError(f"tensor {quoted(t.name)}: a value does not fit F16 (|x| > 65504) or is NaN")
        d = out.astype(np.float32) - src
        self.sq_err += float(np.dot(d.ravel().astype(np.float64), d.ravel()))
        self.sq_step += float(np.dot(step.ravel().astype(np.float64), step.ravel()))
        half_ulp = np.spacing(np.abs(out)).astype(np.float32) / 2     # F16's own rounding of the noisy value
        self.excess = max(self.excess, float(((np.abs(d) - step / 2) / half_ulp).max()))
        return out

    def result(self) -> TensorDither:
        n = self.t.n_elements
        return TensorDither(self.t.name, self.t.type_name, "F16", n, self.sq_err / n, self.sq_step / n, self.excess)


def dithered_layout(src: Model) -> WriteLayout:
    """The output's metadata and tensors: the source's key/values (tokenizer and all) with
    general.file_type set to F16; quantized tensors become F16, the others keep their type; file order."""
    kvs = output_kvs(src.fields.values(), LLAMA_FTYPE_MOSTLY_F16)
    entries = []
    for t in src.tensors:
        qt = F16 if t.qtype.quantized else t.qtype
        entries.append(WriteTensor(t.name, t.shape, qt.ggml_type, t.n_elements // qt.block_size * qt.type_size))
    return WriteLayout(tuple(kvs), tuple(entries))


def _tensor_bytes(values: Model | None, t: TensorInfo, seed: int, noise: bool, sources: TensorSource,
                  value_sources: TensorSource | None) -> Iterator[tuple[np.ndarray, TensorDither | None]]:
    """The output bytes of tensor t in slabs; the last item carries the tensor's statistics."""
    row_in = t.qtype.row_bytes(t.n_per_row)
    if not t.qtype.quantized:
        for s in slabs(t, SLAB_VALUES):
            yield sources.read(t, s.row0 * row_in, (s.row1 - s.row0) * row_in), None
        yield np.empty(0, np.uint8), TensorDither(t.name, t.type_name, t.type_name, t.n_elements)
        return
    vt = values.tensor(t.name) if values is not None else None
    d = _Dither(t, seed, noise)
    for s in slabs(t, SLAB_VALUES):
        n = s.row1 - s.row0
        raw = sources.read(t, s.row0 * row_in, n * row_in)
        given = None
        if vt is not None and value_sources is not None:
            vrow = vt.qtype.row_bytes(vt.n_per_row)
            given = _as_float32(value_sources.read(vt, s.row0 * vrow, n * vrow), vt.qtype, n, t.n_per_row)
        yield d.slab(raw, given, n), None
    yield np.empty(0, np.uint8), d.result()


def dither_model(src: str | Path | Model, dst: str | Path, seed: int, *, noise: bool = True,
                 values: str | Path | Model | None = None) -> DitherResult:
    """Write the F16 model of `src` (a GGUF with quantized tensors) to `dst`, every quantized value plus
    U(-s/2, s/2) of its block's step s drawn from `seed` (noise=False: the plain dequantized model, the
    reference it is measured against). `values`: the source's F16/BF16/F32 conversion, whose values are
    dithered instead of the dequantized ones (the steps still come from `src`). Inputs are never written;
    the output appears under its name only when complete."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be an int >= 0, got {seed!r}")
    model = src if isinstance(src, Model) else Model(src)
    vmodel = values if isinstance(values, Model) or values is None else Model(values)
    if vmodel is not None:
        _check_values_model(model, vmodel)
    if not any(t.qtype.quantized for t in model.tensors):
        raise UsageError(f"{model.path}: holds no quantized tensor; there is no grid to dither away")
    inputs = list(model.parts) + (list(vmodel.parts) if vmodel is not None else [])
    final = check_destination(dst, inputs)
    layout = dithered_layout(model)
    check_space(final, layout.file_nbytes)
    stats: list[TensorDither] = []
    with ExitStack() as stack:
        sources = stack.enter_context(TensorSource(model))
        vsrc = stack.enter_context(TensorSource(vmodel)) if vmodel is not None else None
        out = stack.enter_context(AtomicOutput(final))
        out.write(layout.meta())
        for t, entry in zip(model.tensors, layout.tensors):
            n = 0
            for data, st in _tensor_bytes(vmodel, t, seed, noise, sources, vsrc):
                out.write(data)
                n += data.nbytes
                if st is not None:
                    stats.append(st)
            if n != entry.nbytes:
                raise AssertionError(f"{t.name}: wrote {n} bytes, the layout says {entry.nbytes}")
            out.zeros(pad(n, layout.alignment) - n)
        if out.written != layout.file_nbytes:
            raise AssertionError(f"wrote {out.written} bytes, the layout says {layout.file_nbytes}")
        out.commit()
    return DitherResult(final, seed, noise, layout.file_nbytes, tuple(stats))


# -- no type rebuilds the source ----------------------------------------------------------------------

@dataclass(frozen=True)
class Rebuild:
    """One tensor of the dithered model quantized back to its source type, against the source: the share of
    blocks whose bytes came back, and the mean squared error per value against the step's step^2/12."""

    name: str
    qtype: str
    same_blocks: float
    mse: float
    step_sq: float

    @property
    def identical(self) -> bool:
        return self.same_blocks == 1.0


def rebuild(source: str | Path | Model, dithered: str | Path | Model, out: str | Path,
            threads: int = 0) -> list[Rebuild]:
    """Quantize `dithered` back to the source's type of every tensor stored quantized (prism_native's
    quantize_model, llama-quantize's bytes) into `out`, and compare each with the source."""
    from ..write.quantize import quantize_model

    src = source if isinstance(source, Model) else Model(source)
    dit = dithered if isinstance(dithered, Model) else Model(dithered)
    types = {t.name: t.type_name for t in src.tensors if t.qtype.quantized}
    quantize_model(dit, out, types, threads=threads, progress=False)
    back = Model(out)
    rows = []
    for name, ty in types.items():
        t, b = src.tensor(name), back.tensor(name)
        qt = t.qtype
        if b.type_name != ty:
            raise AssertionError(f"{name}: requantized as {b.type_name}, asked for {ty}")
        a_raw, b_raw = np.asarray(src.raw(t)), np.asarray(back.raw(b))
        same = (a_raw.reshape(-1, qt.type_size) == b_raw.reshape(-1, qt.type_size)).all(axis=1).mean()
        x = _dequantize(a_raw, qt, t.n_rows, t.n_per_row)
        y = _dequantize(b_raw, qt, t.n_rows, t.n_per_row)
        step = value_steps(a_raw, qt, x)
        rows.append(Rebuild(name, ty, float(same), float(np.mean(np.square(y - x, dtype=np.float64))),
                            float(np.mean(np.square(step, dtype=np.float64)))))
    return rows
