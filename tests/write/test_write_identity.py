"""quantize writes what llama-quantize writes: every tensor's bytes, and the whole file, on synthetic dense,
tied, hybrid (Qwen3.5-like) and MoE models and on SmolLM2, with and without an importance matrix.

Each case runs the real llama-quantize (skipped without one) and `prism-native quantize ... -- ARGS` with
the same arguments, then compares sha256 per tensor and of the whole file.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest
from support import synth

from prism_native.cli.main import main
from prism_native.read.imatrix import load_imatrix, write_dat, write_gguf
from prism_native.read.model import Model

V = synth.VARIANTS

# name -> (spec, llama-quantize arguments; IMAT stands for the imatrix path)
CASES: dict[str, tuple[synth.Spec, list[str]]] = {
    "dense-Q4_K_M": (V["dense"], ["Q4_K_M"]),
    "dense-imat-Q4_K_M": (V["dense"], ["--imatrix", "IMAT", "Q4_K_M"]),
    "dense-imat-Q2_K_S-include": (V["dense"], ["--imatrix", "IMAT", "--include-weights", "blk.", "Q2_K_S"]),
    "dense-imat-exclude-Q4_0": (V["dense"], ["--imatrix", "IMAT", "--exclude-weights", "ffn_down", "Q4_0"]),
    "tied-Q3_K_M": (V["tied"], ["Q3_K_M"]),
    "tied-imat-IQ4_XS": (V["tied"], ["--imatrix", "IMAT", "IQ4_XS"]),
    "tied-f32-fallbacks-Q5_K_S": (replace(V["tied"], dtype="F32"), ["Q5_K_S"]),
    "tied-bf16-targets": (replace(V["tied"], dtype="BF16"),
                          ["--tensor-type", "ffn_down=f16", "--tensor-type", "attn_q=bf16",
                           "--output-tensor-type", "f32", "Q6_K"]),
    "hybrid-IQ4_NL": (V["hybrid"], ["IQ4_NL"]),
    "hybrid-imat-Q5_K_M": (V["hybrid"], ["--imatrix", "IMAT", "Q5_K_M"]),
    "moe-Q4_K_M": (V["moe"], ["Q4_K_M"]),
    "moe-imat-Q3_K_S": (V["moe"], ["--imatrix", "IMAT", "Q3_K_S"]),
    "moe-bf16-imat-pure-Q5_1": (replace(V["moe"], dtype="BF16"), ["--imatrix", "IMAT", "--pure", "Q5_1"]),
    "moe-imat-dat-Q4_1": (V["moe"], ["--imatrix", "IMATDAT", "--tensor-type", "exps=q2_k", "Q4_1"]),
    "q8-requantize-Q4_K_S": (replace(V["dense"], dtype="Q8_0"), ["--allow-requantize", "Q4_K_S"]),
    "mha-leave-output-Q8_0": (V["mha"], ["--leave-output-tensor", "--token-embedding-type", "q4_0", "Q8_0"]),
    "falcon-Q4_K_M": (V["falcon"], ["Q4_K_M"]),
    "ple-F16": (V["ple"], ["--override-kv", "general.name=str:renamed", "--override-kv", "x.n=int:-7",
                           "--override-kv", "x.f=float:0.1", "--override-kv", "x.b=bool:true", "F16"]),
    "dense-COPY": (V["dense"], ["COPY"]),
    "dense-BF16": (V["dense"], ["BF16"]),
    "align64-Q8_0": (replace(V["dense"], n_layer=2, alignment=64), ["Q8_0"]),
    "dense-prune-Q4_K_M": (V["dense"], ["--prune-layers", "3,5,15,5", "Q4_K_M"]),
    "moe-imat-prune-Q4_K_M": (V["moe"], ["--imatrix", "IMAT", "--prune-layers", "0,2", "Q4_K_M"]),
    "nul-string-Q4_0": (replace(V["dense"], n_layer=2, kv={"test.nul": "before\0after"}), ["Q4_0"]),
    # the low-bit mixes whose types need no imatrix, and per-tensor types mixing them
    "dense-TQ1_0": (V["dense"], ["TQ1_0"]),
    "dense-imat-Q1_0": (V["dense"], ["--imatrix", "IMAT", "Q1_0"]),
    "tied-TQ2_0": (V["tied"], ["TQ2_0"]),
    "tied-imat-Q2_0": (V["tied"], ["--imatrix", "IMAT", "Q2_0"]),
    "hybrid-Q2_0": (V["hybrid"], ["Q2_0"]),
    "hybrid-imat-TQ2_0": (V["hybrid"], ["--imatrix", "IMAT", "TQ2_0"]),
    "moe-MXFP4_MOE": (V["moe"], ["MXFP4_MOE"]),
    "moe-imat-MXFP4_MOE": (V["moe"], ["--imatrix", "IMAT", "MXFP4_MOE"]),
    "dense-low-bit-types": (V["dense"], ["--tensor-type", "ffn_down=nvfp4", "--tensor-type", "ffn_up=q1_0",
                                         "--tensor-type", "attn_q=mxfp4", "--tensor-type", "attn_k=tq1_0",
                                         "--tensor-type", "ffn_gate=q2_0", "--output-tensor-type", "tq2_0",
                                         "Q3_K_M"]),
    "moe-imat-low-bit-types": (V["moe"], ["--imatrix", "IMAT", "--tensor-type", "exps=nvfp4",
                                          "--tensor-type", "attn_v=q2_0", "Q2_K"]),
    "dense-IQ3_S": (V["dense"], ["IQ3_S"]),
    "moe-IQ3_S": (V["moe"], ["IQ3_S"]),
    "hybrid-imat-IQ3_M": (V["hybrid"], ["--imatrix", "IMAT", "IQ3_M"]),
    "tied-imat-IQ3_XS": (V["tied"], ["--imatrix", "IMAT", "IQ3_XS"]),
    # the mixes llama-quantize writes only with an imatrix (the IQ1/IQ2 lattices)
    "dense-imat-IQ2_XXS": (V["dense"], ["--imatrix", "IMAT", "IQ2_XXS"]),
    "tied-imat-IQ2_XS": (V["tied"], ["--imatrix", "IMAT", "IQ2_XS"]),
    "moe-imat-IQ2_S": (V["moe"], ["--imatrix", "IMAT", "IQ2_S"]),
    "hybrid-imat-IQ2_M": (V["hybrid"], ["--imatrix", "IMAT", "IQ2_M"]),
    "dense-imat-IQ1_S": (V["dense"], ["--imatrix", "IMAT", "IQ1_S"]),
    "moe-imat-IQ1_M": (V["moe"], ["--imatrix", "IMAT", "IQ1_M"]),
    "tied-imat-IQ3_XXS": (V["tied"], ["--imatrix", "IMAT", "IQ3_XXS"]),
}


def sha(b: bytes | np.ndarray) -> str:
    return hashlib.sha256(bytes(memoryview(b))).hexdigest()


def tensor_hashes(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (type, sha256 of the tensor's bytes), in file order (prism_native's reader: the gguf
    package does not know every type llama-quantize writes, e.g. Q2_0)."""
    m = Model(path)
    return {t.name: (t.type_name, sha(m.raw(t))) for t in m.tensors}


def run_llama(binary: Path, src: Path, out: Path, args: list[str], threads: int = 2) -> None:
    r = subprocess.run([str(binary), *args[:-1], str(src), str(out), args[-1], str(threads)],
                       capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]


def assert_same_files(ref: Path, ours: Path) -> None:
    a, b = tensor_hashes(ref), tensor_hashes(ours)
    assert list(a) == list(b)                                   # llama's tensor order
    diff = [n for n in a if a[n] != b[n]]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[0]}: {a[diff[0]]} vs {b[diff[0]]}"
    assert sha(ref.read_bytes()) == sha(ours.read_bytes())      # metadata and padding too
    assert ref.stat().st_size == ours.stat().st_size


@pytest.fixture(scope="module")
def imatrices(tmp_path_factory):
    """spec -> (GGUF imatrix, legacy .dat imatrix) paths, made once."""
    d = tmp_path_factory.mktemp("imatrices")
    made: dict[int, tuple[Path, Path]] = {}

    def get(spec: synth.Spec) -> tuple[Path, Path]:
        key = id(spec)
        if key not in made:
            g, dat = d / f"{len(made)}.imatrix.gguf", d / f"{len(made)}.imatrix.dat"
            synth.write_imatrix(g, spec, dataset="calibration.txt", chunks=12)
            im = load_imatrix(g)
            write_dat(dat, {n: (v * np.float32(4), 4) for n, v in im.entries.items()}, 12, "calibration.txt")
            made[key] = (g, dat)
        return made[key]
    return get


@pytest.mark.parametrize("case", list(CASES))
def test_same_bytes_as_llama_quantize(case, llama_quantize_bin, imatrices, tmp_path, capsys):
    spec, args = CASES[case]
    src = tmp_path / "src.gguf"
    synth.write(src, spec)
    imat, dat = imatrices(spec)
    args = [str(imat) if a == "IMAT" else str(dat) if a == "IMATDAT" else a for a in args]
    run_llama(llama_quantize_bin, src, tmp_path / "ref.gguf", args)
    assert main(["quantize", str(src), "-o", str(tmp_path / "ours.gguf"), "-q", "--", *args, "2"]) == 0
    assert_same_files(tmp_path / "ref.gguf", tmp_path / "ours.gguf")
    out = capsys.readouterr().out
    assert "predicted size: " in out and "equal to the prediction" in out


def test_split_input(llama_quantize_bin, tmp_path):
    """A split set is read as one model; the output is one file without split keys."""
    synth.write(tmp_path / "split.gguf", replace(V["dense"], n_layer=4), split_max_tensors=16)
    first = tmp_path / "split-00001-of-00003.gguf"
    run_llama(llama_quantize_bin, first, tmp_path / "ref.gguf", ["Q4_K_M"])
    assert main(["quantize", str(first), "-o", str(tmp_path / "ours.gguf"), "-q", "--", "Q4_K_M"]) == 0
    assert_same_files(tmp_path / "ref.gguf", tmp_path / "ours.gguf")
    assert "split.count" not in gguf.GGUFReader(tmp_path / "ours.gguf").fields


def test_recipe_of_a_plan(llama_quantize_bin, imatrices, tmp_path, capsys, monkeypatch):
    """`plan --json` saved, then `quantize --recipe`: the plan's own llama-quantize command gives the same file,
    with an imatrix recorded by the plan."""
    monkeypatch.chdir(tmp_path)
    spec = V["moe"]
    src = tmp_path / "moe.gguf"
    synth.write(src, spec)
    imat, _ = imatrices(spec)
    assert main(["plan", str(src), "--bpw", "4.2", "--imatrix", str(imat), "--json", "-q"]) == 0
    plan = json.loads(capsys.readouterr().out)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    argv = list(plan["argv"])
    argv[0], argv[-2] = str(llama_quantize_bin), str(tmp_path / "ref.gguf")
    subprocess.run(argv, check=True, capture_output=True)
    assert main(["quantize", "--recipe", "plan.json", "-o", "ours.gguf", "-q"]) == 0
    assert_same_files(tmp_path / "ref.gguf", tmp_path / "ours.gguf")
    assert (tmp_path / "ours.gguf").stat().st_size == plan["size"]["file_bytes"]


def test_api_with_a_type_mapping(llama_quantize_bin, tmp_path):
    """quantize_model with tensor -> type: the same as llama-quantize running the recipe built for it."""
    import prism_native
    from prism_native.llama.decide import TensorSpec
    from prism_native.plan.recipe import build_recipe

    src = tmp_path / "m.gguf"
    synth.write(src, V["tied"])
    m = Model(src)
    types = {"blk.0.attn_q.weight": "Q8_0", "blk.1.attn_k.weight": "Q5_K", "token_embd.weight": "Q6_K"}
    res = prism_native.quantize_model(src, tmp_path / "ours.gguf", types, threads=2, progress=False)
    assert res.file_bytes == res.predicted_bytes == (tmp_path / "ours.gguf").stat().st_size
    specs = [TensorSpec.of(t, m.arch) for t in m.tensors]
    plan = {s.name: types.get(s.name, s.source_type) for s in specs if s.quantizable}
    recipe = build_recipe(specs, plan, hparams=m.hparams)
    argv = recipe.command(src, tmp_path / "ref.gguf", program=str(llama_quantize_bin)).argv()
    subprocess.run(argv, check=True, capture_output=True)
    assert_same_files(tmp_path / "ref.gguf", tmp_path / "ours.gguf")
    got = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "ours.gguf").tensors}
    assert got["blk.0.attn_q.weight"] == "Q8_0" and got["blk.1.attn_k.weight"] == "Q5_1"   # rows of 320: fallback
    assert got["token_embd.weight"] == "Q8_0" and got["blk.2.ffn_down.weight"] == "F16"   # others keep F16


# -- SmolLM2 (Q4_1 input: every converted tensor is dequantized, then quantized) --------------------------


@pytest.fixture(scope="module")
def smollm2_imatrix(smollm2_path, tmp_path_factory) -> Path:
    """A llama-imatrix-style GGUF imatrix for every block matrix of SmolLM2 (random importances)."""
    m = Model(smollm2_path)
    rng = np.random.default_rng(3)
    entries = {t.name: ((rng.random((1, t.n_per_row), dtype=np.float32) + 0.05) * 100.0,
                        np.array([100.0], np.float32))
               for t in m.tensors if t.name.startswith("blk.") and t.n_dims == 2}
    path = tmp_path_factory.mktemp("smol") / "smollm2.imatrix.gguf"
    write_gguf(path, entries, ["random.txt"], 100, 512)
    return path


@pytest.mark.parametrize("args", [
    ["--allow-requantize", "Q4_K_M"],
    ["--allow-requantize", "--imatrix", "IMAT", "Q4_K_S"],
    ["--allow-requantize", "--imatrix", "IMAT", "--tensor-type", r"ffn_(up|gate)=q5_0", "Q3_K_M"],
    ["--allow-requantize", "Q2_0"],
    ["--allow-requantize", "--imatrix", "IMAT", "--tensor-type", "ffn_down=mxfp4", "--tensor-type",
     "attn_v=nvfp4", "TQ2_0"],
], ids=["Q4_K_M", "imat-Q4_K_S", "imat-Q3_K_M", "Q2_0", "imat-TQ2_0-fp4"])
def test_smollm2_same_bytes(args, llama_quantize_bin, smollm2_path, smollm2_imatrix, tmp_path):
    args = [str(smollm2_imatrix) if a == "IMAT" else a for a in args]
    run_llama(llama_quantize_bin, smollm2_path, tmp_path / "ref.gguf", args)
    assert main(["quantize", "--example", "-o", str(tmp_path / "ours.gguf"), "-q", "--", *args]) == 0
    assert_same_files(tmp_path / "ref.gguf", tmp_path / "ours.gguf")


def test_smollm2_without_allow_requantize_is_refused(smollm2_path, tmp_path, capsys):
    assert main(["quantize", "--example", "-o", str(tmp_path / "x.gguf"), "--", "Q4_K_M"]) == 2
    assert "requantizing from type Q4_1 is disabled" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_readme_first_command(llama_quantize_bin, smollm2_path, tmp_path, capsys, monkeypatch):
    """quantize --example --bpw 4.5: predicted size == actual size, and llama-quantize running the same plan
    writes the same file."""
    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "--example", "--bpw", "4.5", "-o", "smollm2-prism.gguf", "-q"]) == 0
    out = capsys.readouterr().out
    pred = int(out.split("predicted size:")[1].split("(")[1].split(" bytes")[0].replace(",", ""))
    assert pred == (tmp_path / "smollm2-prism.gguf").stat().st_size and "equal to the prediction" in out
    assert main(["plan", "--example", "--bpw", "4.5", "--json", "-q"]) == 0
    plan = json.loads(capsys.readouterr().out)
    argv = list(plan["argv"])
    argv[0], argv[-2] = str(llama_quantize_bin), str(tmp_path / "ref.gguf")
    subprocess.run(argv, check=True, capture_output=True)
    assert_same_files(tmp_path / "ref.gguf", tmp_path / "smollm2-prism.gguf")


def test_output_loads_in_llama_cpp(llama_quantize_bin, smollm2_path, tmp_path):
    """llama.cpp's model loader (with its tensor data validation) reads our file: llama-quantize COPY of it
    gives it back unchanged."""
    ours = tmp_path / "ours.gguf"
    assert main(["quantize", "--example", "-o", str(ours), "-q", "--", "--allow-requantize", "Q5_K_S"]) == 0
    run_llama(llama_quantize_bin, ours, tmp_path / "copy.gguf", ["COPY"])
    assert tensor_hashes(ours) == tensor_hashes(tmp_path / "copy.gguf")


def test_bpw_with_imatrix_and_threads(llama_quantize_bin, imatrices, tmp_path, capsys, monkeypatch):
    """quantize --bpw --imatrix: the file of the plan's own llama-quantize command (imatrix keys included);
    one thread or all, the same bytes."""
    monkeypatch.chdir(tmp_path)
    spec = V["hybrid"]
    src = tmp_path / "hybrid.gguf"
    synth.write(src, spec)
    imat, _ = imatrices(spec)
    assert main(["quantize", str(src), "--bpw", "3.8", "--imatrix", str(imat), "-o", "ours.gguf", "-q"]) == 0
    capsys.readouterr()
    assert main(["plan", str(src), "--bpw", "3.8", "--imatrix", str(imat), "--json", "-q"]) == 0
    plan = json.loads(capsys.readouterr().out)
    argv = list(plan["argv"])
    argv[0], argv[-2] = str(llama_quantize_bin), str(tmp_path / "ref.gguf")
    subprocess.run(argv, check=True, capture_output=True)
    assert_same_files(tmp_path / "ref.gguf", tmp_path / "ours.gguf")
    assert gguf.GGUFReader(tmp_path / "ours.gguf").fields["quantize.imatrix.file"].contents() == str(imat)
    assert main(["quantize", "--recipe", _save(tmp_path, plan), "-o", "one.gguf", "-q", "-t", "1"]) == 0
    assert sha((tmp_path / "one.gguf").read_bytes()) == sha((tmp_path / "ours.gguf").read_bytes())


def _save(folder: Path, plan: dict) -> str:
    (folder / "plan.json").write_text(json.dumps(plan))
    return str(folder / "plan.json")
