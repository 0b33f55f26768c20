"""TensorSource's read-ahead: the scheduled slab is read while the current one is used, and the bytes
are those of a plain read whatever the schedule says."""
from __future__ import annotations

import threading

import pytest
from support import synth

from prism_native.errors import FileFormatError
from prism_native.read.model import Model
from prism_native.write import source
from prism_native.write.source import TensorSource


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    path = tmp_path_factory.mktemp("src") / "m.gguf"
    synth.write(path, synth.Spec(n_layer=2, n_embd=256, n_ff=512, dtype="F32"))
    return Model(path)


def _slices(model: Model, step: int) -> list[tuple]:
    return [(t, a, min(step, t.n_bytes - a)) for t in model.tensors for a in range(0, t.n_bytes, step)]


def _plain(model: Model, t, a: int, n: int) -> bytes:
    with open(model.parts[t.part], "rb") as f:
        f.seek(t.offset + a)
        return f.read(n)


@pytest.mark.parametrize("schedule", ["same", "none", "shifted", "short"])
def test_read_ahead_gives_the_bytes_of_a_plain_read(model: Model, schedule: str) -> None:
    reads = _slices(model, 4096)
    sched = {"same": reads, "none": None, "shifted": reads[1:], "short": reads[:3]}[schedule]
    with TensorSource(model, sched) as src:
        for t, a, n in reads:
            assert src.read(t, a, n).tobytes() == _plain(model, t, a, n)


def test_the_next_slab_is_read_on_another_thread(model: Model, monkeypatch) -> None:
    reads = _slices(model, 8192)
    threads: list[str] = []
    real = TensorSource._pread

    def record(self, which, t, a, n):
        threads.append(threading.current_thread().name)
        return real(self, which, t, a, n)
    monkeypatch.setattr(source.TensorSource, "_pread", record)
    with TensorSource(model, reads) as src:
        for t, a, n in reads:
            src.read(t, a, n)
    assert len(threads) == len(reads)
    assert all(name.startswith("prism-read") for name in threads)


def test_an_error_ahead_reaches_the_read_that_needs_it(model: Model, tmp_path) -> None:
    t = model.tensors[-1]
    with TensorSource(model, [(t, 0, 16), (t, t.n_bytes, 1 << 20)]) as src:
        src.read(t, 0, 16)
        with pytest.raises(FileFormatError, match="ends past the end of the file"):
            src.read(t, t.n_bytes, 1 << 20)


def test_converted_slabs_are_written_on_another_thread(model: Model, tmp_path, monkeypatch) -> None:
    import prism_native
    from prism_native import files

    threads: set[str] = set()
    real = files.AtomicOutput.write

    def record(self, data):
        threads.add(threading.current_thread().name)
        return real(self, data)
    monkeypatch.setattr(files.AtomicOutput, "write", record)
    a = prism_native.quantize_model(model, tmp_path / "a.gguf", "Q8_0", progress=False)
    assert any(n.startswith("prism-write") for n in threads) and a.file_bytes == (tmp_path / "a.gguf").stat().st_size
