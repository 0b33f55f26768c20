"""The output file: checked before anything is computed, written under a temporary name in its folder,
renamed over the final name only when complete.

An interrupted or failed run removes its temporary file, so the final name never holds a truncated
model (a killed process can leave only a hidden `.NAME.*.part` file behind, never a half-written
NAME). The input is never opened for writing; an output that is the input under another name (a
symbolic or hard link) is refused like the input itself.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ..errors import OutputError

_ZEROS = bytes(4096)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_destination(dst: str | Path, inputs: Iterable[str | Path]) -> Path:
    """The path to write (symbolic links followed), after refusing an output that is an input (also
    through a link), a directory, or in a folder that is missing or not writable. std::filesystem::
    equivalent is llama-quantize's same-file test; this one also catches a link to another part."""
    given = Path(dst)
    if str(dst) == "":
        raise OutputError("empty output path")
    final = given.resolve()
    if final.is_dir():
        raise OutputError(f"{given}: is a directory; give the output file's name")
    if final.exists():
        st = final.stat()
        for p in inputs:
            if _same_file(st, Path(p).stat()):
                raise OutputError(f"{given}: is the input model {p}; refusing to overwrite the input")
    folder = final.parent
    if not folder.is_dir():
        raise OutputError(f"{given}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{given}: folder {folder} is not writable")
    return final


def check_space(final: Path, nbytes: int) -> None:
    """Refuse up front when the destination's file system cannot take nbytes. A file about to be
    replaced does not count as free space: its blocks come back only after the rename."""
    free = shutil.disk_usage(final.parent).free
    if free < nbytes:
        raise OutputError(f"{final}: not enough disk space in {final.parent}: the output needs "
                          f"{nbytes:,} bytes, {free:,} are free")


def _os_message(final: Path, e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{final}: disk full while writing (the partial output was removed)"
    if e.errno == errno.EFBIG:
        return f"{final}: file too large for this file system or limit (the partial output was removed)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{final}: cannot write in {final.parent}: {e.strerror}"
    return f"{final}: cannot write: {e.strerror or e}"


@dataclass
class AtomicOutput:
    """A file written under `.NAME.XXXX.part` beside `final`, renamed to `final` by commit().

    Use as a context manager: leaving the block without commit() (an exception, Ctrl-C) deletes the
    temporary file. OSErrors of writing become one-line OutputErrors.
    """

    final: Path
    written: int = 0
    _file: BinaryIO | None = field(default=None, repr=False)
    _tmp: Path | None = field(default=None, repr=False)

    def __enter__(self) -> AtomicOutput:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.final.parent, prefix=f".{self.final.name}.", suffix=".part")
        except OSError as e:
            raise OutputError(_os_message(self.final, e)) from None
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb", buffering=0)
        return self

    def write(self, data: bytes | memoryview | object) -> None:
        """Write a bytes-like object (numpy arrays too; the GIL is released during the write)."""
        assert self._file is not None
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        try:
            while view:
                n = self._file.write(view)
                if not n:
                    raise OSError(errno.EIO, "short write")
                self.written += n
                view = view[n:]
        except OSError as e:
            raise OutputError(_os_message(self.final, e)) from None

    def zeros(self, n: int) -> None:
        while n > 0:
            k = min(n, len(_ZEROS))
            self.write(_ZEROS[:k])
            n -= k

    def commit(self) -> None:
        """Close the file and rename it to its final name (the file is complete only now)."""
        assert self._file is not None and self._tmp is not None
        try:
            self._file.close()
            os.chmod(self._tmp, 0o666 & ~_umask())
            os.replace(self._tmp, self.final)
        except OSError as e:
            raise OutputError(_os_message(self.final, e)) from None
        self._tmp = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except OSError:
                pass
            self._tmp = None


def _umask() -> int:
    """The process umask without changing it (os.umask would, for a moment, for every thread): mkstemp
    creates 0600 files, a model file gets the mode open() would give it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
