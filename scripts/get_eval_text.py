#!/usr/bin/env python3
"""Extract the English evaluation text used in docs/results.md, reproducibly and offline.

Source: the Debian package r-cran-janeaustenr (Jane Austen's six novels, public domain texts from
Project Gutenberg, packaged for R; MIT-licensed packaging). We take the novel "Persuasion" (1817),
drop the title block, and cut at the first paragraph end past --max-bytes. No R is needed: the
package's lazy-load database (data/Rdata.rdb + .rdx) is read here with a small reader of R's XDR
serialization format (only the object types that file uses).

    python3 scripts/get_eval_text.py -o persuasion.txt            # runs `apt-get download`
    python3 scripts/get_eval_text.py --deb r-cran-janeaustenr_1.0.0-1_all.deb -o persuasion.txt
"""
from __future__ import annotations

import argparse
import glob
import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from typing import Any

PACKAGE = "r-cran-janeaustenr"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data/"


def deb_members(deb: bytes) -> dict[str, bytes]:
    """Members of a Debian package's `ar` archive."""
    if not deb.startswith(b"!<arch>\n"):
        raise SystemExit("not a .deb (ar) file")
    out, off = {}, 8
    while off + 60 <= len(deb):
        name = deb[off:off + 16].decode().strip().rstrip("/")
        size = int(deb[off + 48:off + 58].decode().strip())
        out[name] = deb[off + 60:off + 60 + size]
        off += 60 + size + (size & 1)
    return out


def data_files(deb: bytes, names: tuple[str, ...]) -> dict[str, bytes]:
    tar_name = next(n for n in deb_members(deb) if n.startswith("data.tar"))
    with tarfile.open(fileobj=io.BytesIO(deb_members(deb)[tar_name])) as tf:
        return {n: tf.extractfile("./" + DATA_DIR + n).read() for n in names}  # type: ignore[union-attr]


class RReader:
    """R's XDR serialization (serialize.c, format versions 2 and 3), for the few SEXP types of a
    lazy-load index and of character vectors."""

    def __init__(self, buf: bytes) -> None:
        if buf[:2] != b"X\n":
            raise ValueError("not an XDR R serialization")
        self.buf, self.off = buf, 2
        version = self.int()
        self.int(), self.int()                    # writer's and minimal reader's R versions
        if version == 3:
            n = self.int()                         # native encoding name
            self.off += n
        self.refs: list[Any] = []

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.buf, self.off)
        self.off += 4
        return v

    def item(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:                            # NILVALUE_SXP
            return None
        if kind == 255:                            # REFSXP: index packed in the flags or following
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if kind == 1:                              # SYMSXP
            sym = self.item()
            self.refs.append(sym)
            return sym
        if kind == 9:                              # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.buf[self.off:self.off + n].decode("utf-8", "replace")
            self.off += n
            return s
        if kind == 2:                              # LISTSXP (pairlist): attributes, tag, car, cdr
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            return {tag: car, **(self.item() or {})}
        if kind in (13, 10):                       # INTSXP, LGLSXP
            n = self.int()
            v = list(struct.unpack_from(f">{n}i", self.buf, self.off))
            self.off += 4 * n
        elif kind == 14:                           # REALSXP
            n = self.int()
            v = list(struct.unpack_from(f">{n}d", self.buf, self.off))
            self.off += 8 * n
        elif kind in (16, 19):                     # STRSXP, VECSXP
            v = [self.item() for _ in range(self.int())]
        else:
            raise ValueError(f"R object type {kind} not supported")
        if has_attr:
            attrs = self.item()
            names = attrs.get("names") if isinstance(attrs, dict) else None
            if names and kind == 19:
                return dict(zip(names, v))
        return v


def lazyload_object(rdx: bytes, rdb: bytes, name: str) -> Any:
    """One object of an R lazy-load database: the index maps names to (offset, length) in the .rdb,
    whose blobs are a 4-byte big-endian length then zlib data (R_compress1)."""
    index = RReader(gzip.decompress(rdx)).item()
    off, length = index["variables"][name]
    blob = rdb[off:off + length]
    return RReader(zlib.decompress(blob[4:])).item()


def novel_text(lines: list[str | None], max_bytes: int) -> str:
    """Drop the title block (everything before the first chapter heading) and cut at the first
    paragraph end past max_bytes."""
    lines = [ln or "" for ln in lines]
    start = next(i for i, ln in enumerate(lines) if ln.strip().lower().startswith("chapter"))
    out: list[str] = []
    size = 0
    for ln in lines[start:]:
        if size >= max_bytes and not ln.strip():
            break
        out.append(ln.rstrip())
        size += len(ln.encode()) + 1
    return "\n".join(out).strip() + "\n"


def fetch_deb(workdir: str) -> str:
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    return glob.glob(os.path.join(workdir, f"{PACKAGE}_*.deb"))[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--deb", help=f"{PACKAGE} .deb already downloaded (default: apt-get download it)")
    p.add_argument("--novel", default="persuasion",
                   help="emma, mansfieldpark, northangerabbey, persuasion, prideprejudice, sensesensibility")
    p.add_argument("--max-bytes", type=int, default=250_000)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        deb_path = a.deb or fetch_deb(tmp)
        with open(deb_path, "rb") as f:
            files = data_files(f.read(), ("Rdata.rdx", "Rdata.rdb"))
    lines = lazyload_object(files["Rdata.rdx"], files["Rdata.rdb"], a.novel)
    text = novel_text(lines, a.max_bytes)
    with open(a.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{a.output}: {a.novel}, {len(text.encode()):,} bytes, {len(text.split()):,} words", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
