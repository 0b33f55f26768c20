"""llama-quantize's per-tensor type decision, as a pure function.

Follows llama.cpp src/llama-quant.cpp (commit 0c1e5709): tensor_allows_quantization,
tensor_get_category, llama_tensor_get_type, llama_tensor_get_type_impl (the "mix" of each ftype and
its counters i_attention_wv / i_ffn_down / i_ffn_gate / i_ffn_up), tensor_type_fallback and
tensor_requires_imatrix; and tools/quantize/quantize.cpp for the ftype names (try_parse_ftype) and
--tensor-type parsing.
This is an independent re-implementation, not a copy; the C++ routine each part follows is named.

--tensor-type patterns: llama-quantize lower-cases NAME, compiles it as std::regex (ECMAScript) and
uses regex_search (unanchored), first match wins. Python's `re` is used with these adjustments
(checked against libstdc++'s std::regex through llama-quantize --dry-run):
  * re.ASCII, because ECMAScript \\d \\w \\s \\b are ASCII-only (Python's are Unicode);
  * an escaped letter without ECMAScript meaning is the letter itself (\\A, lower-cased to \\a, matches
    "a"; Python would read BEL); `[^]` (any character) and `[]` (nothing) are translated;
  * nested quantifiers a++ a*+ a?+ (std::regex: (a+)+ ...) become a+ a* a* (Python: possessive);
  * rejected, where std::regex fails or matches differently: `(?P<..>`, `(?i)`, lookbehind `(?<=`,
    `{,n}`, `\\cX`, `{n,m}+`;
  * `$` cannot differ: it only differs before a final newline, which tensor names never contain.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from .. import qtypes
from ..errors import PrismError
from ..read.model import Hparams, Model, ggml_n_dims
from ..qtypes import QType

# -- ftypes (tools/quantize/quantize.cpp QUANT_OPTIONS, llama_ftype_get_default_type) ----------------


@dataclass(frozen=True)
class Ftype:
    name: str          # llama-quantize spelling
    llama_ftype: int   # LLAMA_FTYPE_* value written to general.file_type
    default: str       # ggml type of the tensors the mix does not special-case


FTYPES: dict[str, Ftype] = {f.name: f for f in (
    Ftype("Q1_0", 40, "Q1_0"), Ftype("Q4_0", 2, "Q4_0"), Ftype("Q4_1", 3, "Q4_1"),
    Ftype("MXFP4_MOE", 38, "MXFP4"), Ftype("Q5_0", 8, "Q5_0"), Ftype("Q5_1", 9, "Q5_1"),
    Ftype("IQ2_XXS", 19, "IQ2_XXS"), Ftype("IQ2_XS", 20, "IQ2_XS"), Ftype("IQ2_S", 28, "IQ2_XS"),
    Ftype("IQ2_M", 29, "IQ2_S"), Ftype("IQ1_S", 24, "IQ1_S"), Ftype("IQ1_M", 31, "IQ1_M"),
    Ftype("TQ1_0", 36, "TQ1_0"), Ftype("TQ2_0", 37, "TQ2_0"), Ftype("Q2_K", 10, "Q2_K"),
    Ftype("Q2_K_S", 21, "Q2_K"), Ftype("IQ3_XXS", 23, "IQ3_XXS"), Ftype("IQ3_S", 26, "IQ3_S"),
    Ftype("IQ3_M", 27, "IQ3_S"), Ftype("IQ3_XS", 22, "IQ3_S"), Ftype("Q3_K_S", 11, "Q3_K"),
    Ftype("Q3_K_M", 12, "Q3_K"), Ftype("Q3_K_L", 13, "Q3_K"), Ftype("IQ4_NL", 25, "IQ4_NL"),
    Ftype("IQ4_XS", 30, "IQ4_XS"), Ftype("Q4_K_S", 14, "Q4_K"), Ftype("Q4_K_M", 15, "Q4_K"),
    Ftype("Q5_K_S", 16, "Q5_K"), Ftype("Q5_K_M", 17, "Q5_K"), Ftype("Q6_K", 18, "Q6_K"),
    Ftype("Q8_0", 7, "Q8_0"), Ftype("F16", 1, "F16"), Ftype("BF16", 32, "BF16"),
    Ftype("F32", 0, "F32"), Ftype("COPY", 0, "F32"),
)}
# QUANT_OPTIONS lists each alias just before the name it stands for (same LLAMA_FTYPE number)
FTYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# ftypes llama-quantize knows that prism_native cannot model: name -> (LLAMA_FTYPE number, why)
UNSUPPORTED_FTYPES = {"Q2_0": (41, "its tensor type Q2_0 is unknown to the gguf package")}


def get_ftype(name: str | int) -> Ftype:
    """An ftype by llama-quantize name (any case, aliases Q3_K/Q4_K/Q5_K) or LLAMA_FTYPE number."""
    if isinstance(name, int) or str(name).strip().isdigit():
        num = int(name)
        for f in FTYPES.values():
            if f.llama_ftype == num:
                return f
        _reject_unsupported(_unsupported_numbered(num) or "")
        raise PrismError(f"unknown ftype number {num}")
    key = str(name).strip().upper()
    key = FTYPE_ALIASES.get(key, key)
    _reject_unsupported(key)
    if key not in FTYPES:
        raise PrismError(f"unknown ftype '{name}' (known: {', '.join(FTYPES)})")
    return FTYPES[key]


def _unsupported_numbered(num: int) -> str | None:
    return next((k for k, (n, _) in UNSUPPORTED_FTYPES.items() if n == num), None)


def _reject_unsupported(key: str) -> None:
    if key in UNSUPPORTED_FTYPES:
        raise PrismError(f"ftype {key} is not supported: {UNSUPPORTED_FTYPES[key][1]}")


def stoi(arg: str) -> int | None:
    """std::stoi: optional blanks and sign, then the longest digit prefix ("8b.gguf" -> 8)."""
    m = re.match(r"\s*[+-]?[0-9]+", arg)
    return int(m.group(0)) if m else None


def parse_ftype(arg: str) -> str | None:
    """try_parse_ftype (quantize.cpp): an ftype name (any case) or a number -> the name as QUANT_OPTIONS
    spells it (the first entry with that number: an alias before its full name, F32 before COPY); None
    if `arg` is neither. llama-quantize uses this to tell the ftype from an output path."""
    key = arg.upper()
    if key in FTYPES or key in FTYPE_ALIASES or key in UNSUPPORTED_FTYPES:
        return key
    num = stoi(arg)
    if num is None:
        return None
    alias = next((a for a, full in FTYPE_ALIASES.items() if FTYPES[full].llama_ftype == num), None)
    return alias or next((f.name for f in FTYPES.values() if f.llama_ftype == num), _unsupported_numbered(num))


# -- what llama-quantize quantizes (tensor_allows_quantization) --------------------------------------

# substrings that keep a tensor out of quantization, with the reason shown to users
_NEVER: tuple[tuple[str, str], ...] = (
    ("_norm.weight", "norm"),
    ("ffn_gate_inp.weight", "expert router (ffn_gate_inp)"),
    ("ffn_gate_tid2eid.weight", "expert routing table"),
    ("altup", "altup (tiny)"),
    ("laurel", "laurel (tiny)"),
    ("per_layer_model_proj", "per_layer_model_proj (kept as is)"),
)
_NEVER_AFTER_POS: tuple[tuple[str, str], ...] = (
    ("ssm_conv1d", "ssm_conv1d (small conv)"),
    ("shortconv.conv.weight", "short conv (small)"),
    ("indexer.k_proj.weight", "indexer projection (tiny)"),
    ("indexer.q_proj.weight", "indexer projection (tiny)"),
)
_GLM5_NEXT_NEVER = ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
                    "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
                    "attn_v_b.weight")
_RWKV_NEVER = tuple(f"time_mix_{s}.weight" for s in (
    "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2", "decay_w1", "decay_w2",
    "lerp_fused"))
_MULTIMODAL_NEVER = (".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
                     ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")


def _ends_with_weight(name: str) -> bool:
    # C++: name.rfind("weight") == name.size() - 6; with size_t wrap-around a 5-character name without
    # "weight" also passes (npos == size-6). Mirrored for exactness; real tensor names are longer.
    return name.endswith("weight") or (len(name) == 5)


def not_quantized_reason(name: str, n_dims: int, arch: str, *, quantize_output_tensor: bool = True,
                         only_copy: bool = False) -> str | None:
    """Why llama-quantize leaves a tensor as it is, or None if it quantizes it."""
    if only_copy:
        return "COPY keeps every tensor"
    if n_dims < 2:
        return "1-D"
    if not _ends_with_weight(name):
        return "not a weight"
    for sub, why in _NEVER[:1]:
        if sub in name:
            return why
    if not quantize_output_tensor and name == "output.weight":
        return "--leave-output-tensor"
    for sub, why in _NEVER[1:]:
        if sub in name:
            return why
    if name in ("position_embd.weight", "token_types.weight"):
        return "positional/token-type embedding"
    for sub, why in _NEVER_AFTER_POS:
        if sub in name:
            return why
    if arch == "glm5-next" and any(s in name for s in _GLM5_NEXT_NEVER):
        return "glm5-next keeps it"
    if any(s in name for s in _RWKV_NEVER):
        return "RWKV time_mix (small)"
    if "attn_rel_b.weight" in name:
        return "relative position bias"
    if any(s in name for s in _MULTIMODAL_NEVER):
        return "multimodal embedding/codebook"
    return None


# -- categories (tensor_get_category) -----------------------------------------------------------------

OUTPUT, TOKEN_EMBD, ATTN_QKV, ATTN_KV_B, ATTN_V, ATTN_K, ATTN_Q, ATTN_OUTPUT = (
    "output", "token_embd", "attn_qkv", "attn_kv_b", "attn_v", "attn_k", "attn_q", "attn_output")
FFN_UP, FFN_GATE, FFN_DOWN, OTHER = "ffn_up", "ffn_gate", "ffn_down", "other"
_ATTN_V_LIKE = (ATTN_V, ATTN_QKV, ATTN_KV_B)  # category_is_attn_v


def category(name: str) -> str:
    if name == "output.weight":
        return OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return TOKEN_EMBD
    for sub, cat in (("attn_qkv.weight", ATTN_QKV), ("attn_kv_b.weight", ATTN_KV_B),
                     ("attn_v.weight", ATTN_V), ("attn_k.weight", ATTN_K), ("attn_q.weight", ATTN_Q),
                     ("attn_output.weight", ATTN_OUTPUT), ("ffn_up", FFN_UP), ("ffn_gate", FFN_GATE),
                     ("ffn_down", FFN_DOWN)):
        if sub in name:
            return cat
    return OTHER


# -- tensor order (llama_model_loader::weight_name_comparer) ----------------------------------------

_SSCANF_BLK = re.compile(r"blk\.\s*([+-]?\d+)")


def _sscanf_layer(name: str) -> int | None:
    """sscanf(name, "blk.%d.", &il) == 1: the trailing '.' is not needed for the count to be 1."""
    m = _SSCANF_BLK.match(name)
    return int(m.group(1)) if m else None


def llama_order(names: Iterable[str]) -> list[str]:
    """Names sorted as llama's model loader keeps them: by block number (-1 if none), then bytewise."""
    def key(n: str) -> tuple[int, bytes]:
        il = _sscanf_layer(n)
        return (-1 if il is None else il, n.encode())
    return sorted(names, key=key)


# -- --tensor-type patterns ---------------------------------------------------------------------------

# escapes ECMAScript gives a meaning (lower case only: llama-quantize lower-cases the pattern); any other
# letter is an identity escape there (libstdc++: "\\attn" matches "attn"), while Python reads \\a as BEL
# and rejects \\q or \\z
_ECMA_ESCAPES = frozenset("dswbfnrtvxu")


def _python_regex(pattern: str) -> str:
    """Translate an (already lower-cased) ECMAScript pattern to Python `re`, rejecting what differs."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        nxt = pattern[i + 1:i + 2]
        if c == "\\":
            if nxt == "c":
                raise ValueError("control escapes (\\cX) are not supported")
            out.append(nxt if nxt.isalpha() and nxt.isascii() and nxt not in _ECMA_ESCAPES
                       else pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            if pattern.startswith("[^]", i):   # ECMAScript: any character
                out.append(r"[\s\S]")
                i += 3
                continue
            if pattern.startswith("[]", i):    # ECMAScript: matches nothing
                out.append(r"(?!)")
                i += 2
                continue
            in_class = True
        elif c == "(" and nxt == "?" and pattern[i + 2:i + 3] not in (":", "=", "!"):
            raise ValueError(f"'{pattern[i:i + 3]}' is not ECMAScript syntax (std::regex rejects it or, for "
                             "lookbehind, matches differently)")
        elif c == "{" and nxt == ",":
            raise ValueError("'{,n}' is not a valid ECMAScript quantifier")
        elif c in "*+?" and nxt == "+" and out and out[-1] not in "(|":
            # nested quantifier: std::regex reads a++ as (a+)+, Python as possessive; a+ / a* match the
            # same strings as (a+)+ / (a*)+ and (a?)+
            out.append("+" if c == "+" else "*")
            i += 2
            continue
        elif c == "}" and nxt == "+":
            raise ValueError("'{n,m}+' (a nested quantifier) is not supported")
        out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class TensorTypeRule:
    """One --tensor-type NAME=TYPE, as llama-quantize parses it (NAME lower-cased)."""

    pattern: str
    qtype: QType
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> "TensorTypeRule":
        """`NAME=TYPE` (parse_tensor_type): split at the first '=', NAME lower-cased."""
        name, sep, tname = spec.partition("=")
        if not sep:
            raise PrismError(f"malformed tensor type '{spec}' (expected NAME=TYPE)")
        if not name:
            raise PrismError(f"missing tensor name in '{spec}'")
        if not tname:
            raise PrismError(f"missing quantization type in '{spec}'")
        return cls.make(name, tname)

    @classmethod
    def make(cls, pattern: str, qtype: str | int | QType) -> "TensorTypeRule":
        low = pattern.lower()
        try:
            rx = re.compile(_python_regex(low), re.ASCII)
        except ValueError as e:
            raise PrismError(f"--tensor-type pattern '{pattern}': {e}") from None
        except re.error as e:
            raise PrismError(f"--tensor-type pattern '{pattern}' is not a valid regex: {e}") from None
        qt = qtype if isinstance(qtype, QType) else qtypes.get(qtype)
        return cls(low, qt, rx)

    def matches(self, name: str) -> bool:
        return self.regex.search(name) is not None


# -- options and decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeOptions:
    """The llama-quantize flags that influence tensor types."""

    ftype: str = "Q8_0"
    pure: bool = False
    tensor_types: tuple[TensorTypeRule, ...] = ()
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    imatrix: bool = False

    @classmethod
    def build(cls, ftype: str, *, tensor_types: Sequence[str | tuple[str, str]] = (),
              **kw: object) -> "QuantizeOptions":
        rules = tuple(TensorTypeRule.parse(t) if isinstance(t, str) else TensorTypeRule.make(*t)
                      for t in tensor_types)
        return cls(ftype=ftype, tensor_types=rules, **kw)  # type: ignore[arg-type]


class TensorLike(Protocol):
    name: str
    shape: tuple[int, ...]
    ggml_type: int


@dataclass(frozen=True)
class Decision:
    name: str
    source: QType
    target: QType
    quantized: bool            # tensor_allows_quantization
    reason: str | None         # why not, when not quantized
    # kept | token-embedding-type | output-tensor-type | pattern (a --tensor-type) | default (--pure, or an unquantized
    # ftype) | output-rule (the mix's branch for output and tied token_embd) | mix
    rule: str
    n_per_row: int = 0
    wanted: QType | None = None  # the type before a row-length fallback, when one happened
    requires_imatrix: bool = False
    pattern: int | None = None   # index of the --tensor-type that chose the type (rule "pattern")

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


def is_quantized(t: QType) -> bool:  # ggml_is_quantized
    return t.name not in ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64")


def _c_mod(a: int, b: int) -> int:
    """C's % (truncates toward zero)."""
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or _c_mod(i_layer - n_layers // 8, 3) == 2)


def is_70b(hp: Hparams) -> bool:
    """llama_model::type == LLM_TYPE_70B, as the architectures' load_hparams decide it."""
    n = hp.n_layer
    if hp.arch == "llama":
        return hp.n_expert != 8 and n == 80 and hp.n_head != hp.n_head_kv
    return (hp.arch, n) in {("deci", 80), ("olmo", 80), ("qwen2", 80), ("jais2", 68)}


_IQ_LOW_OUTPUT = ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
_IQ_LOW = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
_IMATRIX_TYPES = ("IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S")
_ATTN_OUT_MOE_Q5K = ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                     "IQ3_M", "IQ4_XS")


class _Mix:
    """llama_tensor_get_type_impl with its quantize_state_impl counters (one per decide() call)."""

    def __init__(self, hp: Hparams, ftype: str, opts: QuantizeOptions, names: Sequence[str]) -> None:
        self.hp, self.ft, self.opts = hp, ftype, opts
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(c in _ATTN_V_LIKE for c in cats)
        self.tied = OUTPUT not in cats
        self.n_ffn = hp.n_layer_all  # n_ffn_down = n_ffn_gate = n_ffn_up
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_gqa = hp.n_gqa
        self.is_70b = is_70b(hp)

    def output_branch(self, cat: str) -> bool:
        """The mix's rule for output.weight, which token_embd takes too when embeddings are tied."""
        return cat == OUTPUT or (self.tied and cat == TOKEN_EMBD)

    def _layer(self, counter: int, name: str) -> tuple[int, int]:
        """layer_info: the running counter, or the block number parsed from the name for MoE."""
        n_layer = self.n_ffn
        if max(1, self.hp.n_expert) > 1:
            il = _sscanf_layer(name)
            if il is None:
                raise PrismError(f"failed to determine layer for tensor {name}")
            if not 0 <= il < n_layer:
                raise PrismError(f"bad layer {il} for tensor {name}: must be in [0, {n_layer})")
            return il, n_layer
        return counter, n_layer

    def __call__(self, new: str, name: str, shape: Sequence[int], cat: str) -> str:
        hp, ft, arch = self.hp, self.ft, self.hp.arch
        if arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            if new not in ("F32", "BF16", "F16"):
                return "Q8_0"
        if self.output_branch(cat):
            if self.opts.output_tensor_type:
                new = qtypes.get(self.opts.output_tensor_type).name
            elif ft == "MXFP4_MOE":
                new = "Q8_0"
            elif arch == "falcon" or shape[0] % qtypes.get(new).block_size:
                new = "Q8_0"
            elif ft in _IQ_LOW_OUTPUT:
                new = "Q5_K"
            elif new != "Q8_0":
                new = "Q6_K"
        elif ft == "MXFP4_MOE":
            expert_role = cat in (FFN_UP, FFN_GATE, FFN_DOWN)
            ne2 = shape[2] if len(shape) > 2 else 1
            new = "MXFP4" if ne2 > 1 and (arch != "bailingmoe3" or expert_role) else "Q8_0"
        elif cat == TOKEN_EMBD:
            if self.opts.token_embedding_type:
                new = qtypes.get(self.opts.token_embedding_type).name
            elif ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
                new = "Q2_K"
            elif ft in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
                new = "IQ3_S"
            elif ft in ("TQ1_0", "TQ2_0", "Q2_0"):
                new = "Q4_K"
        elif ft in _IQ_LOW:
            new = self._iq_low(new, cat)
        elif cat in _ATTN_V_LIKE:
            new = self._attn_v(new)
        elif cat == ATTN_K:
            if hp.n_expert == 8:
                new = "Q8_0"
            elif ft == "IQ3_XS":
                new = "IQ3_XXS"
            elif ft == "IQ3_XXS":
                new = "IQ2_S"
        elif cat == ATTN_Q:
            if ft == "IQ3_XS":
                new = "IQ3_XXS"
            elif ft == "IQ3_XXS":
                new = "IQ2_S"
        elif cat == FFN_DOWN:
            new = self._ffn_down(new, name)
        elif cat == ATTN_OUTPUT:
            new = self._attn_output(new)
        # (the C++ ATTENTION_QKV branch that follows is unreachable: attn_qkv is attn_v-like above)
        elif cat in (FFN_GATE, FFN_UP):
            counter = self.i_ffn_gate if cat == FFN_GATE else self.i_ffn_up
            il, nl = self._layer(counter, name)
            if ft == "IQ3_XS" and nl // 8 <= il < 7 * nl // 8:
                new = "IQ3_XXS"
            if cat == FFN_GATE:
                self.i_ffn_gate += 1
            else:
                self.i_ffn_up += 1
        return new

    def _iq_low(self, new: str, cat: str) -> str:
        hp, ft = self.hp, self.ft
        iq2sm = ft in ("IQ2_S", "IQ2_M")
        if cat in _ATTN_V_LIKE:
            if self.n_gqa >= 4 or hp.n_expert >= 4:
                new = "Q4_K"
            else:
                new = "IQ3_S" if iq2sm else "Q2_K"
            self.i_attention_wv += 1
        elif hp.n_expert == 8 and cat == ATTN_K:
            new = "Q4_K"
        elif cat == FFN_DOWN:
            if self.i_ffn_down < self.n_ffn // 8:
                new = "IQ3_S" if iq2sm else "Q2_K"
            self.i_ffn_down += 1
        elif cat == ATTN_OUTPUT:
            if hp.n_expert == 8:
                new = "Q5_K"
            elif ft in ("IQ1_S", "IQ1_M"):
                new = "IQ2_XXS"
            elif iq2sm:
                new = "IQ3_S"
        return new

    def _attn_v(self, new: str) -> str:
        ft, gqa, i, n = self.ft, self.n_gqa, self.i_attention_wv, self.n_attention_wv
        if ft == "Q2_K":
            new = "Q4_K" if gqa >= 4 else "Q3_K"
        elif ft == "Q2_K_S" and gqa >= 4:
            new = "Q4_K"
        elif ft == "IQ3_XXS":
            new = "Q4_K" if gqa >= 4 else ("IQ3_S" if not self.opts.imatrix else "IQ3_XXS")
        elif ft in ("IQ3_XS", "IQ3_S") and gqa >= 4:
            new = "Q4_K"
        elif ft == "IQ3_M":
            new = "Q4_K"
        elif ft == "Q3_K_M":
            new = "Q5_K" if i < 2 else "Q4_K"
        elif ft == "Q3_K_L":
            new = "Q5_K"
        elif ft in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
            new = "Q5_K"
        elif ft in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
            new = "Q6_K"
        elif ft == "Q4_K_S" and i < 4:
            new = "Q5_K"
        if self.is_70b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        if self.hp.n_expert == 8:
            new = "Q8_0"
        self.i_attention_wv += 1
        return new

    def _ffn_down(self, new: str, name: str) -> str:
        ft, hp, falcon = self.ft, self.hp, self.hp.arch == "falcon"
        il, nl = self._layer(self.i_ffn_down, name)
        imat = self.opts.imatrix
        if ft == "Q2_K":
            new = "Q3_K"
        elif ft == "Q2_K_S":
            if il < nl // 8:
                new = "Q4_K"
        elif ft == "IQ3_XXS" and not imat:
            new = "Q4_K" if il < nl // 8 else "Q3_K"
        elif ft == "Q3_K_M":
            new = ("Q5_K" if il < nl // 16
                   else "Q4_K" if not falcon or use_more_bits(il, nl) else "Q3_K")
        elif ft == "IQ3_M" and (il < nl // 8 or (hp.n_expert == 8 and use_more_bits(il, nl))):
            new = "Q4_K"
        elif ft == "Q3_K_L":
            new = "Q4_K" if falcon else "Q5_K"
        elif ft == "Q4_K_M":
            if falcon:
                new = "Q6_K" if il < nl // 16 else "Q5_K" if use_more_bits(il, nl) else "Q4_K"
            elif use_more_bits(il, nl):
                new = "Q6_K"
        elif il < nl // 8 and ft in ("IQ4_NL", "IQ4_XS") and not imat:
            new = "Q5_K"
        elif ft == "Q5_K_M" and use_more_bits(il, nl):
            new = "Q6_K"
        elif ft == "Q4_K_S" and not falcon and il < nl // 8:
            new = "Q5_K"
        elif ft in ("Q4_0", "Q5_0") and imat and il < nl // 8:
            new = "Q4_1" if ft == "Q4_0" else "Q5_1"
        self.i_ffn_down += 1
        return new

    def _attn_output(self, new: str) -> str:
        ft = self.ft
        if self.hp.arch != "falcon":
            if self.hp.n_expert == 8:
                if ft in _ATTN_OUT_MOE_Q5K:
                    new = "Q5_K"
            else:
                new = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K",
                       "IQ3_M": "Q4_K"}.get(ft, new)
        elif ft == "Q3_K_L":
            new = "Q4_K"
        return new


def requires_imatrix(name: str, target: QType, ftype: str) -> bool:
    """tensor_requires_imatrix."""
    if category(name) in (TOKEN_EMBD, OUTPUT):
        return False
    if target.name in _IMATRIX_TYPES:
        return True
    return target.name == "Q2_K" and ftype == "Q2_K_S"


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
    layers = [il for il in map(_sscanf_layer, names) if il is not None]
    return Hparams(arch="", n_layer_all=max(layers) + 1 if layers else 0)


def decide_model(model: Model, opts: QuantizeOptions) -> list[Decision]:
    """decide() for an opened model."""
    return decide(model.tensors, model.hparams, opts)


class _Decider:
    """llama_tensor_get_type for one llama-quantize run (the mix keeps counters across tensors)."""

    def __init__(self, hp: Hparams, opts: QuantizeOptions, names: Sequence[str]) -> None:
        self.hp, self.opts = hp, opts
        self.ft = get_ftype(opts.ftype)
        self.default = qtypes.get(self.ft.default)
        self.mix = _Mix(hp, self.ft.name, opts, names)
        self.tet = qtypes.get(opts.token_embedding_type) if opts.token_embedding_type else None
        self.ott = qtypes.get(opts.output_tensor_type) if opts.output_tensor_type else None

    def __call__(self, t: TensorLike) -> Decision:
        name, src, ne0 = t.name, qtypes.get(t.ggml_type), t.shape[0]
        reason = not_quantized_reason(name, ggml_n_dims(t.shape), self.hp.arch,
                                      quantize_output_tensor=not self.opts.leave_output_tensor,
                                      only_copy=self.ft.name == "COPY")
        if reason is not None:
            return Decision(name, src, src, False, reason, "kept", ne0)
        target, rule, wanted, pattern = self._target(t)
        return Decision(name, src, target, True, None, rule, ne0, wanted,
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
        if not is_quantized(self.default):
            return new, rule, None, None
        hit = next((i for i, r in enumerate(rules) if r.matches(name)), None)
        if hit is not None:
            new, rule = rules[hit].qtype, "pattern"
        elif not self.opts.pure:
            rule = "output-rule" if self.mix.output_branch(cat) else "mix"
            new = qtypes.get(self.mix(self.default.name, name, t.shape, cat))
        eff = qtypes.effective(new, t.shape[0])
        return (eff, rule, new, hit) if eff.ggml_type != new.ggml_type else (new, rule, None, hit)
