"""llama-perplexity: the argument lists for a full-precision logits run and a KL-divergence run, and a
reader of what it prints (tools/perplexity/perplexity.cpp: `perplexity` and `kl_divergence`)."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ToolError
from .binaries import last_line, run

_NUM = r"([-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf))"   # glibc prints "-nan" too
_PM = r"\s*(?:±|\+/-)\s*"
_PATTERNS: dict[str, re.Pattern[str]] = {
    # perplexity(): "Final estimate: PPL = 28.9982 +/- 1.20397"
    "final": re.compile(rf"Final estimate: PPL = {_NUM}{_PM}{_NUM}"),
    # kl_divergence(): the summary blocks
    "ppl_q": re.compile(rf"^Mean PPL\(Q\)\s*:\s*{_NUM}{_PM}{_NUM}", re.M),
    "ppl_base": re.compile(rf"^Mean PPL\(base\)\s*:\s*{_NUM}{_PM}{_NUM}", re.M),
    "ln_ratio": re.compile(rf"^Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*{_NUM}{_PM}{_NUM}", re.M),
    "kld_mean": re.compile(rf"^Mean\s+KLD:\s*{_NUM}{_PM}{_NUM}", re.M),
    "kld_max": re.compile(rf"^Maximum KLD:\s*{_NUM}", re.M),
    "kld_p99": re.compile(rf"^99\.0%\s+KLD:\s*{_NUM}", re.M),
    "kld_p999": re.compile(rf"^99\.9%\s+KLD:\s*{_NUM}", re.M),
    "kld_median": re.compile(rf"^Median\s+KLD:\s*{_NUM}", re.M),
    "rms_dp": re.compile(rf"^RMS Δp\s*:\s*{_NUM}{_PM}{_NUM}\s*%", re.M),
    "same_top": re.compile(rf"^Same top p:\s*{_NUM}{_PM}{_NUM}\s*%", re.M),
}
# "perplexity: calculating perplexity over 20 chunks, n_ctx=512" / "kl_divergence: computing over 20 chunks"
_CHUNKS = re.compile(r"(?:calculating perplexity|computing) over (\d+) chunks, n_ctx=(\d+)")
# progress: "[7]33.8222," in a perplexity run, table rows "   7      37.4565 ±" in a KL-divergence run
_DONE_PPL = re.compile(r"\[(\d+)\]" + _NUM + ",")
_DONE_KLD = re.compile(r"^\s*(\d+)\s+" + _NUM + r"\s+±", re.M)
# a KL-divergence table row: chunk, PPL(Q), ln(PPL(Q)/PPL(base)), KLD, RMS dp %, same top %, each "x ± err";
# every row holds the running estimates over the chunks so far
_KLD_ROW = re.compile(rf"^\s*(\d+)\s+{_NUM}{_PM}{_NUM}\s+{_NUM}{_PM}{_NUM}\s+{_NUM}{_PM}{_NUM}\s+"
                      rf"{_NUM}{_PM}{_NUM}\s*%\s+{_NUM}{_PM}{_NUM}\s*%", re.M)


@dataclass(frozen=True)
class Measurement:
    """What one llama-perplexity run reports. KL figures are NaN for the full-precision run itself;
    same_top and rms_dp are percentages, as printed."""

    ppl: float
    ppl_err: float
    chunks: int
    n_ctx: int
    ppl_base: float = math.nan
    ln_ppl_ratio: float = math.nan
    ln_ppl_ratio_err: float = math.nan
    kld_mean: float = math.nan
    kld_mean_err: float = math.nan
    kld_median: float = math.nan
    kld_p99: float = math.nan
    kld_p999: float = math.nan
    kld_max: float = math.nan
    rms_dp: float = math.nan
    same_top: float = math.nan
    same_top_err: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Measurement":
        return cls(**{k: (math.nan if v is None else v) for k, v in d.items() if k in cls.__dataclass_fields__})


def _get(text: str, key: str) -> tuple[float, ...] | None:
    m = _PATTERNS[key].search(text)
    return tuple(float(g) for g in m.groups()) if m else None


def parse_output(text: str) -> Measurement:
    """A Measurement from llama-perplexity's output (log lines and results, stdout and stderr merged).
    ToolError when it holds no final result (llama-perplexity may exit 0 after an error)."""
    chunks_m = _CHUNKS.search(text)
    chunks, n_ctx = (int(chunks_m.group(1)), int(chunks_m.group(2))) if chunks_m else (0, 0)
    kld = _get(text, "kld_mean")
    if kld is not None:
        ppl = _get(text, "ppl_q")
        if ppl is None:
            raise ToolError("llama-perplexity printed KL divergence statistics but no 'Mean PPL(Q)'")
        nan2 = (math.nan, math.nan)
        one = lambda k: (_get(text, k) or (math.nan,))[0]  # noqa: E731
        ln_ratio = _get(text, "ln_ratio") or nan2
        same = _get(text, "same_top")
        if same is None:       # the last statistic llama-perplexity prints: the output was cut short
            raise ToolError(f"llama-perplexity's output ends before its last statistic: {last_line(text)}")
        return Measurement(ppl=ppl[0], ppl_err=ppl[1], chunks=chunks, n_ctx=n_ctx,
                           ppl_base=(_get(text, "ppl_base") or nan2)[0],
                           ln_ppl_ratio=ln_ratio[0], ln_ppl_ratio_err=ln_ratio[1],
                           kld_mean=kld[0], kld_mean_err=kld[1], kld_median=one("kld_median"),
                           kld_p99=one("kld_p99"), kld_p999=one("kld_p999"), kld_max=one("kld_max"),
                           rms_dp=(_get(text, "rms_dp") or nan2)[0], same_top=same[0], same_top_err=same[1])
    final = _get(text, "final")
    if final is None:
        raise ToolError(f"llama-perplexity gave no result: {last_line(text)}")
    return Measurement(ppl=final[0], ppl_err=final[1], chunks=chunks, n_ctx=n_ctx)


def parse_running(text: str) -> Measurement | None:
    """The running estimates of the last chunk when a run's output stops after its last chunk (its
    summary lost): PPL, mean KLD, RMS dp and same-top rate; the KLD percentiles stay NaN. None unless
    the last chunk printed is the last chunk of the run."""
    m = _CHUNKS.search(text)
    if not m:
        return None
    chunks, n_ctx = int(m.group(1)), int(m.group(2))
    rows = list(_KLD_ROW.finditer(text))
    if rows and int(rows[-1].group(1)) == chunks:
        v = [float(g) for g in rows[-1].groups()[1:]]
        return Measurement(ppl=v[0], ppl_err=v[1], chunks=chunks, n_ctx=n_ctx, ln_ppl_ratio=v[2],
                           ln_ppl_ratio_err=v[3], kld_mean=v[4], kld_mean_err=v[5], rms_dp=v[6], same_top=v[8],
                           same_top_err=v[9])
    done = list(_DONE_PPL.finditer(text))
    if not rows and done and int(done[-1].group(1)) == chunks:
        return Measurement(ppl=float(done[-1].group(2)), ppl_err=math.nan, chunks=chunks, n_ctx=n_ctx)
    return None


def chunks_done(text: str) -> int:
    """Chunks finished so far, from a run's partial output (for progress)."""
    last = 0
    for rx in (_DONE_PPL, _DONE_KLD):
        for m in rx.finditer(text):
            last = max(last, int(m.group(1)))
    return last


# A run loses its summary in 3-50% of runs here, more the busier the machine (llama.cpp issue 22142: the
# logger thread is not drained at exit; measured on a tiny model, 2 cores, with and without other load).
RUN_ATTEMPTS = 8


@dataclass(frozen=True)
class Perplexity:
    """How to run llama-perplexity for one evaluation: same text, context and chunks every time."""

    binary: Path
    text: Path
    n_ctx: int = 512
    chunks: int = 32
    threads: int = 2
    rpc: tuple[str, ...] = ()   # llama.cpp RPC servers (host:port): llama-perplexity offloads layers to them

    def _common(self, model: Path) -> list[str]:
        rpc = ["--rpc", ",".join(self.rpc)] if self.rpc else []
        return [str(self.binary), "-m", str(model), "-c", str(self.n_ctx), "-t", str(self.threads),
                "-b", str(max(self.n_ctx, 2048)), *rpc]

    def base_argv(self, model: Path, logits: Path) -> list[str]:
        """Perplexity of the full-precision model, saving its logits for the KL-divergence runs."""
        return [*self._common(model), "-f", str(self.text), "--chunks", str(self.chunks),
                "--kl-divergence-base", str(logits)]

    def kld_argv(self, model: Path, logits: Path) -> list[str]:
        """KL divergence of a quantized model (the tokens come from the logits file)."""
        return [*self._common(model), "--kl-divergence-base", str(logits), "--kl-divergence"]

    def run(self, argv: list[str], on_chunks: Callable[[int], None] | None = None) -> tuple[Measurement, str]:
        """Run llama-perplexity. Its logger (common/log.cpp) is a worker thread that is never joined at exit
        (common_log_main leaks it on purpose), so a successful run sometimes loses its last lines, the
        results among them: such a run is repeated, up to RUN_ATTEMPTS times in all, and if every run
        lost its summary the last chunk's running estimates of any run that kept them are taken (parse_running:
        no percentiles)."""
        fallback: tuple[Measurement, str] | None = None
        for attempt in range(RUN_ATTEMPTS):
            log = run(argv, None if on_chunks is None else (lambda text: on_chunks(chunks_done(text))))
            try:
                return parse_output(log), log
            except ToolError:
                running = parse_running(log)
                if running is not None and fallback is None:
                    fallback = running, log
                if attempt == RUN_ATTEMPTS - 1 and fallback is None:
                    raise
        assert fallback is not None
        return fallback
