"""Build step: src/cpp/data/quant_tables.txt (ggml's format data, with its provenance) -> a C++ header.

Usage: python gen_tables.py DATA OUT_HEADER. Checks each table's declared count; the output is only
rewritten when its text changes, so an unchanged data file rebuilds nothing.
"""
import sys
from pathlib import Path

CTYPES = {"uint8_t": (0, 2**8), "int8_t": (-2**7, 2**7), "uint16_t": (0, 2**16), "uint32_t": (0, 2**32),
          "uint64_t": (0, 2**64)}


def parse(text: str) -> list[tuple[str, str, list[int]]]:
    tables, cur = [], None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("table "):
            _, name, ctype, count = line.split()
            if ctype not in CTYPES:
                raise SystemExit(f"line {lineno}: unknown type {ctype}")
            cur = (name, ctype, int(count), [])
            tables.append(cur)
            continue
        if cur is None:
            raise SystemExit(f"line {lineno}: values before the first 'table' line")
        lo, hi = CTYPES[cur[1]]
        for tok in line.split():
            v = int(tok, 0)
            if not lo <= v < hi:
                raise SystemExit(f"line {lineno}: {tok} does not fit {cur[1]}")
            cur[3].append(v)
    for name, _, count, vals in tables:
        if len(vals) != count:
            raise SystemExit(f"table {name}: {len(vals)} values, declared {count}")
    return [(n, c, v) for n, c, _, v in tables]


def render(tables) -> str:
    out = ["// Generated from src/cpp/data/quant_tables.txt by src/cpp/gen_tables.py: do not edit.",
           "#pragma once", "#include <cstdint>", "", "namespace prism { namespace tables {", ""]
    for name, ctype, vals in tables:
        fmt = (lambda v: f"0x{v:016x}ull") if ctype == "uint64_t" else \
              (lambda v: f"0x{v:08x}u") if ctype == "uint32_t" else str
        per = 4 if ctype == "uint64_t" else 8 if ctype == "uint32_t" else 16
        out.append(f"inline constexpr {ctype} {name}[{len(vals)}] = {{")
        for i in range(0, len(vals), per):
            out.append("    " + ", ".join(fmt(v) for v in vals[i:i + per]) + ",")
        out.append("};")
        out.append("")
    out.append("}}  // namespace prism::tables")
    return "\n".join(out) + "\n"


def main() -> None:
    data, header = Path(sys.argv[1]), Path(sys.argv[2])
    text = render(parse(data.read_text()))
    if not header.exists() or header.read_text() != text:
        header.parent.mkdir(parents=True, exist_ok=True)
        header.write_text(text)


if __name__ == "__main__":
    main()
