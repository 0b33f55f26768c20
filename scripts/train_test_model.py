#!/usr/bin/env python3
"""Train a small float test model from scratch on Jane Austen and convert it to an F16 GGUF.

Dev-only tool (torch, transformers, tokenizers, safetensors and llama.cpp's gguf-py; none of them is a
runtime dependency of prism_native). It makes genuine trained float weights for checking whether the
weight-only metrics predict quantization damage, without downloading any model.

Text: the Debian package r-cran-janeaustenr (read with get_eval_text.py's .deb and R lazy-load reader).
*Persuasion* is held out entirely (it is the evaluation text of get_eval_text.py); the tokenizer and the
model see only the other five novels, less the last --val-frac of each, which is kept for validation.

Steps, all seeded:
  1. byte-level BPE tokenizer (`tokenizers`) whose split regex is the one llama.cpp applies for the
     declared pre-tokenizer (llama-bpe for llama, qwen2 for qwen2/qwen3, qwen35 for qwen35; see
     src/llama-vocab.cpp), BOS prepended, as llama-perplexity does per chunk;
  2. a transformers model from a config (random init), trained in float32 on CPU, AdamW + cosine;
     train/validation loss logged; `save_pretrained` (safetensors) with the tokenizer;
  3. llama.cpp's own convert_hf_to_gguf.py --outtype f16, with get_vocab_base_pre returning the declared
     pre-tokenizer (a fresh tokenizer's hash is unknown to it);
  4. sha256 of the GGUF next to it (NAME.gguf.sha256) and a JSON record of the run (NAME.json);
  5. optionally (--verify) llama-perplexity on Persuasion and llama-quantize Q4_K_M.

    python scripts/train_test_model.py --arch llama --out /work/models/austen-llama \\
        --hidden 256 --intermediate 768 --layers 8 --heads 4 --kv-heads 2 --steps 3000 --verify

Keep to one core: the script sets torch.set_num_threads(--threads, default 1) (and OMP_NUM_THREADS=1 if unset).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import json
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import get_eval_text  # scripts/get_eval_text.py: the .deb and R lazy-load reader

TRAIN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "prideprejudice", "sensesensibility")
HELD_OUT = "persuasion"
# the pinned llama.cpp's source (convert_hf_to_gguf.py) and tools: LLAMA_CPP_DIR / LLAMA_BIN, else where
# scripts/build_llama_cpp.sh puts them, else the older /work/llama layout
_CACHE = Path(os.environ.get("PRISM_LLAMA_CACHE") or Path.home() / ".cache/prism-native/llama.cpp-0.3.36")
LLAMA_CPP = os.environ.get("LLAMA_CPP_DIR") or next(
    (str(d) for d in (_CACHE / "src", Path("/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp")) if d.is_dir()),
    str(_CACHE / "src"))
LLAMA_BIN = os.environ.get("LLAMA_BIN") or next(
    (str(d) for d in (_CACHE / "build/bin", Path("/work/llama/build-base/bin")) if d.is_dir()), str(_CACHE / "build/bin"))
BOS, EOS = "<|bos|>", "<|eos|>"

# The split regexes of llama.cpp's src/llama-vocab.cpp ("original regex from tokenizer.json"), per
# pre-tokenizer name written as tokenizer.ggml.pre. llama.cpp also sets ignore_merges for llama-bpe.
PRE_TOKENIZERS = {
    "llama-bpe": ((r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                   r"|\s*[\r\n]+|\s+(?!\S)|\s+"), True),
    "qwen2": ((r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+"), False),
    "qwen35": ((r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+"), False),
}
ARCH_PRE = {"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2", "qwen3moe": "qwen2", "qwen35": "qwen35"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- text

def load_novels(deb_path: str | None) -> tuple[dict[str, str], str]:
    """Every novel's full text (title block dropped, as get_eval_text does) and the .deb's sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        path = deb_path or get_eval_text.fetch_deb(tmp)
        with open(path, "rb") as f:
            deb = f.read()
    files = get_eval_text.data_files(deb, ("Rdata.rdx", "Rdata.rdb"))
    novels = {name: get_eval_text.novel_text(get_eval_text.lazyload_object(files["Rdata.rdx"], files["Rdata.rdb"], name),
                                             max_bytes=1 << 40)
              for name in TRAIN_NOVELS + (HELD_OUT,)}
    return novels, hashlib.sha256(deb).hexdigest()


def split_novel(text: str, val_frac: float) -> tuple[str, str]:
    """Head for training, the last val_frac (cut at a paragraph break) for validation."""
    cut = text.find("\n\n", int(len(text) * (1 - val_frac)))
    cut = cut if cut > 0 else int(len(text) * (1 - val_frac))
    return text[:cut], text[cut:].lstrip("\n")


# ------------------------------------------------------------------------------------ tokenizer

def train_tokenizer(texts: list[str], vocab_size: int, pre: str):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    pattern, ignore_merges = PRE_TOKENIZERS[pre]
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 $B:1",
        special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def wrap_tokenizer(tok, arch: str):
    from transformers import PreTrainedTokenizerFast
    # transformers' AutoTokenizer loads a model_type "qwen2" directory as Qwen2Tokenizer, whose default
    # unk_token "<|endoftext|>" would be appended as token id == vocab_size (convert_hf_to_gguf then
    # fails its assert); naming an existing token as unk keeps the vocabulary as trained.
    extra = {"unk_token": EOS} if arch == "qwen2" else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   add_bos_token=True, add_eos_token=False, model_max_length=1 << 20, **extra)


# ---------------------------------------------------------------------------------------- model

def build_config(a, vocab_size: int, bos_id: int, eos_id: int):
    common = {"vocab_size": vocab_size, "hidden_size": a.hidden, "intermediate_size": a.intermediate,
              "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
              "max_position_embeddings": a.max_pos, "tie_word_embeddings": a.tie, "initializer_range": 0.02,
              "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": eos_id, "use_cache": False}
    head_dim = a.head_dim or a.hidden // a.heads
    rope = {"rope_type": "default", "rope_theta": a.rope_theta}
    if a.arch == "llama":
        from transformers import LlamaConfig
        cfg = LlamaConfig(**common, head_dim=head_dim, rms_norm_eps=1e-5, rope_parameters=rope,
                          attention_bias=False, mlp_bias=False)
        cfg.architectures = ["LlamaForCausalLM"]
    elif a.arch == "qwen2":
        from transformers import Qwen2Config
        cfg = Qwen2Config(**common, rms_norm_eps=1e-6, rope_parameters=rope, use_sliding_window=False)
        cfg.architectures = ["Qwen2ForCausalLM"]
    elif a.arch == "qwen3":
        from transformers import Qwen3Config
        cfg = Qwen3Config(**common, head_dim=head_dim, rms_norm_eps=1e-6, rope_parameters=rope,
                          attention_bias=False, use_sliding_window=False)
        cfg.architectures = ["Qwen3ForCausalLM"]
    elif a.arch == "qwen3moe":
        from transformers import Qwen3MoeConfig

        # every layer sparse: --experts experts of --intermediate each, --experts-used per token; the
        # router's load-balancing loss is added to the training loss (router_aux_loss_coef)
        cfg = Qwen3MoeConfig(**common, head_dim=head_dim, rms_norm_eps=1e-6, rope_parameters=rope,
                             attention_bias=False, use_sliding_window=False, num_experts=a.experts,
                             num_experts_per_tok=a.experts_used, moe_intermediate_size=a.intermediate,
                             decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True,
                             output_router_logits=True, router_aux_loss_coef=0.01)
        cfg.architectures = ["Qwen3MoeForCausalLM"]
    elif a.arch == "qwen35":
        from transformers import Qwen3_5TextConfig

        # Qwen3.5 rotates a quarter of each head (partial_rotary_factor 0.25) with interleaved MRoPE;
        # text positions are equal in all sections, mrope_section only has to cover n_rot/2 pairs.
        n_pairs = int(head_dim * 0.25) // 2
        section = [n_pairs - 2 * (n_pairs // 3), n_pairs // 3, n_pairs // 3]
        rope.update(partial_rotary_factor=0.25, mrope_section=section, mrope_interleaved=True)
        cfg = Qwen3_5TextConfig(**common, head_dim=head_dim, rms_norm_eps=1e-6, rope_parameters=rope,
                                attention_bias=False, linear_conv_kernel_dim=4,
                                linear_key_head_dim=a.linear_head_dim, linear_value_head_dim=a.linear_head_dim,
                                linear_num_key_heads=a.linear_k_heads, linear_num_value_heads=a.linear_v_heads,
                                full_attention_interval=a.full_attn_interval)
        cfg.architectures = ["Qwen3_5ForCausalLM"]
    else:
        raise SystemExit(f"unknown arch {a.arch}")
    return cfg


def model_class(arch: str):
    import transformers
    return {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
            "qwen3": transformers.Qwen3ForCausalLM, "qwen3moe": transformers.Qwen3MoeForCausalLM,
            "qwen35": transformers.Qwen3_5ForCausalLM}[arch]


# ------------------------------------------------------------------------------------- training

def windows(stream, seq: int, bos_id: int):
    """Non-overlapping windows of seq-1 tokens of a 1-D tensor, each with BOS in front."""
    import torch
    n = (len(stream) - 1) // (seq - 1)
    body = stream[: n * (seq - 1)].view(n, seq - 1)
    return torch.cat([torch.full((n, 1), bos_id, dtype=body.dtype), body], dim=1)


def evaluate(model, batches_of_ids) -> tuple[float, float]:
    """Mean next-token loss over all positions, and over the second half only (what llama-perplexity
    scores per chunk)."""
    import torch
    import torch.nn.functional as F
    model.eval()
    tot = tot2 = 0.0
    n = n2 = 0
    with torch.no_grad():
        for ids in batches_of_ids:
            logits = model(input_ids=ids).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                  reduction="none").view(ids.shape[0], -1)
            half = ids.shape[1] // 2
            tot += nll.sum().item()
            n += nll.numel()
            tot2 += nll[:, half:].sum().item()
            n2 += nll[:, half:].numel()
    model.train()
    return tot / n, tot2 / n2


def llama_style_ppl(model, tok, text: str, n_ctx: int, chunks: int, bos_id: int) -> float:
    """What `llama-perplexity -c n_ctx --chunks chunks` computes, in torch: BOS + tokens, chunks of
    n_ctx with the first token replaced by BOS, NLL of positions n_ctx/2+1 .. n_ctx-1."""
    import torch
    import torch.nn.functional as F
    ids = tok.encode(text).ids                       # post-processor prepends BOS, as common_tokenize
    chunks = min(chunks, len(ids) // n_ctx)
    first = n_ctx // 2
    nll, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(chunks):
            x = torch.tensor(ids[i * n_ctx:(i + 1) * n_ctx]).unsqueeze(0)
            x[0, 0] = bos_id
            logits = model(input_ids=x).logits[0].float()
            lp = F.log_softmax(logits[first:n_ctx - 1], dim=-1)
            tgt = x[0, first + 1:n_ctx]
            nll -= lp.gather(1, tgt.unsqueeze(1)).sum().item()
            count += n_ctx - 1 - first
    model.train()
    return math.exp(nll / count)


def unigram_entropy(train_ids, val_ids, vocab: int) -> tuple[float, float]:
    """Entropy (nats) of the training unigram distribution, and the cross-entropy of the validation
    tokens under it (add-one smoothed): the loss of a model that ignores context."""
    import torch
    counts = torch.bincount(train_ids, minlength=vocab).double()
    p = counts / counts.sum()
    h = -(p[p > 0] * p[p > 0].log()).sum().item()
    ps = (counts + 1) / (counts.sum() + vocab)
    ce = -ps.log()[val_ids].mean().item()
    return h, ce


def train(a) -> dict:
    import numpy as np
    import tokenizers
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    t_start = time.time()
    out = Path(a.out)
    hf_dir = out / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)

    novels, deb_sha = load_novels(a.deb)
    parts = {n: split_novel(novels[n], a.val_frac) for n in TRAIN_NOVELS}
    train_texts = [parts[n][0] for n in TRAIN_NOVELS]
    val_texts = [parts[n][1] for n in TRAIN_NOVELS]
    pre = ARCH_PRE[a.arch]
    tok = train_tokenizer(train_texts, a.vocab, pre)
    vocab = tok.get_vocab_size()
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)

    def encode_stream(texts: list[str]):
        ids: list[int] = []
        for t in texts:
            ids += tok.encode(t, add_special_tokens=False).ids + [eos_id]
        return torch.tensor(ids, dtype=torch.long)

    train_ids, val_ids = encode_stream(train_texts), encode_stream(val_texts)
    h_uni, ce_uni = unigram_entropy(train_ids, val_ids, vocab)
    log(f"text: train {sum(len(t.encode()) for t in train_texts):,} bytes -> {len(train_ids):,} tokens, "
        f"val {sum(len(t.encode()) for t in val_texts):,} bytes -> {len(val_ids):,} tokens; vocab {vocab} ({pre}); "
        f"unigram entropy {h_uni:.3f} nats, val unigram cross-entropy {ce_uni:.3f}")

    cfg = build_config(a, vocab, bos_id, eos_id)
    model = model_class(a.arch)(cfg)          # random init under torch.manual_seed(a.seed)
    model.float().train()
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    log(f"model {cfg.architectures[0]}: {n_params:,} parameters ({n_params - n_embed:,} without the input "
        f"embedding), tied={a.tie}")

    seq, bsz = a.seq, a.batch
    val_w = windows(val_ids, seq, bos_id)
    val_batches = [val_w[i:i + bsz] for i in range(0, len(val_w), bsz)]
    quick_val = val_batches[: max(1, a.eval_windows // bsz)]
    gen = torch.Generator().manual_seed(a.seed + 1)
    trainable = len(train_ids) - (seq - 1)
    fixed_train = torch.stack([torch.cat([torch.tensor([bos_id]), train_ids[o:o + seq - 1]])
                               for o in torch.randint(0, trainable, (len(quick_val) * bsz,), generator=gen).tolist()])
    fixed_train_batches = [fixed_train[i:i + bsz] for i in range(0, len(fixed_train), bsz)]

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    def lr_at(step: int) -> float:
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        prog = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))

    history = []
    run_loss, run_n = 0.0, 0
    t_train = time.time()
    bos_col = torch.full((bsz, 1), bos_id, dtype=torch.long)
    for step in range(a.steps):
        offs = torch.randint(0, trainable, (bsz,), generator=gen)
        body = torch.stack([train_ids[o:o + seq - 1] for o in offs.tolist()])
        ids = torch.cat([bos_col, body], dim=1)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip).item()
        opt.step()
        run_loss += loss.item()
        run_n += 1
        done = step + 1
        if done % a.log_every == 0 or done == a.steps:
            el = time.time() - t_train
            log(f"step {done}/{a.steps} lr {lr_at(step):.2e} loss {run_loss / run_n:.4f} gnorm {gnorm:.2f} "
                f"tokens {done * bsz * seq:,} {el / done:.2f} s/step elapsed {el / 60:.1f} min")
            history.append({"step": done, "train_loss_running": run_loss / run_n, "seconds": round(el, 1)})
            run_loss, run_n = 0.0, 0
        if a.eval_every and (done % a.eval_every == 0) and done != a.steps:
            vl, _ = evaluate(model, quick_val)
            log(f"eval step {done}: val loss {vl:.4f} (ppl {math.exp(vl):.2f}, {len(quick_val) * bsz} windows)")
            history[-1]["val_loss_quick"] = vl
    train_seconds = time.time() - t_train

    tr_loss, _ = evaluate(model, fixed_train_batches)
    val_loss, val_loss_half = evaluate(model, val_batches)
    eval_text = ensure_eval_text(Path(a.eval_text), a.deb).read_text(encoding="utf-8")
    hf_ppl = llama_style_ppl(model, tok, eval_text, 256, 16, bos_id)
    log(f"final: train loss {tr_loss:.4f} (fixed sample, eval mode), val loss {val_loss:.4f} (ppl "
        f"{math.exp(val_loss):.2f}; second halves {val_loss_half:.4f}), unigram {ce_uni:.4f}; "
        f"Persuasion llama-perplexity-style PPL (c=256, 16 chunks, torch f32) {hf_ppl:.3f}")

    model.config.use_cache = True
    model.save_pretrained(hf_dir)
    wrap_tokenizer(tok, a.arch).save_pretrained(hf_dir)

    return {
        "name": out.name, "arch": cfg.architectures[0], "pre_tokenizer": pre,
        "args": {k: v for k, v in vars(a).items()},
        "config": cfg.to_dict(),
        "parameters": n_params, "parameters_without_input_embedding": n_params - n_embed,
        "tied_embeddings": bool(a.tie),
        "vocab_size": vocab,
        "data": {"source": f"Debian {get_eval_text.PACKAGE}", "deb_sha256": deb_sha,
                 "train_novels": list(TRAIN_NOVELS), "held_out": HELD_OUT, "val_frac": a.val_frac,
                 "train_tokens": len(train_ids), "val_tokens": len(val_ids)},
        "steps": a.steps, "batch": bsz, "seq_len": seq, "tokens_seen": a.steps * bsz * seq,
        "epochs": round(a.steps * bsz * seq / len(train_ids), 2),
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - t_start, 1),
        "final": {"train_loss": tr_loss, "val_loss": val_loss, "val_ppl": math.exp(val_loss),
                  "val_loss_second_half": val_loss_half,
                  "unigram_entropy": h_uni, "val_unigram_cross_entropy": ce_uni,
                  "persuasion_ppl_torch_c256_16chunks": hf_ppl},
        "history": history,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "numpy": np.__version__, "llama_cpp_dir": LLAMA_CPP},
    }


# ------------------------------------------------------------------------------------ converting

CONVERT_WRAPPER = r"""
import sys
llama_cpp, pre = sys.argv[1], sys.argv[2]
sys.path.insert(0, llama_cpp)
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: pre   # fresh tokenizer: declare the pre-tokenizer
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[3:]
convert_hf_to_gguf.main()
"""


def convert(hf_dir: Path, gguf_path: Path, pre: str, arch: str) -> None:
    args = [str(hf_dir), "--outtype", "f16", "--outfile", str(gguf_path)]
    if arch == "qwen35":
        args.append("--no-mtp")                 # no multi-token-prediction head in these models
    subprocess.run([sys.executable, "-c", CONVERT_WRAPPER, LLAMA_CPP, pre, *args], check=True)


def ensure_eval_text(path: Path, deb: str | None) -> Path:
    """The evaluation text (Persuasion, first 250 kB), made by get_eval_text.py's own CLI if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "get_eval_text.py"),
                        "-o", str(path)] + (["--deb", deb] if deb else []), check=True)
    return path


def verify(gguf_path: Path, eval_text_path: Path) -> dict:
    res: dict = {}
    ppl_bin, q_bin = Path(LLAMA_BIN) / "llama-perplexity", Path(LLAMA_BIN) / "llama-quantize"
    p = subprocess.run([str(ppl_bin), "-m", str(gguf_path), "-f", str(eval_text_path), "-c", "256",
                        "--chunks", "16", "-t", "1"], check=False, capture_output=True, text=True)
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", p.stdout + p.stderr)
    res["llama_perplexity"] = {"rc": p.returncode, "ppl": float(m.group(1)) if m else None,
                               "ppl_err": float(m.group(2)) if m else None,
                               "cmd": f"llama-perplexity -m {gguf_path} -f {eval_text_path} -c 256 --chunks 16 -t 1"}
    log(f"llama-perplexity rc={p.returncode}: {m.group(0) if m else (p.stderr[-2000:])}")
    with tempfile.TemporaryDirectory() as tmp:
        q = subprocess.run([str(q_bin), str(gguf_path), os.path.join(tmp, "x.gguf"), "Q4_K_M", "1"],
                           check=False, capture_output=True, text=True)
        out = q.stdout + q.stderr
        fallbacks = len(re.findall(r"falling back to", out))         # rows not a multiple of the block
        size = re.search(r"quant size\s*=\s*([0-9.]+ MiB)", out)
        res["llama_quantize_q4_k_m"] = {"rc": q.returncode, "quant_size": size.group(1) if size else None,
                                        "fallback_tensors": fallbacks}
        log(f"llama-quantize Q4_K_M rc={q.returncode} size={size.group(1) if size else '?'} fallback tensors={fallbacks}")
        if q.returncode:
            log(out[-3000:])
    return res


# ----------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=sorted(ARCH_PRE))
    p.add_argument("--out", required=True, help="output directory (hf/, NAME.gguf, NAME.gguf.sha256, NAME.json)")
    p.add_argument("--deb", help=f"{get_eval_text.PACKAGE} .deb already downloaded (default: apt-get download)")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=0, help="default hidden/heads")
    p.add_argument("--tie", action="store_true", help="tie the output matrix to the token embedding")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--max-pos", type=int, default=2048)
    p.add_argument("--linear-head-dim", type=int, default=64, help="qwen35: Gated DeltaNet key = value head dim")
    p.add_argument("--linear-k-heads", type=int, default=4, help="qwen35: Gated DeltaNet key heads")
    p.add_argument("--linear-v-heads", type=int, default=8, help="qwen35: Gated DeltaNet value heads")
    p.add_argument("--full-attn-interval", type=int, default=4, help="qwen35: every Nth layer is full attention")
    p.add_argument("--experts", type=int, default=8, help="qwen3moe: experts per layer")
    p.add_argument("--experts-used", type=int, default=2, help="qwen3moe: experts per token")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--val-frac", type=float, default=0.04)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 reproduces the zoo bit for bit (the reduction order depends on it)")
    p.add_argument("--skip-train", action="store_true", help="reuse OUT/hf and OUT/NAME.json, only convert (+verify)")
    p.add_argument("--verify", action="store_true", help="run llama-perplexity and llama-quantize on the GGUF")
    p.add_argument("--eval-text", default="/work/models/persuasion.txt")
    a = p.parse_args(argv)

    out = Path(a.out)
    name = out.name
    gguf_path, meta_path = out / f"{name}.gguf", out / f"{name}.json"
    if a.skip_train:
        record = json.loads(meta_path.read_text())
    else:
        record = train(a)
        meta_path.write_text(json.dumps(record, indent=1))
    convert(out / "hf", gguf_path, ARCH_PRE[a.arch], a.arch)
    digest = sha256_file(gguf_path)
    (out / f"{name}.gguf.sha256").write_text(f"{digest}  {gguf_path.name}\n")
    record["gguf"] = {"path": str(gguf_path), "bytes": gguf_path.stat().st_size, "sha256": digest,
                      "outtype": "f16"}
    print(f"{digest}  {gguf_path}", flush=True)
    if a.verify:
        record["verify"] = verify(gguf_path, ensure_eval_text(Path(a.eval_text), a.deb))
    meta_path.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
