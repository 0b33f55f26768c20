"""Small synthetic GGUF models written with gguf.GGUFWriter, shaped like llama.cpp's own files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType


@dataclass
class Spec:
    arch: str = "llama"
    n_embd: int = 256
    n_ff: int = 256
    n_layer: int = 16
    n_head: int = 4
    n_head_kv: int = 1
    n_vocab: int = 512
    n_expert: int = 0
    tied: bool = False
    dtype: str = "F16"                 # F32, F16, BF16 or Q8_0 for the 2-D weights
    layer_names: tuple[str, ...] = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                    "ffn_down")
    extra: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> ggml shape (ne0, ne1, ..)
    kv: dict[str, object] = field(default_factory=dict)
    alignment: int = 0                 # general.alignment (0: the default, 32)
    seed: int = 0
    byte_tokenizer: bool = False       # a loadable SPM vocabulary of byte tokens (n_vocab >= BYTE_VOCAB)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        e, f, kv_dim = self.n_embd, self.n_ff, self.n_embd // self.n_head * self.n_head_kv
        per = {"attn_q": (e, e), "attn_k": (e, kv_dim), "attn_v": (e, kv_dim), "attn_output": (e, e),
               "attn_qkv": (e, e + 2 * kv_dim), "attn_gate": (e, e), "ffn_gate": (e, f), "ffn_up": (e, f),
               "ffn_down": (f, e), "ssm_alpha": (e, self.n_head), "ssm_beta": (e, self.n_head),
               "ssm_out": (e, e), "ssm_conv1d": (4, e), "ffn_up_shexp": (e, f), "ffn_gate_shexp": (e, f),
               "ffn_down_shexp": (f, e)}
        out: dict[str, tuple[int, ...]] = {"token_embd.weight": (e, self.n_vocab), "output_norm.weight": (e,)}
        if not self.tied:
            out["output.weight"] = (e, self.n_vocab)
        for il in range(self.n_layer):
            out[f"blk.{il}.attn_norm.weight"] = (e,)
            out[f"blk.{il}.ffn_norm.weight"] = (e,)
            for n in self.layer_names:
                out[f"blk.{il}.{n}.weight"] = per[n]
            if self.n_expert:
                x = self.n_expert
                out[f"blk.{il}.ffn_gate_inp.weight"] = (e, x)
                out[f"blk.{il}.ffn_gate_exps.weight"] = (e, f, x)
                out[f"blk.{il}.ffn_up_exps.weight"] = (e, f, x)
                out[f"blk.{il}.ffn_down_exps.weight"] = (f, e, x)
        out.update(self.extra)
        return out


def _values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(tuple(reversed(shape)), dtype=np.float32) * 0.05).astype(np.float32)


def encode(x: np.ndarray, dtype: str) -> tuple[np.ndarray, QT | None]:
    """(array to hand to GGUFWriter.add_tensor, raw_dtype) for float32 values x."""
    if dtype == "F32":
        return x, None
    if dtype == "F16":
        return x.astype(np.float16), None
    if dtype == "BF16":
        return gguf.quants.quantize(x, QT.BF16), QT.BF16
    q = QT[dtype]
    return gguf.quants.quantize(x, q), q


BYTE_VOCAB = 3 + 256    # <unk> <s> </s>, then one token per byte


def add_byte_tokenizer(w: gguf.GGUFWriter, n_vocab: int) -> None:
    """SentencePiece-style vocabulary that llama.cpp can load: the special tokens, the 256 byte tokens
    (<0xXX>, which SPM tokenization falls back to), then unused filler pieces up to n_vocab."""
    if n_vocab < BYTE_VOCAB:
        raise ValueError(f"a byte tokenizer needs n_vocab >= {BYTE_VOCAB}")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"piece{i}" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - BYTE_VOCAB)    # UNKNOWN, CONTROL, BYTE, NORMAL
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def add_kv(w: gguf.GGUFWriter, kv: dict[str, object]) -> None:
    for k, v in kv.items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, (list, tuple)):
            w.add_array(k, list(v))          # per-layer values (INT32, which llama.cpp reads as uint32)
        else:
            w.add_uint32(k, int(v))  # type: ignore[arg-type]


Fill = Callable[[str, tuple[int, ...], int], Iterator[bytes]]   # (name, ggml shape, bytes) -> the data


def write_layout(path: Path, arch: str, kv: dict[str, object], tensors: dict[str, tuple[tuple[int, ...], str]], *,
                 split_max_tensors: int = 0, fill: Fill | None = None) -> list[Path]:
    """A GGUF (split set) of any tensor shapes and types, its data streamed from fill(name, shape, nbytes)
    chunk by chunk, or, without fill, a sparse hole of the right size (a header claiming terabytes costs
    no disk). Returns the parts' paths."""
    from prism_native.llama.sizes import tensor_nbytes

    w = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    add_kv(w, kv)
    sizes = {}
    for name, (shape, tname) in tensors.items():
        sizes[name] = tensor_nbytes(shape, tname)
        w.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), sizes[name], raw_dtype=QT[tname])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    paths = w.format_shard_names(Path(path))
    for fout, shard in zip(w.fout, w.tensors):
        pos = -(-fout.tell() // w.data_alignment) * w.data_alignment
        for name in shard:
            fout.seek(pos)
            if fill is not None:
                for chunk in fill(name, tensors[name][0], sizes[name]):
                    fout.write(chunk)
                assert fout.tell() == pos + sizes[name], name
            pos += -(-sizes[name] // w.data_alignment) * w.data_alignment
        fout.truncate(pos)
        fout.close()
    return paths


def write(path: Path, spec: Spec, *, split_max_tensors: int = 0,
          values_of: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Write the model; returns the float32 values of every tensor (before encoding). `values_of`: given
    values (numpy shape) for some tensors instead of random ones."""
    rng = np.random.default_rng(spec.seed)
    w = gguf.GGUFWriter(path, spec.arch, split_max_tensors=split_max_tensors)
    a = spec.arch
    kv: dict[str, object] = {
        f"{a}.block_count": spec.n_layer, f"{a}.context_length": 512, f"{a}.embedding_length": spec.n_embd,
        f"{a}.feed_forward_length": spec.n_ff, f"{a}.attention.head_count": spec.n_head,
        f"{a}.attention.head_count_kv": spec.n_head_kv, f"{a}.attention.layer_norm_rms_epsilon": 1e-5,
        f"{a}.attention.layer_norm_epsilon": 1e-5, f"{a}.rope.dimension_count": spec.n_embd // spec.n_head,
        f"{a}.vocab_size": spec.n_vocab, "general.name": "synthetic"}
    if spec.n_expert:
        kv.update({f"{a}.expert_count": spec.n_expert, f"{a}.expert_used_count": 2})
    if spec.alignment:
        w.add_custom_alignment(spec.alignment)
    add_kv(w, {**kv, **spec.kv})       # spec.kv adds keys or replaces the defaults
    if spec.byte_tokenizer:
        add_byte_tokenizer(w, spec.n_vocab)
    values: dict[str, np.ndarray] = {}
    for name, shape in spec.shapes().items():
        x = _values(rng, shape)
        if values_of and name in values_of:
            x = np.asarray(values_of[name], dtype=np.float32)
        values[name] = x
        two_d = len(shape) > 1 and name.endswith(".weight")
        data, raw = encode(x, spec.dtype if two_d else "F32")
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return values


QWEN35_LAYER = ("attn_qkv", "attn_gate", "ssm_alpha", "ssm_beta", "ssm_out", "ssm_conv1d", "ffn_gate", "ffn_up",
                "ffn_down")

# model variants the rules are checked on (against llama-quantize when it is available)
VARIANTS: dict[str, Spec] = {
    # 16 layers, GQA 4, rows of 256: the K-quant mixes without fallbacks
    "dense": Spec(),
    # multi-head attention (n_gqa 1), 12 layers: the n_gqa < 4 branches
    "mha": Spec(n_layer=12, n_head_kv=4),
    # tied embeddings, rows of 320 (K-types fall back) and ffn_down rows of 200 (even 32-blocks: F16)
    "tied": Spec(tied=True, n_embd=320, n_head=5, n_ff=200, n_layer=10),
    # 8 experts: layer numbers parsed from names, the n_expert == 8 rules
    "moe": Spec(n_expert=8, n_layer=4, layer_names=("attn_q", "attn_k", "attn_v", "attn_output")),
    # Qwen3.5-style hybrid names under a loadable architecture, plus shared experts
    "hybrid": Spec(n_layer=8, layer_names=QWEN35_LAYER + ("ffn_up_shexp", "ffn_down_shexp")),
    "falcon": Spec(arch="falcon", n_layer=8, n_head_kv=4),
    # per_layer_token_embd (Gemma-3n style) for the --token-embedding-type exception
    "ple": Spec(n_layer=4, extra={"per_layer_token_embd.weight": (256, 512)}),
}


# 4 layers of 256/512-wide rows: the planner tests' model (the `analysed` fixture of tests/conftest.py)
SMALL_DENSE = Spec(n_layer=4, n_embd=256, n_ff=512, n_vocab=512, seed=5)


def write_imatrix(path: Path, spec: Spec, dataset: str = "synthetic-calibration.txt", chunks: int = 10) -> int:
    """A GGUF imatrix (llama-imatrix's format) for every blk.* matrix of `spec`; returns its entry count."""
    from prism_native.read.imatrix import write_gguf

    rng = np.random.default_rng(spec.seed + 1)
    entries = {}
    for name, shape in spec.shapes().items():
        if not name.startswith("blk.") or len(shape) < 2:
            continue
        nmat = shape[2] if len(shape) > 2 else 1
        entries[name] = ((rng.random((nmat, shape[0]), dtype=np.float32) + 0.1) * 5120,
                         np.full(nmat, 5120.0, dtype=np.float32))
    write_gguf(path, entries, [dataset], chunks, 512)
    return len(entries)
