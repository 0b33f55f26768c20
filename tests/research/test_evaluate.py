"""`eval` without llama.cpp: reading llama-perplexity's real output (captured in tests/data), baseline
specs, tool discovery, the cache, the frontier and the reports."""
from __future__ import annotations

import importlib.util
import json
import math
import struct
import sys
from pathlib import Path

import pytest

from prism_native.errors import PrismError
from prism_native.tools.binaries import find_tool
from prism_native.tools.perplexity import Measurement, Perplexity, chunks_done, parse_output, parse_running
from prism_native.research.evaluate import (FRONTIER, IMATRIX, MODEL_IN, MODEL_OUT, SERIES_FTYPE, SERIES_PRISM,
                                            SERIES_PURE, SERIES_RECIPE, SERIES_REFERENCE, Results, Row, Setup, Store,
                                            baseline_method, parse_baselines, recipe_method)
from prism_native.research.report import best_fits, frontier, markdown, pareto_png, write_all

DATA = Path(__file__).parents[1] / "data" / "llama_perplexity"


def _log(name: str) -> str:
    return (DATA / name).read_text()


# -- llama-perplexity's output -----------------------------------------------------------------------

def test_parse_full_precision_run():
    m = parse_output(_log("smollm2_base.log"))
    assert (m.ppl, m.ppl_err, m.chunks, m.n_ctx) == (28.9982, 1.20397, 20, 512)
    assert math.isnan(m.kld_mean) and math.isnan(m.same_top)


def test_parse_kl_divergence_run():
    m = parse_output(_log("smollm2_q3_k_m_kld.log"))
    assert (m.ppl, m.ppl_err) == (32.341717, 1.353632)
    assert m.ppl_base == 28.985451
    assert (m.kld_mean, m.kld_mean_err) == (0.126399, 0.001777)
    assert (m.kld_median, m.kld_p99, m.kld_p999, m.kld_max) == (0.097406, 0.630779, 1.177742, 2.985626)
    assert (m.same_top, m.same_top_err) == (77.118, 0.588)
    assert (m.ln_ppl_ratio, m.rms_dp) == (0.109564, 7.969)
    assert (m.chunks, m.n_ctx) == (20, 512)


def test_parse_tiny_model_runs():
    base = parse_output(_log("tiny_base.log"))
    kld = parse_output(_log("tiny_q4_k_m_kld.log"))
    assert (base.chunks, base.n_ctx) == (8, 128)
    assert kld.ppl_base == pytest.approx(base.ppl, abs=1e-3)
    assert 0 < kld.kld_mean < 1e-3 and 0 < kld.same_top <= 100


def test_errors_without_a_result():
    # llama-perplexity exits 0 here: the error must come from the missing result
    with pytest.raises(PrismError, match="you need at least 256 tokens"):
        parse_output(_log("tiny_too_short.log"))
    with pytest.raises(PrismError, match="no result"):
        parse_output(_log("tiny_missing_base.log"))


def _cut_after_last_chunk(text: str, pattern: str) -> str:
    """The output as llama-perplexity's logger sometimes leaves it: everything after the last chunk lost."""
    i = text.index(pattern)
    return text[:text.index("\n", i + 1) + 1]


def test_summary_lost_after_the_last_chunk():
    """Every run repeats RUN_ATTEMPTS times, then the last chunk's running estimates stand in."""
    kld = _cut_after_last_chunk(_log("smollm2_q3_k_m_kld.log"), "\n  20 ")
    with pytest.raises(PrismError, match="no result|ends before"):
        parse_output(kld)
    m = parse_running(kld)
    assert (m.chunks, m.n_ctx) == (20, 512) and m.kld_mean == pytest.approx(0.126399, abs=1e-5)
    assert m.same_top == pytest.approx(77.118, abs=1e-3) and math.isnan(m.kld_p99)
    base = _cut_after_last_chunk(_log("smollm2_base.log"), "[20]")
    assert parse_running(base).ppl == pytest.approx(28.9982, abs=1e-4)
    assert parse_running(_cut_after_last_chunk(_log("smollm2_q3_k_m_kld.log"), "\n  19 ")) is None


def test_a_run_repeats_until_its_summary_survives(monkeypatch):
    """A run whose summary is lost is repeated; the first whole output wins, else the running estimates of any
    attempt that kept its last chunk (not only the last attempt's), else the error."""
    from prism_native.tools import perplexity as ppl
    full = _log("smollm2_q3_k_m_kld.log")
    last_chunk = _cut_after_last_chunk(full, "\n  20 ")
    cut = _cut_after_last_chunk(full, "\n  19 ")
    p = Perplexity(Path("/bin/llama-perplexity"), Path("t.txt"))

    def runs(*logs: str) -> list[str]:
        calls: list[str] = []
        seq = iter(logs)
        monkeypatch.setattr(ppl, "run", lambda argv, on_output=None: calls.append("run") or next(seq))
        return calls

    calls = runs(cut, cut, full)
    assert p.run(["x"])[0].kld_p99 == parse_output(full).kld_p99 and len(calls) == 3
    calls = runs(cut, last_chunk, *[cut] * (ppl.RUN_ATTEMPTS - 2))
    m, log = p.run(["x"])
    assert log == last_chunk and m.kld_mean == pytest.approx(0.126399, abs=1e-5) and len(calls) == ppl.RUN_ATTEMPTS
    runs(*[cut] * ppl.RUN_ATTEMPTS)
    with pytest.raises(PrismError, match="no result|ends before"):
        p.run(["x"])


def test_measurement_json_round_trip():
    for name in ("smollm2_base.log", "smollm2_q3_k_m_kld.log"):
        m = parse_output(_log(name))
        d = json.loads(json.dumps(m.to_json(), allow_nan=False))
        back = Measurement.from_json(d)
        assert [(a, b) for a, b in zip(back.to_json().values(), m.to_json().values()) if a != b] == []


def test_chunks_done_follows_partial_output():
    for name in ("smollm2_base.log", "smollm2_q3_k_m_kld.log"):
        text = _log(name)
        assert chunks_done(text) == 20
        assert chunks_done(text[: len(text) // 3]) < 20
        assert chunks_done(text[:200]) == 0


def test_perplexity_arguments(tmp_path):
    p = Perplexity(Path("/bin/llama-perplexity"), tmp_path / "t.txt", n_ctx=256, chunks=7, threads=3)
    base = p.base_argv(Path("m.gguf"), Path("b.kld"))
    assert base[:3] == ["/bin/llama-perplexity", "-m", "m.gguf"]
    for flag, val in (("-c", "256"), ("-t", "3"), ("--chunks", "7"), ("--kl-divergence-base", "b.kld"),
                      ("-f", str(tmp_path / "t.txt"))):
        assert base[base.index(flag) + 1] == val
    kld = p.kld_argv(Path("q.gguf"), Path("b.kld"))
    assert "--kl-divergence" in kld and "-f" not in kld


# -- methods ------------------------------------------------------------------------------------------

def test_parse_baselines():
    assert parse_baselines("q4_k_m, Q4_K:pure,Q4_K_M,,") == ["Q4_K_M", "Q4_K:pure"]
    assert parse_baselines("") == []
    full = parse_baselines("frontier")
    assert full == list(FRONTIER) and len(full) == 24
    assert parse_baselines("Q4_K_M,frontier")[0] == "Q4_K_M" and len(parse_baselines("Q4_K_M,frontier")) == 24
    for bad in ("Q9_K", "Q4_K:fast", "7", "COPY"):
        with pytest.raises(PrismError):
            parse_baselines(bad)


@pytest.mark.parametrize("n_embd, kept", [(256, ["Q2_K", "IQ3_S", "IQ3_M", "Q4_K_M", "IQ4_XS:pure"]),
                                           (320, list(FRONTIER))])   # rows of 320: every IQ2/IQ3 falls back
def test_frontier_without_an_imatrix_drops_only_what_llama_quantize_refuses(tmp_path, n_embd, kept):
    from support import synth
    from prism_native.read.model import open_model
    from prism_native.research.evaluate import _without_imatrix_refusals
    path = tmp_path / "m.gguf"
    synth.write(path, synth.Spec(n_embd=n_embd, n_ff=2 * n_embd, n_layer=8, n_head=4, n_head_kv=1, n_vocab=320))
    model = open_model(path)
    skipped: list[str] = []
    got = _without_imatrix_refusals(model, FRONTIER, {"Q4_K_M"}, skipped)
    assert set(kept) <= set(got) and len(got) + len(skipped) == len(FRONTIER)
    refused = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S", "IQ3_XXS", "IQ3_XS"}
    assert set(got).isdisjoint(refused) if n_embd == 256 else not skipped
    assert all("give --imatrix" in s for s in skipped)
    if skipped:
        with pytest.raises(PrismError, match="--sizes-of IQ2_M"):
            _without_imatrix_refusals(model, ["IQ2_M"], {"IQ2_M"}, [])


def test_baseline_method_and_argv():
    m = baseline_method("Q4_K_M", requantize=False, imatrix=False)
    assert (m.name, m.series, m.args) == ("Q4_K_M", SERIES_FTYPE, (MODEL_IN, MODEL_OUT, "Q4_K_M"))
    p = baseline_method("IQ4_XS:pure", requantize=True, imatrix=True)
    assert (p.name, p.series) == ("IQ4_XS --pure", SERIES_PURE)
    assert p.args == ("--pure", "--imatrix", IMATRIX, "--allow-requantize", MODEL_IN, MODEL_OUT, "IQ4_XS")
    argv = p.argv(Path("/q"), Path("in.gguf"), Path("out.gguf"), "im.dat", 2)
    assert argv == ["/q", "--pure", "--imatrix", "im.dat", "--allow-requantize", "in.gguf", "out.gguf", "IQ4_XS", "2"]


def test_recipe_method_takes_the_evals_paths_and_inlines_rule_files(tmp_path):
    from prism_native.cli.eval import _recipes
    rules = tmp_path / "rules.txt"
    rules.write_text("ffn_down=q6_k\n")
    card = tmp_path / "card.sh"
    card.write_text("# from a model card\n./llama-quantize --imatrix my.dat --tensor-type attn_v=q8_0 \\\n"
                    f"  --tensor-type-file {rules} model-F16.gguf model-out.gguf Q4_K_M 8\n")
    [(name, cmd)] = _recipes([f"card={card}"])
    m = recipe_method(name, cmd, requantize=False, imatrix=True)
    assert (m.name, m.series) == ("card", SERIES_RECIPE)
    assert m.args == ("--tensor-type", "attn_v=Q8_0", "--tensor-type", "ffn_down=Q6_K", "--imatrix", IMATRIX,
                      MODEL_IN, MODEL_OUT, "Q4_K_M")
    with pytest.raises(PrismError, match="--imatrix"):
        recipe_method(name, cmd, requantize=False, imatrix=False)
    for bad in ("Q4_K_M", "prism_native x", ""):
        with pytest.raises(PrismError, match="name"):
            recipe_method(bad, cmd, requantize=False, imatrix=True)
    for bad, msg in (("card", "NAME=FILE"), (f"x={tmp_path / 'none.sh'}", "cannot read")):
        with pytest.raises(PrismError, match=msg):
            _recipes([bad])
    (tmp_path / "empty.sh").write_text("# nothing\n")
    with pytest.raises(PrismError, match="no command"):
        _recipes([f"e={tmp_path / 'empty.sh'}"])


# -- finding the tools --------------------------------------------------------------------------------

def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_tool_in_a_directory(tmp_path):
    exe = _exe(tmp_path / "build" / "bin" / "llama-perplexity")
    assert find_tool("llama-perplexity", tmp_path) == exe
    with pytest.raises(PrismError, match="llama-quantize not found in"):
        find_tool("llama-quantize", tmp_path)
    with pytest.raises(PrismError, match="no such directory"):
        find_tool("llama-quantize", tmp_path / "nope")


def test_find_tool_on_path(tmp_path, monkeypatch):
    monkeypatch.delenv("PRISM_LLAMA_QUANTIZE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrismError, match="llama-perplexity not found on PATH.*--llama-cpp"):
        find_tool("llama-perplexity")
    exe = _exe(tmp_path / "llama-perplexity")
    assert find_tool("llama-perplexity") == exe


def test_find_tool_next_to_prism_llama_quantize(tmp_path, monkeypatch):
    """$PRISM_LLAMA_QUANTIZE names llama-quantize; the other tools are looked for beside it first."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    quantize = _exe(tmp_path / "b" / "llama-quantize")
    monkeypatch.setenv("PRISM_LLAMA_QUANTIZE", str(quantize))
    assert find_tool("llama-quantize") == quantize
    with pytest.raises(PrismError, match="llama-perplexity not found on PATH"):
        find_tool("llama-perplexity")
    perplexity = _exe(tmp_path / "b" / "llama-perplexity")
    assert find_tool("llama-perplexity") == perplexity
    monkeypatch.setenv("PRISM_LLAMA_QUANTIZE", str(tmp_path / "missing"))
    with pytest.raises(PrismError, match="not an executable file"):
        find_tool("llama-quantize")


# -- cache, frontier, reports -------------------------------------------------------------------------

def _row(method: str, series: str, mib: float, kld: float, ppl: float = 10.0, budget: float | None = None) -> Row:
    m = Measurement(ppl=ppl + kld, ppl_err=0.1, chunks=4, n_ctx=128, kld_mean=kld, kld_p99=5 * kld, same_top=90.0)
    return Row(method, series, method.lower(), int(mib * 2**20), 50_000_000, m, target="t",
               budget_bytes=None if budget is None else int(budget * 2**20))


def test_store_round_trip(tmp_path):
    s = Store(tmp_path / "cache")
    r = _row("Q4_K_M", SERIES_FTYPE, 80.0, 0.05)
    s.put(r)
    back = Store(tmp_path / "cache").get(r.key)
    assert back is not None and back.cached and back.to_json() == r.to_json()
    assert s.get("other") is None


def test_frontier():
    pts = [(1.0, 5.0), (2.0, 3.0), (2.5, 4.0), (3.0, 1.0), (0.5, 9.0), (3.0, 2.0)]
    assert frontier(pts) == [4, 0, 1, 3]


def test_best_fits():
    rows = [_row("Q3_K_M", SERIES_FTYPE, 80.0, 0.10), _row("Q4_K_M", SERIES_FTYPE, 90.0, 0.04),
            _row("Q4_K --pure", SERIES_PURE, 85.0, 0.06),
            _row("prism small", SERIES_PRISM, 70.0, 0.2), _row("prism mid", SERIES_PRISM, 86.0, 0.05),
            _row("prism at Q4_K_M", SERIES_PRISM, 89.9, 0.03, budget=90.0)]
    fits = best_fits(rows)
    assert fits["prism small"] is None
    assert fits["prism mid"].method == "Q4_K --pure"
    assert fits["prism at Q4_K_M"].method == "Q4_K_M"     # the budget counts, not the slightly smaller file


def _results(tmp_path: Path) -> Results:
    class FakeModel:
        name = "fake"
        path = tmp_path / "fake.gguf"
        n_params = 50_000_000
    text = tmp_path / "t.txt"
    text.write_text("text")
    ref = Row("F16 (reference)", SERIES_REFERENCE, "ref", 100 * 2**20, 50_000_000,
              Measurement(ppl=10.0, ppl_err=0.1, chunks=4, n_ctx=128))
    rows = [_row("Q3_K_M", SERIES_FTYPE, 80.0, 0.10), _row("Q4_K_M", SERIES_FTYPE, 90.0, 0.04),
            _row("prism_native size of Q4_K_M", SERIES_PRISM, 89.0, 0.03, budget=90.0)]
    setup = Setup(FakeModel(), Path("q"), Perplexity(Path("p"), text, 128, 4), tmp_path)  # type: ignore[arg-type]
    return Results(ref, rows, text, setup, skipped=["prism_native 1 bpw: budget too small"])


def test_reports(tmp_path):
    res = _results(tmp_path)
    md = markdown(res)
    assert "| Method | Size (MiB) | BPW | PPL | Mean KLD | 99% KLD | Same top |" in md
    assert md.index("F16 (reference)") < md.index("Q3_K_M |") < md.index("prism_native size of Q4_K_M |")
    assert "| prism_native size of Q4_K_M | 89.00 | 0.03000 | Q4_K_M | 90.00 | 0.04000 | 0.750 |" in md
    assert "budget too small" in md
    written = write_all(res, tmp_path / "out")
    names = {p.name for p in written}
    assert {"results.csv", "results.json", "results.md"} <= names
    lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert lines[0].startswith("method,series,target,file_bytes") and len(lines) == 5
    d = json.loads((tmp_path / "out" / "results.json").read_text())
    assert d["best_fit"] == {"prism_native size of Q4_K_M": "Q4_K_M"} and len(d["rows"]) == 3
    if importlib.util.find_spec("matplotlib") is not None:
        assert "pareto.png" in names and (tmp_path / "out" / "pareto.png").stat().st_size > 10_000


def test_pareto_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import fails as if not installed
    assert pareto_png(_results(tmp_path), tmp_path / "p.png") is False
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


# -- the evaluation text's extractor (scripts/get_eval_text.py) ---------------------------------------

def _xdr_strings(values: list[str]) -> bytes:
    out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(values))
    for v in values:
        b = v.encode()
        out += struct.pack(">ii", 0x00040009, len(b)) + b
    return out


def test_r_reader_reads_character_vectors():
    spec = importlib.util.spec_from_file_location("get_eval_text",
                                                  Path(__file__).parents[2] / "scripts" / "get_eval_text.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    lines = ["PERSUASION", "", "Chapter 1", "", "Sir Walter Elliot, of Kellynch Hall,", "was a man who", "",
             "Next paragraph."]
    assert mod.RReader(_xdr_strings(lines)).item() == lines
    assert mod.novel_text(lines, 20) == "Chapter 1\n\nSir Walter Elliot, of Kellynch Hall,\nwas a man who\n"
