"""`eval` and `ablate` on llama.cpp's RPC backend: two ggml-rpc-server processes on loopback ports carry
llama-perplexity's layers (passed through as --rpc), the same figures as a local run; an unreachable
server is refused in one line before any work."""
from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import synth

from prism_native.cli import main
from prism_native.tools.binaries import locate_tool
from prism_native.tools.perplexity import Perplexity

TINY = synth.Spec(n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=1, n_vocab=320, byte_tokenizer=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture
def rpc_servers(tmp_path):
    """Two ggml-rpc-server processes on free loopback ports; stopped (by their pids) afterwards."""
    binary = locate_tool("ggml-rpc-server")
    assert binary is not None
    procs, addrs = [], []
    try:
        for i in range(2):
            port = _free_port()
            with open(tmp_path / f"rpc{i}.log", "w") as log:     # the child keeps its own descriptor
                procs.append(subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port), "-t", "1"],
                                              stdout=log, stderr=subprocess.STDOUT))
            addrs.append(f"127.0.0.1:{port}")
            assert _listening(port, time.monotonic() + 20), f"ggml-rpc-server on {port} did not start"
        yield addrs, [tmp_path / f"rpc{i}.log" for i in range(2)]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def _text(path: Path) -> None:
    words = "the a of and to in was he she it that with for as his her had not but on at by".split()
    path.write_text(" ".join(words[(i * 7) % len(words)] for i in range(1300)) + "\n")


def test_perplexity_argv_passes_rpc_through():
    p = Perplexity(Path("llama-perplexity"), Path("t.txt"), rpc=("10.0.0.1:50052", "10.0.0.2:50052"))
    argv = p.kld_argv(Path("m.gguf"), Path("b.kld"))
    assert argv[argv.index("--rpc") + 1] == "10.0.0.1:50052,10.0.0.2:50052"
    assert "--rpc" not in Perplexity(Path("llama-perplexity"), Path("t.txt")).base_argv(Path("m"), Path("b"))


def test_unreachable_rpc_server_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synth.write(tmp_path / "m.gguf", TINY)
    _text(tmp_path / "t.txt")
    port = _free_port()          # nothing listens there
    for cmd in ("eval", "ablate"):
        rc = main([cmd, str(tmp_path / "m.gguf"), "--text", str(tmp_path / "t.txt"), "-q",
                   "--rpc", f"127.0.0.1:{port}", "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "cannot connect to the RPC server" in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*.prism.json"))
    assert main(["eval", str(tmp_path / "m.gguf"), "--text", str(tmp_path / "t.txt"), "--rpc", "nohost"]) == 2


@pytest.mark.needs_llama_cpp("llama-quantize", "llama-perplexity", "ggml-rpc-server")
def test_eval_and_ablate_through_two_rpc_servers(tmp_path, capsys, monkeypatch, rpc_servers):
    addrs, logs = rpc_servers
    monkeypatch.chdir(tmp_path)
    model, text = tmp_path / "m.gguf", tmp_path / "t.txt"
    synth.write(model, TINY)
    _text(text)
    common = ["--text", str(text), "--ctx", "64", "--chunks", "2", "-t", "2", "-q"]   # 2 chunks: "-nan" error bars
    assert main(["eval", str(model), *common, "--baselines", "Q4_K_M", "-o", str(tmp_path / "local")]) == 0
    assert main(["eval", str(model), *common, "--baselines", "Q4_K_M", "-o", str(tmp_path / "rpc"),
                 "--rpc", ",".join(addrs)]) == 0
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    remote = json.loads((tmp_path / "rpc" / "results.json").read_text())
    # the servers run ggml's CPU backend: the same computation as the local run
    assert remote["reference"]["ppl"] == pytest.approx(local["reference"]["ppl"], rel=1e-4)
    assert remote["rows"][0]["kld_mean"] == pytest.approx(local["rows"][0]["kld_mean"], rel=1e-2, abs=1e-5)
    assert main(["ablate", str(model), *common, "--only", "ffn_down", "--low", "Q4_K", "-o", str(tmp_path / "rpc"),
                 "--rpc", ",".join(addrs)]) == 0
    served = [log.read_text().count("Accepted client connection") for log in logs]
    assert all(n >= 3 for n in served), served      # every llama-perplexity run used both servers
