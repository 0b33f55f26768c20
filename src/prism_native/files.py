"""Every file prism_native writes: checked before anything is computed, written under a temporary name in its folder,
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
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .errors import OutputError

_ZEROS = bytes(4096)


def same_file(a: str | Path, b: str | Path) -> bool:
    """a and b name one file: the same path once symbolic links are resolved, or (both existing) the same
    file under two names (a hard link). The one same-file test of the package."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _stat(path: Path, given: Path, what: str) -> os.stat_result | None:
    """stat (links followed); None when the name does not exist yet; else a one-line OutputError."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        reason = "a symbolic-link loop" if e.errno == errno.ELOOP else (e.strerror or str(e))
        raise OutputError(f"{given}: cannot use {what}: {reason}") from None


def check_destination(dst: str | Path, inputs: Iterable[str | Path]) -> Path:
    """The path to write (symbolic links followed). The one rule for every file prism_native writes:
    only a regular file or a new name, never a directory, device, FIFO or socket (a rename over them
    would replace the node), and never a file the command reads (`inputs`: the model's parts, an
    imatrix, a recipe, a tensor-type or results file), also through a symbolic or hard link.
    std::filesystem::equivalent is llama-quantize's same-file test; this one covers every input."""
    given = Path(dst)
    if str(dst) == "":
        raise OutputError("empty output path")
    final = Path(os.path.realpath(given))
    st = _stat(final, given, "this path")
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{given}: is a directory; give the output file's name")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{given}: is a {_kind(st.st_mode)}, not a regular file; refusing to replace it")
        for p in inputs:              # an input that is not there is its reader's problem
            if same_file(final, p):
                raise OutputError(f"{given}: is {p}, which this command reads; refusing to overwrite the input")
    folder = final.parent
    fst = _stat(folder, given, "its folder")
    if fst is None or not stat.S_ISDIR(fst.st_mode):
        raise OutputError(f"{given}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{given}: folder {folder} is not writable")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(final.name)) > name_max:
        raise OutputError(f"{given}: the file name is longer than the {name_max} bytes this file system allows")
    return final


def write_file(dst: str | Path, data: bytes, inputs: Iterable[str | Path] = ()) -> Path:
    """A small file (results, plan, tensor-type file) written whole under the same rule, atomically: a
    unique temporary name renamed at the end, so that concurrent writers never mix or lose a file."""
    final = check_destination(dst, inputs)
    with AtomicOutput(final) as out:
        out.write(data)
        out.commit()
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
            fd, tmp = tempfile.mkstemp(dir=self.final.parent, prefix=_temp_prefix(self.final.name), suffix=".part")
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
            st = _stat(self.final, self.final, "this path")
            if st is not None and not stat.S_ISREG(st.st_mode):   # replaced since check_destination
                raise OutputError(f"{self.final}: is no longer a regular file; refusing to replace it")
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


def _temp_prefix(name: str) -> str:
    """`.NAME.`, or a fixed prefix when NAME leaves no room for the temporary name's 14 extra bytes."""
    return f".{name}." if len(os.fsencode(name)) <= 200 else ".prism-output."


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
