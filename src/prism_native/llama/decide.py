"""llama-quantize's per-tensor type decision, as a pure function: `decide` gives every tensor the type
llama-quantize writes (src/llama-quant.cpp llama_tensor_get_type: dedicated flags, --tensor-type
patterns, --pure or the ftype's mix, then tensor_type_fallback), with the rule that chose it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from .. import qtypes
from ..gguf.constants import ggml_n_dims
from ..qtypes import QType
from ..read.model import Hparams, TensorInfo
from .ftypes import get_ftype
from .mix import OUTPUT, TOKEN_EMBD, Mix, category, requires_imatrix
from .options import QuantizeOptions
from .quantizable import llama_order, not_quantized_reason, sscanf_layer


class TensorLike(Protocol):
    name: str
    shape: tuple[int, ...]
    ggml_type: int


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as llama-quantize sees it, without its data; it serves as a tensor for `decide`.

    `quantizable` mirrors tensor_allows_quantization. `ne` is the ggml shape when known (ne0 ==
    n_per_row); without it a quantizable tensor reads as a 2-D matrix and any other as 1-D, since the
    type rules only look at the number of dimensions and, for MXFP4_MOE, at ne2 (the experts).
    """

    name: str
    n_per_row: int
    quantizable: bool = True
    source_type: str = "F16"
    ne: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        if self.ne:
            return self.ne
        return (self.n_per_row, 2) if self.quantizable else (self.n_per_row,)

    @property
    def ggml_type(self) -> int:
        return qtypes.get(self.source_type).ggml_type

    @classmethod
    def of(cls, t: TensorInfo, arch: str) -> "TensorSpec":
        """The spec of a tensor of an opened model."""
        return cls(t.name, t.n_per_row, not_quantized_reason(t.name, t.n_dims, arch) is None, t.type_name,
                   t.shape)


@dataclass(frozen=True)
class Decision:
    """What llama-quantize does with one tensor.

    rule is the step that chose the type:
    - pattern: a --tensor-type matched; `pattern` is its index;
    - token-embedding-type, output-tensor-type: those flags (they skip the fallback);
    - output-rule: the mix's rule for output.weight (and token_embd when the embeddings are tied);
    - mix: the ftype's mix;
    - default: --pure, or an unquantized ftype;
    - kept: not quantized (`reason` says why), or COPY.
    """

    name: str
    source: QType                # the type in the input file
    target: QType                # the type written (after the row-length fallback)
    rule: str
    reason: str | None = None    # why llama-quantize keeps the tensor, when kept
    n_per_row: int = 0
    wanted: QType | None = None  # the type before a row-length fallback, when one happened
    requires_imatrix: bool = False   # llama-quantize refuses to write it without --imatrix
    pattern: int | None = None   # index of the --tensor-type that chose the type (rule "pattern")

    @property
    def quantized(self) -> bool:
        """tensor_allows_quantization."""
        return self.rule != "kept"

    @property
    def requested(self) -> str | None:
        """The type asked for, before the fallback; None when kept."""
        return (self.wanted or self.target).name if self.quantized else None

    @property
    def written(self) -> str:
        """The type in the output file."""
        return self.target.name

    @property
    def fallback(self) -> bool:
        return self.wanted is not None

    @property
    def fits(self) -> bool:
        """False when a dedicated flag (no fallback) names a type the rows do not fit: --dry-run
        reports it, the real llama-quantize run aborts (GGML_ASSERT in gguf_set_tensor_type)."""
        return self.target.fits(self.n_per_row)

    @property
    def changed(self) -> bool:
        return self.target.ggml_type != self.source.ggml_type


def decide(tensors: Iterable[TensorLike], hp: Hparams, opts: QuantizeOptions) -> list[Decision]:
    """The type llama-quantize gives every tensor (llama_tensor_get_type), in llama's tensor order."""
    by_name = {t.name: t for t in tensors}
    names = llama_order(by_name)
    decider = _Decider(hp, opts, names)
    return [decider(by_name[n]) for n in names]


def hparams_from_names(names: Iterable[str]) -> Hparams:
    """Hparams for a tensor list without metadata: the block count from the blk.N names, nothing else.

    With no architecture, head counts or experts, the mix takes its plain branches (no Falcon, 70B,
    GQA >= 4 or 8-expert rules); pass the model's own Hparams where those may apply.
    """
    layers = [il for il in map(sscanf_layer, names) if il is not None]
    return Hparams(arch="", n_layer_all=max(layers) + 1 if layers else 0)


class _Decider:
    """llama_tensor_get_type for one llama-quantize run (the mix keeps counters across tensors)."""

    def __init__(self, hp: Hparams, opts: QuantizeOptions, names: Sequence[str]) -> None:
        self.hp, self.opts = hp, opts
        self.ft = get_ftype(opts.ftype)
        self.default = qtypes.get(self.ft.default)
        self.mix = Mix(hp, self.ft.name, opts, names)
        self.tet = qtypes.get(opts.token_embedding_type) if opts.token_embedding_type else None
        self.ott = qtypes.get(opts.output_tensor_type) if opts.output_tensor_type else None

    def __call__(self, t: TensorLike) -> Decision:
        name, src, ne0 = t.name, qtypes.get(t.ggml_type), t.shape[0]
        reason = not_quantized_reason(name, ggml_n_dims(t.shape), self.hp.arch,
                                      quantize_output_tensor=not self.opts.leave_output_tensor,
                                      only_copy=self.ft.name == "COPY")
        if reason is not None:
            return Decision(name, src, src, "kept", reason, ne0)
        target, rule, wanted, pattern = self._target(t)
        return Decision(name, src, target, rule, None, ne0, wanted,
                        requires_imatrix(name, target, self.ft.name), pattern)

    def _target(self, t: TensorLike) -> tuple[QType, str, QType | None, int | None]:
        """(type, rule that chose it, type before the row-length fallback or None, --tensor-type index)."""
        name, cat = t.name, category(t.name)
        rules = self.opts.tensor_types
        if self.tet is not None and cat == TOKEN_EMBD:
            # per_layer_token_embd may still be named by a --tensor-type; no fallback on this path
            if not (name == "per_layer_token_embd.weight" and any(r.matches(name) for r in rules)):
                return self.tet, "token-embedding-type", None, None
        if self.ott is not None and cat == OUTPUT:
            return self.ott, "output-tensor-type", None, None
        new, rule, hit = self.default, "default", None
        if not self.default.quantized:
            return new, rule, None, None
        hit = next((i for i, r in enumerate(rules) if r.matches(name)), None)
        if hit is not None:
            new, rule = rules[hit].qtype, "pattern"
        elif not self.opts.pure:
            rule = "output-rule" if self.mix.output_branch(cat) else "mix"
            new = qtypes.get(self.mix(self.default.name, name, t.shape, cat))
        eff = qtypes.effective(new, t.shape[0])
        return (eff, rule, new, hit) if eff.ggml_type != new.ggml_type else (new, rule, None, hit)
