"""Everything about an output file that is decided before the first tensor is computed.

This follows the part of llama_model_quantize_impl (src/llama-quant.cpp) before its main loop, and
the checks its main loop makes per tensor, so that every refusal happens before anything is written:
the type of every tensor (llama/decide.decide: llama_tensor_get_type with the fallback), the importance
matrix entries llama-quantize would use (tools/quantize/quantize.cpp prepare_imatrix: --exclude-weights,
then --include-weights, by substring; an entry is used when it has ne[0] * ne[2] values), the tensors
that need an imatrix, the requantization check, general.file_type, the key/values it adds and the
resulting layout (llama/sizes.output_layout, the same function that predicts the size).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .. import qtypes
from ..errors import RecipeError, UsageError
from ..gguf.constants import KEY_FILE_TYPE
from ..gguf.writer import KV, WriteLayout
from ..llama.command import QuantizeCommand
from ..llama.decide import Decision, TensorSpec, decide
from ..llama.ftypes import FTYPES, get_ftype, parse_ftype
from ..llama.options import QuantizeOptions
from ..llama.quantizable import llama_order
from ..llama.sizes import imatrix_kv, output_layout
from ..plan.recipe import Recipe, build_recipe
from ..qtypes import QType
from ..quant import FLOAT_TYPES
from ..read.imatrix import Imatrix, load_imatrix
from ..read.model import Model, TensorInfo
from .kv_override import parse_kv_override
from .prune import Pruning, parse_prune_layers

LLAMA_FTYPE_GUESSED = 1024
TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")   # tensor_name_match_token_embd
# llama_model_loader::load_stats: the ftype guessed from the most common tensor type
_GUESSED_FTYPE = {"F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7,
                  "Q2_K": 10, "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "TQ1_0": 36, "TQ2_0": 37,
                  "IQ2_XXS": 19, "IQ2_XS": 20, "IQ2_S": 28, "IQ3_XXS": 23, "IQ1_S": 24, "IQ1_M": 31,
                  "IQ4_NL": 25, "IQ4_XS": 30, "IQ3_S": 26, "NVFP4": 39, "Q1_0": 40, "Q2_0": 41}


@dataclass(frozen=True)
class QuantizeParams:
    """The llama_model_quantize_params prism_native carries out (others are refused where they are read)."""

    options: QuantizeOptions
    imatrix: Imatrix | None = None
    imatrix_name: str | None = None        # written to quantize.imatrix.file: the path as it was given
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    kv_overrides: tuple[KV, ...] = ()
    allow_requantize: bool = False
    prune_layers: tuple[int, ...] = ()     # --prune-layers, sorted and unique


@dataclass(frozen=True)
class TensorJob:
    """One tensor of the output: its source, the type it is written as, and its importance slices."""

    info: TensorInfo
    target: QType
    imatrix: np.ndarray | None = None     # (ne[2], ne[0]) float32, when converted with importance weights
    name: str = ""                        # the name in the output (--prune-layers renumbers blocks)

    @property
    def converted(self) -> bool:
        """llama-quantize's `quantize = cur_type != new_type`; otherwise the bytes are copied."""
        return self.target.ggml_type != self.info.ggml_type


@dataclass(frozen=True)
class Job:
    model: Model
    ftype: str
    tensors: tuple[TensorJob, ...]        # llama's tensor order, the order of the file
    layout: WriteLayout
    notes: tuple[str, ...] = field(default=())   # what llama-quantize would log as a warning

    @property
    def file_bytes(self) -> int:
        return self.layout.file_nbytes

    @property
    def input_bytes(self) -> int:
        return sum(t.info.n_bytes for t in self.tensors)


# -- the three ways to say what to write -------------------------------------------------------------

HPARAM_KEYS = ("block_count", "nextn_predict_layers", "expert_count", "attention.head_count",
               "attention.head_count_kv", "embedding_length")


def params_from_command(cmd: QuantizeCommand, *, imatrix: Imatrix | None = None) -> QuantizeParams:
    """A parsed llama-quantize command line. --keep-split (several output files) is refused; --dry-run is
    the caller's to honour; --max-buffer-size only bounds llama-quantize's memory and changes no byte."""
    if cmd.keep_split:
        raise RecipeError("--keep-split (one output file per input part) is not supported: write one file and "
                          "split it with llama-gguf-split")
    prune = parse_prune_layers(cmd.prune_layers) if cmd.prune_layers is not None else ()
    opts = replace(cmd.options(), imatrix=False)        # build_job sets it from the imatrix entries used
    if cmd.imatrix is not None and imatrix is None:
        imatrix = load_imatrix(cmd.imatrix)
    return QuantizeParams(opts, imatrix, cmd.imatrix, tuple(cmd.include_weights), tuple(cmd.exclude_weights),
                          tuple(parse_kv_override(o) for o in cmd.override_kv), cmd.allow_requantize, prune)


def params_from_recipe(recipe: Recipe, *, imatrix: Imatrix | None = None,
                       imatrix_name: str | None = None) -> QuantizeParams:
    """A built recipe (a plan's): its ftype argument and --tensor-type patterns, --allow-requantize."""
    return QuantizeParams(QuantizeOptions(ftype=recipe.base_type, tensor_types=recipe.overrides), imatrix,
                          _imatrix_name(imatrix, imatrix_name), allow_requantize=True)


def params_from_types(model: Model, types: Mapping[str, str | QType] | str, *, imatrix: Imatrix | None = None,
                      imatrix_name: str | None = None) -> QuantizeParams:
    """An ftype name ("Q4_K_M", as llama-quantize's type argument) or a type per tensor. A mapping is
    turned into a recipe (plan/recipe.build_recipe): quantizable tensors it does not name keep their
    type; naming a tensor the model lacks, or one llama-quantize never quantizes, is an error."""
    if isinstance(types, str):
        ft = parse_ftype(types)
        if ft is None:
            raise UsageError(f"unknown ftype '{types}' (known: {', '.join(FTYPES)})")
        get_ftype(ft)
        return QuantizeParams(QuantizeOptions(ftype=ft), imatrix, _imatrix_name(imatrix, imatrix_name),
                              allow_requantize=True)
    specs = {t.name: TensorSpec.of(t, model.arch) for t in model.tensors}
    missing = [n for n in types if n not in model]
    if missing:
        raise RecipeError(f"the types name {len(missing)} tensor(s) the model lacks: {', '.join(missing[:3])}")
    fixed = {n: qtypes.get(v).name if isinstance(v, str) else v.name for n, v in types.items()}
    kept = [n for n in fixed if not specs[n].quantizable]
    if kept:
        raise RecipeError(f"llama-quantize never quantizes {kept[0]}; leave it out of the types")
    plan = {s.name: fixed.get(s.name, s.source_type) for s in specs.values() if s.quantizable}
    recipe = build_recipe(list(specs.values()), plan, hparams=model.hparams)
    return params_from_recipe(recipe, imatrix=imatrix, imatrix_name=imatrix_name)


def _imatrix_name(imatrix: Imatrix | None, name: str | None) -> str | None:
    if imatrix is None:
        return None
    return name if name is not None else str(imatrix.path)


# -- the job ------------------------------------------------------------------------------------------


def select_imatrix(params: QuantizeParams) -> dict[str, np.ndarray]:
    """prepare_imatrix: --exclude-weights drops every entry whose name contains one of its strings, then
    --include-weights keeps only the entries that contain one of its strings."""
    if params.imatrix is None:
        return {}
    data = dict(params.imatrix.entries)
    for s in params.exclude_weights:
        data = {k: v for k, v in data.items() if s not in k}
    if params.include_weights:
        data = {k: v for k, v in data.items() if any(s in k for s in params.include_weights)}
    return data


def copy_file_type(model: Model) -> int:
    """llama_model_loader's ftype, which COPY writes: general.file_type, else guessed from the most common
    tensor type (the first to reach the top count, in llama's order) with LLAMA_FTYPE_GUESSED set."""
    ft = model.kv(KEY_FILE_TYPE)
    if isinstance(ft, int):
        return ft
    by_name = {t.name: t.type_name for t in model.tensors}
    counts: dict[str, int] = {}
    top, top_type = 0, "F32"
    for name in llama_order(by_name):
        ty = by_name[name]
        counts[ty] = counts.get(ty, 0) + 1
        if counts[ty] > top:
            top, top_type = counts[ty], ty
    return _GUESSED_FTYPE.get(top_type, 0) | LLAMA_FTYPE_GUESSED


def _check_overrides(model: Model, kvs: Sequence[KV]) -> None:
    """The loader applies --override-kv to the hyper-parameters the type rules read; refused here, since
    the decisions are made from the file's own values."""
    read = {"general.architecture"} | {f"{model.arch}.{k}" for k in HPARAM_KEYS}
    for kv in kvs:
        if kv.name in read:
            raise RecipeError(f"--override-kv {kv.name}: it changes a hyper-parameter llama-quantize's type rules "
                              "read; not supported (edit the input's metadata instead)")


def _tensor_job(d: Decision, t: TensorInfo, data: dict[str, np.ndarray], params: QuantizeParams,
                notes: list[str]) -> TensorJob:
    """The main loop's checks for one tensor, in its order: imatrix lookup, missing imatrix for a
    low-bit type, requantization, and whether prism_native can compute the conversion at all."""
    if not d.fits:
        raise RecipeError(f"{t.name}: {d.target.name} from --{d.rule} does not fit rows of {t.n_per_row} values "
                          "(those flags skip the fallback; llama-quantize aborts)")
    job = TensorJob(t, d.target, name=d.name)
    if not job.converted:
        return job
    w = None
    if data:
        entry = data.get(t.name)
        n_mat = t.shape[2] if len(t.shape) > 2 else 1
        if entry is None:
            notes.append(f"did not find importance weights for {t.name}")
        elif entry.size == t.n_per_row * n_mat:
            w = entry.reshape(n_mat, t.n_per_row)
        elif t.name not in TOKEN_EMBD_NAMES:
            where = f"{params.imatrix.path}: " if params.imatrix is not None else ""
            raise RecipeError(f"{where}imatrix size {entry.size} is different from tensor size "
                              f"{t.n_per_row * n_mat} for {t.name}")
        else:
            notes.append(f"imatrix size {entry.size} is different from tensor size {t.n_per_row * n_mat} for "
                         f"{t.name}; quantized without importance weights")
    if w is None and d.requires_imatrix:
        raise RecipeError(f"missing importance matrix for tensor {t.name} in a very low-bit quantization "
                          f"({d.target.name})")
    if w is None and d.target.needs_imatrix:  # on token_embd/output: ggml_quantize_chunk asserts
        raise RecipeError(f"{t.name}: ggml quantizes {d.target.name} only with importance weights, and there are "
                          "none for it (llama-quantize aborts)")
    if t.qtype.quantized and not params.allow_requantize:
        raise RecipeError(f"requantizing from type {t.type_name} is disabled ({t.name}); add --allow-requantize")
    src, tgt = t.qtype, d.target
    if src.name not in FLOAT_TYPES and not src.native:
        raise RecipeError(f"{t.name}: converting from {src.name} needs its dequantizer, which prism_native does not "
                          "have; keep the tensor's type or use llama-quantize")
    if tgt.name not in FLOAT_TYPES and not tgt.native:
        raise RecipeError(f"{t.name}: prism_native has no quantizer for {tgt.name}; use llama-quantize for it")
    if len(t.shape) > 3 and any(x > 1 for x in t.shape[3:]):
        raise RecipeError(f"{t.name}: a 4-D tensor cannot be converted (llama-quantize's rows stop at ne[2])")
    return replace(job, imatrix=w)


def _renamed(model: Model, pruning: Pruning | None) -> dict[str, TensorInfo]:
    """The tensors of the output by their output names (all of them, under their own, without pruning)."""
    if pruning is None:
        return {t.name: t for t in model.tensors}
    return {new: model.tensor(old) for old, new in pruning.names.items() if new is not None}


def build_job(model: Model, params: QuantizeParams) -> Job:
    """The types, importance slices, key/values and layout of the output of `params` on `model`."""
    data = select_imatrix(params)
    opts = replace(params.options, imatrix=bool(data))
    ft = get_ftype(opts.ftype)
    _check_overrides(model, params.kv_overrides)
    pruning = Pruning.of(llama_order(t.name for t in model.tensors), params.prune_layers) if params.prune_layers \
        else None
    source = _renamed(model, pruning)          # output name -> the input tensor it comes from
    decisions = decide([replace(TensorSpec.of(t, model.arch), name=n) for n, t in source.items()],
                       model.hparams, opts)
    needs = next((d for d in decisions if d.quantized and d.requires_imatrix), None)
    if needs is not None and not data:      # the preliminary loop's check, before any tensor's own
        raise RecipeError(f"this quantization requires an importance matrix: {needs.name} gets {needs.target.name}")
    notes: list[str] = []
    jobs = [_tensor_job(d, source[d.name], data, params, notes) for d in decisions]
    extra = list(params.kv_overrides)
    if data:
        im = params.imatrix
        assert im is not None
        extra += imatrix_kv(params.imatrix_name or str(im.path), im.datasets[0] if im.datasets else None,
                            im.chunk_count > 0, entries=len(data), chunks=im.chunk_count)
    if pruning is not None:     # set after the overrides, so it comes last
        extra.append(KV.u32(f"{model.arch}.block_count", pruning.block_count))
    file_type = copy_file_type(model) if ft.name == "COPY" else ft.llama_ftype
    layout = output_layout(model, {j.info.name: j.target for j in jobs}, extra_kv=extra, file_type=file_type,
                           rename=None if pruning is None else pruning.names)
    if [e.name for e in layout.tensors] != [j.name for j in jobs]:
        raise AssertionError("layout and decisions disagree on the tensor order")
    align = model.kv("general.alignment")
    if isinstance(align, int) and align != layout.alignment:
        notes.append(f"the input sets general.alignment = {align}; llama-quantize keeps the key but aligns the "
                     f"data to {layout.alignment}, so llama.cpp may refuse to load the output")
    return Job(model, ft.name, tuple(jobs), layout, tuple(notes))
