"""A data-free importance matrix: each linear layer's per-column input mean square, from the weights alone.

llama-imatrix records, for every matrix multiplication W x of the model, the mean of x_j^2 over a
calibration text. Most of those inputs are visible in the weights, and this module propagates each
channel's mean and variance through the network (channels independent, activations Gaussian):

- the residual stream starts as token_embd's rows averaged under a Zipf prior by token id (byte-level
  BPE vocabularies put frequent tokens first);
- an RMSNorm maps the stream to gamma * h / rms(h): q/k/v, attn_qkv, the FFN's gate and up, the router
  and the SSM's input projections read that;
- a linear layer maps (mean mu, variance v) to (W mu + b, W^2 v);
- attention averages value vectors (weights summing to one): mean kept, variance scaled by `attn_mix`;
  attn_output reads that, per query head from its KV head (times sigmoid(gate) where Qwen3.5's
  attention is gated);
- ffn_down reads act(gate) * up, whose moments are integrated exactly for jointly Gaussian gate and up
  (their covariance from the two weight rows), by Gauss-Hermite quadrature;
- MoE: the router is applied to samples of the normalised stream; each expert's inputs are the moments
  of the samples routed to it, its count the routing share; the block output is the routed mixture;
- Gated DeltaNet (Qwen3.5/Qwen3-Next): ssm_out reads RMSNorm(o) * ssm_norm * silu(z), so its column c
  gets ssm_norm[c]^2 E[silu(z_c)^2];
- each block's output projections add their outputs' moments to the stream (updates independent);
- every activation is zero-mean with its second moment unless `means` is asked: the GLU's E[act(g) u],
  carried through ffn_down as a coherent channel mean, would otherwise outgrow the stream's variance
  within two blocks (docs/metrics.md).

Only the shape of a tensor's profile matters to llama.cpp's quantizers (importance enters their
weighted least squares, whose solution does not change when every weight is scaled), but the
absolute scales carry the balance between the embedding and the blocks' updates down the stream.
A tensor the walk cannot reach (a norm missing or of the wrong shape, a layout not recognised) gets
uniform importance and one warning.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gguf.imatrix import write_imatrix
from ..llama.quantizable import quantizable_tensors
from ..quant import FLOAT_TYPES, float_view, to_float32
from ..read.model import Model, TensorInfo

METHOD = "prism-native data-free importance (weights only, no text), v3"
NOTIONAL_TOKENS = 1 << 20      # the count written for a dense tensor; an expert's is its routing share of it
CHUNK_SIZE = 512               # written as imatrix.chunk_size; imatrix.chunk_count is 0: no text was read

_SLAB_VALUES = 1 << 22         # rows are read in slabs of ~16 MiB of float32
_GELU_ARCHS = ("gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding", "phi2", "gpt2", "starcoder",
               "starcoder2", "bloom", "falcon", "gptneox", "mpt", "bert", "nomic-bert", "jina-bert-v2")
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)\.weight$")
_HERMITE_NODES = 48


@dataclass(frozen=True)
class EstimateOptions:
    """The estimator's assumptions, each a number so that it can be measured (docs/metrics.md)."""

    zipf_exponent: float = 1.0     # p(token id t) ~ 1 / (t + zipf_offset)^s
    zipf_offset: float = 10.0
    attn_mix: float = 0.5          # variance kept by attention's weighted average of value vectors
    means: bool = False            # propagate channel means (embedding, biases, the GLU's E[act(g) u]);
                                   # default: every activation zero-mean with its second moment
    router_samples: int = 1024     # normalised-stream samples the MoE router is applied to
    seed: int = 0
    output: bool = False           # also estimate output.weight (llama-imatrix leaves it out by default)
    threads: int = 0               # 0: every core
    temper: float = 0.32           # importance^temper: log-importance shrunk toward each matrix's mean by the
                                   # slope of real on estimated log-importance (SmolLM2-135M, pooled); 1: raw
    sample_vocab: int = 8192       # the embedding's first ids are read whole, the rest on a stride to this many


@dataclass(frozen=True)
class TensorImportance:
    """One imatrix entry: raw sums of squared inputs per matrix (experts) and the counts they are over."""

    name: str
    in_sum2: np.ndarray          # (n_mat, ne0) float32
    counts: np.ndarray           # (n_mat,) float32
    uniform: bool = False        # the fallback: no estimate could be made for this tensor

    @property
    def importance(self) -> np.ndarray:
        """in_sum2 / count per matrix, as llama-quantize divides it (weights 1 where the count is 0)."""
        c = np.rint(self.counts).astype(np.float32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(c > 0, self.in_sum2 / np.where(c > 0, c, 1), np.float32(1)).astype(np.float32)


@dataclass
class ImportanceEstimate:
    """The data-free importance matrix of one model."""

    model: str
    entries: dict[str, TensorImportance]
    options: EstimateOptions
    method: str = METHOD
    chunk_count: int = 0
    chunk_size: int = CHUNK_SIZE
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def uniform(self) -> list[str]:
        """Tensors that got the fallback (uniform importance)."""
        return [n for n, e in self.entries.items() if e.uniform]

    def save(self, path: str | Path, inputs: tuple[Path, ...] = ()) -> Path:
        """Write llama-imatrix's GGUF format (gguf/imatrix.py); never over one of `inputs`."""
        entries = {n: (e.in_sum2, e.counts) for n, e in self.entries.items()}
        return write_imatrix(path, entries, [self.method], self.chunk_count, self.chunk_size, inputs)

    def to_imatrix(self, path: str = "auto"):  # -> read.imatrix.Imatrix
        """The estimate as a loaded importance matrix (what load_imatrix returns for its file)."""
        from ..read.imatrix import Imatrix
        return Imatrix(Path(path), "gguf", {n: e.importance.reshape(-1) for n, e in self.entries.items()},
                       [self.method], self.chunk_count, self.chunk_size, list(self.warnings))


# -- moments ---------------------------------------------------------------------------------------


@dataclass
class Moments:
    """Per-channel mean and variance of an activation (channels independent)."""

    mean: np.ndarray
    var: np.ndarray

    @property
    def sq(self) -> np.ndarray:
        """E[x^2], what llama-imatrix accumulates."""
        return self.mean * self.mean + self.var

    def scaled(self, mean_factor: np.ndarray | float, var_factor: np.ndarray | float) -> Moments:
        return Moments(self.mean * mean_factor, self.var * var_factor)


def _zero(n: int) -> Moments:
    return Moments(np.zeros(n), np.zeros(n))


def _add(a: Moments, b: Moments) -> Moments:
    return Moments(a.mean + b.mean, a.var + b.var)


def rms_norm(x: Moments, gamma: np.ndarray | None, eps: float = 1e-6) -> Moments:
    """gamma * x / rms(x), the rms taken over the channels' mean squares (about equal for every token
    when the width is large)."""
    inv = 1.0 / math.sqrt(max(float(np.mean(x.sq)), 0.0) + eps)
    g = np.ones_like(x.mean) if gamma is None else gamma.astype(np.float64)
    return Moments(x.mean * inv * g, x.var * (inv * inv) * g * g)


_Z, _W = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
_W = _W / math.sqrt(2 * math.pi)       # E[f(z)] = sum_k w_k f(z_k) for z ~ N(0, 1)


def _act(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "gelu":
        from scipy.special import erf
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-x))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def gaussian_expect(fn, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[fn(g)] and E[fn(g)^2] for g ~ N(mean, std^2), per channel."""
    g = mean[:, None] + std[:, None] * _Z[None, :]
    y = fn(g)
    return y @ _W, (y * y) @ _W


def glu_moments(gate: Moments, up: Moments, cov: np.ndarray, act: str) -> Moments:
    """Moments of act(g) * u for (g, u) jointly Gaussian per channel with covariance `cov`.

    u = mu_u + (cov / s_g) z + r e with z = (g - mu_g) / s_g and e independent, r^2 = var_u - cov^2/var_g:
    E[a u] = E_z[a (mu_u + k z)] and E[a^2 u^2] = E_z[a^2 ((mu_u + k z)^2 + r^2)], one quadrature over z."""
    sg = np.sqrt(np.maximum(gate.var, 1e-30))
    k = cov / sg
    r2 = np.maximum(up.var - k * k, 0.0)
    a = _act(gate.mean[:, None] + sg[:, None] * _Z[None, :], act)
    lin = up.mean[:, None] + k[:, None] * _Z[None, :]
    m1 = (a * lin) @ _W
    m2 = (a * a * (lin * lin + r2[:, None])) @ _W
    return Moments(m1, np.maximum(m2 - m1 * m1, 0.0))


def act_moments(x: Moments, act: str) -> Moments:
    m1, m2 = gaussian_expect(lambda g: _act(g, act), x.mean, np.sqrt(np.maximum(x.var, 0.0)))
    return Moments(m1, np.maximum(m2 - m1 * m1, 0.0))


# -- reading -----------------------------------------------------------------------------------------


def _row_slabs(model: Model, t: TensorInfo, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 rows) of a tensor in slabs of bounded size; the whole tensor's rows are the
    flattened (n_rows, ne0) of all its matrices."""
    ne0, n_rows = t.n_per_row, t.n_rows
    row_bytes = t.n_bytes // max(n_rows, 1)
    step = rows or max(1, _SLAB_VALUES // max(ne0, 1))
    for a in range(0, n_rows, step):
        k = min(step, n_rows - a)
        part = dataclasses.replace(t, shape=(ne0, k), n_bytes=k * row_bytes, offset=t.offset + a * row_bytes)
        yield a, np.asarray(model.read(part), dtype=np.float32).reshape(k, ne0)


class _Weights:
    """Reads what the walk needs, one matrix at a time."""

    def __init__(self, model: Model, threads: int) -> None:
        self.model = model
        self.threads = threads

    def has(self, name: str) -> bool:
        return name in self.model

    def vector(self, name: str, n: int) -> np.ndarray | None:
        """A 1-D tensor of n values (a norm's gamma, a bias), None when absent or of another size."""
        if name not in self.model:
            return None
        t = self.model.tensor(name)
        if t.n_elements != n:
            return None
        v = np.asarray(self.model.read(t), dtype=np.float64).reshape(-1)
        return v if np.all(np.isfinite(v)) else None

    def apply(self, name: str, x: Moments, expert: int | None = None) -> Moments:
        """(W mu, W^2 v) for matrix `name` (one expert of a stack)."""
        m, v = self._products(self.model.tensor(name), None, x, expert)[:2]
        return Moments(m, v)

    def apply_pair(self, gate: str, up: str, x: Moments, expert: int | None = None) -> tuple[Moments, Moments, np.ndarray]:
        """Both GLU projections and, per output channel, cov(g_i, u_i) = sum_j Wg_ij Wu_ij var_j."""
        gm, gv, um, uv, cov = self._products(self.model.tensor(gate), self.model.tensor(up), x, expert)
        return Moments(gm, gv), Moments(um, uv), cov

    def _products(self, t: TensorInfo, partner: TensorInfo | None, x: Moments, expert: int | None) -> list[np.ndarray]:
        """W mu and W^2 v (and the same for `partner`, with sum_j W_ij P_ij v_j), row slabs on threads
        (numpy releases the GIL), at most two slabs per thread in flight."""
        per = t.n_rows // (t.shape[2] if len(t.shape) > 2 and expert is not None else 1)
        xm, xv = x.mean.astype(np.float32), x.var.astype(np.float32)
        out = [np.zeros(per) for _ in range(2 if partner is None else 5)]

        def work(a: int, k: int) -> None:
            w = self._rows(t, expert, per, a, k)
            out[0][a:a + k], out[1][a:a + k] = w @ xm, (w * w) @ xv
            if partner is not None:
                u = self._rows(partner, expert, per, a, k)
                out[2][a:a + k], out[3][a:a + k] = u @ xm, (u * u) @ xv
                out[4][a:a + k] = (w * u) @ xv

        step = max(1, _SLAB_VALUES // max(t.n_per_row, 1))
        spans = [(a, min(step, per - a)) for a in range(0, per, step)]
        if self.threads <= 1 or len(spans) == 1:
            for a, k in spans:
                work(a, k)
            return out
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(self.threads) as pool:
            for i in range(0, len(spans), 2 * self.threads):
                list(pool.map(lambda ak: work(*ak), spans[i:i + 2 * self.threads]))
        return out

    def _rows(self, t: TensorInfo, expert: int | None, per: int, a: int, k: int) -> np.ndarray:
        """Rows a..a+k of the tensor's matrix (of one expert) as float32."""
        row_bytes = t.n_bytes // max(t.n_rows, 1)
        first = (expert or 0) * per + a
        part = dataclasses.replace(t, shape=(t.n_per_row, k), n_bytes=k * row_bytes, offset=t.offset + first * row_bytes)
        return np.asarray(self.model.read(part), dtype=np.float32).reshape(k, t.n_per_row)


# -- the walk ----------------------------------------------------------------------------------------


class _Estimator:
    def __init__(self, model: Model, options: EstimateOptions) -> None:
        self.model = model
        self.o = options
        self.w = _Weights(model, options.threads or os.cpu_count() or 1)
        self.hp = model.hparams
        self.n_embd = self.hp.n_embd
        self.act = "gelu" if model.arch in _GELU_ARCHS else "silu"
        self.eps = float(model.arch_kv("attention.layer_norm_rms_epsilon", 1e-6) or 1e-6)
        self.sq: dict[str, tuple[np.ndarray, np.ndarray]] = {}   # name -> (E[x^2] per matrix, share)
        self.warnings: list[str] = []
        self.rng = np.random.default_rng(options.seed)

    # results ----------------------------------------------------------------------------------------
    def record(self, name: str, x: Moments | np.ndarray, share: np.ndarray | None = None) -> None:
        if name not in self.model:
            return
        sq = x.sq if isinstance(x, Moments) else x
        sq = np.atleast_2d(np.asarray(sq, dtype=np.float64))
        t = self.model.tensor(name)
        if sq.shape[1] != t.n_per_row:
            self.warn(f"{name}: estimated {sq.shape[1]} input channels, the tensor has {t.n_per_row}")
            return
        if not np.all(np.isfinite(sq)):
            self.warn(f"{name}: the estimate is not finite")
            return
        self.sq[name] = (sq, np.ones(sq.shape[0]) if share is None else share)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def norm(self, name: str, x: Moments) -> Moments:
        """RMSNorm with the named gamma; without a usable one, gamma 1 and a warning."""
        g = self.w.vector(name, self.n_embd) if name else None
        if name and g is None:
            self.warn(f"{name}: missing or not of {self.n_embd} finite values; normalised without gamma")
        return rms_norm(x, g, self.eps)

    def centred(self, x: Moments) -> Moments:
        """Without `means`, every channel is taken as zero-mean with the same E[x^2]: a GLU's or a bias's
        mean would otherwise reach the stream as a coherent offset that the next RMSNorm divides every
        channel's variance by."""
        return x if self.o.means else Moments(np.zeros_like(x.mean), x.sq)

    def bias(self, name: str, n: int) -> np.ndarray:
        b = self.w.vector(name, n)
        return np.zeros(n) if b is None else b

    # the stream --------------------------------------------------------------------------------------
    def embedding(self) -> Moments:
        t = self.model.tensor("token_embd.weight")
        n_vocab, d = t.n_rows, t.n_per_row
        ids = np.arange(n_vocab, dtype=np.float64)
        p = (ids + self.o.zipf_offset) ** -self.o.zipf_exponent
        p /= p.sum()
        m1 = np.zeros(d)
        m2 = np.zeros(d)
        for rows, pk in self._vocab_rows(t, p):
            m1 += pk.astype(np.float32) @ rows
            m2 += pk.astype(np.float32) @ (rows * rows)
        if not self.o.means:
            return Moments(np.zeros(d), m2)
        return Moments(m1, np.maximum(m2 - m1 * m1, 0.0))

    def _vocab_rows(self, t: TensorInfo, p: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, their prior weights): the first sample_vocab ids whole, then (float types) every k-th id
        standing for the k ids from it."""
        n_vocab, d, v = t.n_rows, t.n_per_row, self.o.sample_vocab
        if not v or n_vocab <= 2 * v or t.type_name not in FLOAT_TYPES:     # float types: sampled rows
            for a, rows in _row_slabs(self.model, t):
                yield rows, p[a:a + len(rows)]
            return
        raw, bf16 = float_view(self.model.raw(t), t.type_name)
        raw = raw.reshape(n_vocab, d)
        head = raw[:v]
        k = -(-(n_vocab - v) // v)
        pick = np.arange(v, n_vocab, k)
        weight = np.add.reduceat(p[v:], pick - v)        # the mass of the ids each picked row stands for
        for part, w in ((head, p[:v]), (raw[pick], weight)):
            block = np.ascontiguousarray(part)
            yield (block if block.dtype == np.float32 else to_float32(block, bf16, nthreads=1)), w

    def run(self) -> None:
        d = self.n_embd
        if "token_embd.weight" not in self.model or self.model.tensor("token_embd.weight").n_per_row != d:
            self.warn("token_embd.weight missing or not n_embd wide: the stream starts from unit channels")
            h = Moments(np.zeros(d), np.ones(d))
        else:
            h = self.embedding()
        for il in range(self.hp.n_layer):
            h = self.block(il, h)
        if self.o.output:
            self.record("output.weight", self.norm("output_norm.weight", h))

    def block(self, il: int, h: Moments) -> Moments:
        p = f"blk.{il}."
        a = self.norm(p + "attn_norm.weight", h)
        if self.w.has(p + "ssm_out.weight"):
            upd = self.gated_delta_net(il, a)
        elif self.w.has(p + "attn_q.weight") or self.w.has(p + "attn_qkv.weight"):
            upd = self.attention(il, a)
        else:
            upd = _zero(len(h.mean))
        post_attn = p + "post_attention_norm.weight"
        ffn_norm = p + "ffn_norm.weight"
        if self.w.has(ffn_norm) and self.w.has(post_attn):           # Gemma 2/3: a norm on the update
            upd = rms_norm(upd, self.w.vector(post_attn, self.n_embd), self.eps)
        parallel = not self.w.has(ffn_norm) and not self.w.has(post_attn)
        h = _add(h, upd)
        f = a if parallel else self.norm(ffn_norm if self.w.has(ffn_norm) else post_attn, h)
        out = self.ffn(il, f)
        post_ffn = p + "post_ffw_norm.weight"
        if self.w.has(post_ffn):
            out = rms_norm(out, self.w.vector(post_ffn, self.n_embd), self.eps)
        return _add(h, out)

    def attention(self, il: int, a: Moments) -> Moments:
        p = f"blk.{il}."
        hp = self.hp
        n_head = self.model.layer_kv("attention.head_count", il) or hp.n_head
        n_kv = self.model.layer_kv("attention.head_count_kv", il) or n_head
        for n in ("attn_q", "attn_k", "attn_v", "attn_qkv"):
            self.record(p + n + ".weight", a)
        wo = p + "attn_output.weight"
        if not self.w.has(wo):
            return _zero(len(a.mean))
        n_in = self.model.tensor(wo).n_per_row
        if self.w.has(p + "attn_v.weight"):
            v = self.w.apply(p + "attn_v.weight", a)
            v = self.centred(Moments(v.mean + self.bias(p + "attn_v.bias", len(v.mean)), v.var))
        else:   # fused q|k|v rows: V is the last n_kv * head_dim
            qkv = self.w.apply(p + "attn_qkv.weight", a)
            n_v = n_in // max(n_head, 1) * n_kv
            b = self.bias(p + "attn_qkv.bias", len(qkv.mean))
            v = self.centred(Moments((qkv.mean + b)[-n_v:], qkv.var[-n_v:]))
        head_dim = len(v.mean) // max(n_kv, 1)
        if n_kv < 1 or head_dim * n_head != n_in:
            self.warn(f"{wo}: {n_head} heads of {head_dim} (kv {n_kv}) do not make its {n_in} inputs")
            return _zero(len(a.mean))
        kv_of = np.repeat(np.arange(n_kv), n_head // n_kv) if n_head % n_kv == 0 else np.arange(n_head) % n_kv
        idx = (kv_of[:, None] * head_dim + np.arange(head_dim)[None, :]).reshape(-1)
        o = Moments(v.mean[idx], v.var[idx] * self.o.attn_mix)
        wq = p + "attn_q.weight"
        if self.w.has(wq) and self.model.tensor(wq).n_rows == 2 * n_in:   # Qwen3.5/Next: q and a gate per head
            qg = self.w.apply(wq, a)
            gate = Moments(qg.mean.reshape(n_head, 2, head_dim)[:, 1].reshape(-1),
                           qg.var.reshape(n_head, 2, head_dim)[:, 1].reshape(-1))
            s1, s2 = gaussian_expect(_sigmoid, gate.mean, np.sqrt(gate.var))
            o = Moments(o.mean * s1, o.sq * s2 - (o.mean * s1) ** 2)
        self.record(wo, o)
        out = self.w.apply(wo, o)
        return self.centred(Moments(out.mean + self.bias(p + "attn_output.bias", len(out.mean)), out.var))

    def gated_delta_net(self, il: int, a: Moments) -> Moments:
        """Qwen3.5/Qwen3-Next linear attention: ssm_out reads RMSNorm(o) * ssm_norm * silu(z)."""
        p = f"blk.{il}."
        for n in ("attn_qkv", "attn_gate", "ssm_alpha", "ssm_beta", "ssm_in", "ssm_ba"):
            self.record(p + n + ".weight", a)
        wo = p + "ssm_out.weight"
        n_in = self.model.tensor(wo).n_per_row
        if not self.w.has(p + "attn_gate.weight"):
            self.warn(f"{wo}: no attn_gate (z) in block {il}; its input taken as unit variance")
            z_sq = np.ones(n_in)
        else:
            z = self.w.apply(p + "attn_gate.weight", a)
            _, z_sq = gaussian_expect(lambda g: _act(g, "silu"), z.mean, np.sqrt(z.var))
        norm_name = p + "ssm_norm.weight"
        g = None
        if self.w.has(norm_name):
            nt = self.model.tensor(norm_name)
            if n_in % max(nt.n_elements, 1) == 0:
                g = np.asarray(self.model.read(nt), dtype=np.float64).reshape(-1)
                g = np.tile(g, n_in // len(g))
        if g is None or len(z_sq) != n_in or not np.all(np.isfinite(g)):
            self.warn(f"{norm_name}: missing or not a divisor of {n_in}; ssm_out's input taken without it")
            g = np.ones(n_in)
            z_sq = z_sq if len(z_sq) == n_in else np.ones(n_in)
        x = Moments(np.zeros(n_in), g * g * z_sq)
        self.record(wo, x)
        out = self.w.apply(wo, x)
        return out

    def ffn(self, il: int, f: Moments) -> Moments:
        p = f"blk.{il}."
        out = _zero(len(f.mean))
        if self.w.has(p + "ffn_gate_inp.weight") and self.w.has(p + "ffn_down_exps.weight"):
            out = _add(out, self.moe(il, f))
        for suffix in ("", "_shexp"):
            down = p + f"ffn_down{suffix}.weight"
            if not self.w.has(down):
                continue
            s = self.glu(p, suffix, f, None)
            if s is None:
                continue
            self.record(down, s)
            y = self.w.apply(down, s)
            out = _add(out, self.centred(Moments(y.mean + self.bias(p + f"ffn_down{suffix}.bias", len(y.mean)), y.var)))
        return out

    def glu(self, p: str, suffix: str, f: Moments, expert: int | None) -> Moments | None:
        """The input of ffn_down{suffix}: act(gate) * up, or act(up) without a gate."""
        gate, up = p + f"ffn_gate{suffix}.weight", p + f"ffn_up{suffix}.weight"
        if expert is None:
            self.record(gate, f)
            self.record(up, f)
        if self.w.has(gate) and self.w.has(up):
            g, u, cov = self.w.apply_pair(gate, up, f, expert)
            return self.centred(glu_moments(g, u, cov, self.act))
        if self.w.has(up):
            u = self.w.apply(up, f, expert)
            return self.centred(act_moments(u, self.act))
        return None

    def moe(self, il: int, f: Moments) -> Moments:
        p = f"blk.{il}."
        router = self.model.tensor(p + "ffn_gate_inp.weight")
        n_exp = router.n_rows
        k = max(1, min(n_exp, self.model.layer_kv("expert_used_count", il) or 2))
        r = np.asarray(self.model.read(router), dtype=np.float64).reshape(n_exp, -1)
        self.record(p + "ffn_gate_inp.weight", f)
        n = self.o.router_samples
        x = f.mean[None, :] + np.sqrt(f.var)[None, :] * self.rng.standard_normal((n, len(f.mean)))
        logits = x @ r.T
        top = np.argsort(-logits, axis=1)[:, :k]
        sel = np.zeros((n, n_exp), dtype=bool)
        np.put_along_axis(sel, top, True, axis=1)
        if self.model.arch_kv("expert_gating_func", 1) == 2:    # LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID
            probs = _sigmoid(logits)
        else:
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = z / z.sum(axis=1, keepdims=True)
        w = np.where(sel, probs, 0.0)
        if self.model.arch_kv("expert_weights_norm", self.model.arch in ("qwen3moe", "qwen35moe", "qwen3next")):
            w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-30)
        share = sel.mean(axis=0)
        ff_sq: list[np.ndarray] = []
        in_sq = np.zeros((n_exp, len(f.mean)))
        m1 = np.zeros(len(f.mean))   # E[sum_e w_e y_e], and E[(.)^2] without the cross terms of experts
        m2 = np.zeros(len(f.mean))
        for e in range(n_exp):
            routed = x[sel[:, e]]
            if len(routed) >= 8:
                fe = Moments(routed.mean(axis=0), routed.var(axis=0))     # routing's selection: a real mean
                we1, we2 = float(w[sel[:, e], e].mean()), float((w[sel[:, e], e] ** 2).mean())
            else:      # too rarely routed to measure: the stream's moments, an average weight
                fe, we1, we2 = f, 1.0 / k, 1.0 / (k * k)
            in_sq[e] = fe.sq
            s = self.glu(p, "_exps", fe, e)
            if s is None:
                self.warn(f"{p}ffn_*_exps: no up projection; the experts' outputs are left out")
                return _zero(len(f.mean))
            ff_sq.append(s.sq)
            y = self.w.apply(p + "ffn_down_exps.weight", s, e)
            m1 += share[e] * we1 * y.mean
            m2 += share[e] * we2 * y.sq
        for n_ in ("ffn_gate_exps", "ffn_up_exps"):
            self.record(p + n_ + ".weight", in_sq, share)
        self.record(p + "ffn_down_exps.weight", np.stack(ff_sq), share)
        return self.centred(Moments(m1, np.maximum(m2 - m1 * m1, 0.0)))


def estimate_importance(model: Model, options: EstimateOptions | None = None) -> ImportanceEstimate:
    """The data-free importance matrix of every tensor llama-imatrix would record (blk.* matrices that
    llama-quantize quantizes, and expert routers' inputs), uniform where no estimate can be made."""
    t0 = time.perf_counter()
    o = options or EstimateOptions()
    est = _Estimator(model, o)
    if est.n_embd <= 0:
        est.warn(f"{model.arch}.embedding_length missing: every tensor gets uniform importance")
    else:
        try:
            est.run()
        except (ValueError, FloatingPointError, IndexError) as e:   # a layout the walk does not know
            est.warn(f"the walk stopped ({e}); the tensors it had not reached get uniform importance")
    entries: dict[str, TensorImportance] = {}
    uniform: list[str] = []
    for t in _targets(model, o):
        ne0 = t.n_per_row
        n_mat = t.shape[2] if len(t.shape) > 2 else 1
        got = est.sq.get(t.name)
        if got is None or got[0].shape != (n_mat, ne0) and got[0].shape != (1, ne0):
            uniform.append(t.name)
            entries[t.name] = TensorImportance(t.name, np.full((n_mat, ne0), float(NOTIONAL_TOKENS), np.float32),
                                               np.full(n_mat, float(NOTIONAL_TOKENS), np.float32), uniform=True)
            continue
        sq, share = got
        sq = np.broadcast_to(sq, (n_mat, ne0))
        counts = np.rint(np.broadcast_to(share, (n_mat,)) * NOTIONAL_TOKENS)
        sq = np.maximum(sq, 1e-30 * max(float(sq.max()), 1e-30))    # no zero weight: quantizers divide by sums
        sq = sq / sq.max(axis=1, keepdims=True)
        sq = sq ** o.temper
        entries[t.name] = TensorImportance(t.name, (sq * counts[:, None]).astype(np.float32),
                                           counts.astype(np.float32))
    if uniform:
        est.warn(f"{len(uniform)} tensor(s) get uniform importance (no estimate), e.g. {uniform[0]}")
    return ImportanceEstimate(str(model.path), dict(sorted(entries.items())), o, warnings=est.warnings,
                              seconds=time.perf_counter() - t0)


def estimate_imatrix(model: str | Path | Model, options: EstimateOptions | None = None) -> ImportanceEstimate:
    """Python API: the data-free importance matrix of a GGUF model (a path or an opened Model).

        est = prism_native.estimate_imatrix("model-f16.gguf")
        est.save("model.imatrix.gguf")          # llama-imatrix's format, for llama-quantize --imatrix
        prism_native.quantize_model("model-f16.gguf", "out.gguf", "Q3_K_M", imatrix=est.to_imatrix())
    """
    from ..read.model import open_model
    return estimate_importance(model if isinstance(model, Model) else open_model(model), options)


def _targets(model: Model, o: EstimateOptions) -> list[TensorInfo]:
    """The matrices llama-imatrix records (it sees every blk.* matrix multiplication; the output head only
    when asked) among those llama-quantize quantizes, plus the expert routers it also records."""
    out = []
    names = {t.name for t in quantizable_tensors(model)}
    for t in model.tensors:
        if len(t.shape) < 2 or t.n_dims < 2:
            continue
        if (t.name in names and _BLOCK.match(t.name)) or (o.output and t.name == "output.weight" and t.name in names):
            out.append(t)
    return out
