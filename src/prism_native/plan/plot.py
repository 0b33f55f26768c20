"""The picture of a plan (`plan --plot FILE`): layers down, tensor classes across, each cell coloured by its
bits per weight and labelled with the type written to the file; the tensors outside the blocks (token_embd,
output) in a row of their own above. The budget and the predicted size are in the title.

`allocation_grid` turns a Plan into plain rows and cells (no matplotlib needed); `draw_allocation` renders
them with matplotlib's object API on the Agg/SVG canvas, never through pyplot, so it needs no display and
leaves the caller's backend alone.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import qtypes
from ..errors import OutputError, UsageError
from ..read.taxonomy import classify
from .budget import fmt_bytes

if TYPE_CHECKING:
    from .planner import Plan

FORMATS = (".png", ".svg")
PLOT_HINT = "pip install 'prism-native[plot]' (or matplotlib)"
_ROLE_RANK = {"dense": 0, "expert_gate": 1, "expert": 2, "shared_expert": 3}
_STEM_RANK = {"q": 0, "k": 1, "v": 2, "qkv": 3, "gate": 4, "up": 5, "down": 6, "output": 7, "out": 7}


@dataclass(frozen=True)
class Cell:
    """One tensor of the plan: the type written to the file and its bits per weight."""

    type: str
    bpw: float
    override: bool = False      # a per-tensor refinement: its type differs from its class's


@dataclass(frozen=True)
class AllocationGrid:
    title: str
    columns: tuple[str, ...]                      # classes of the blocks, left to right
    layers: tuple[int, ...]                       # block numbers, top to bottom
    cells: dict[tuple[int, str], Cell]            # (layer, class) -> cell; absent where a block lacks the class
    outside: tuple[tuple[str, Cell], ...]         # tensors outside the blocks (token_embd, output, ...)


def check_plot_path(path: str | Path) -> Path:
    """The --plot FILE, refused before any work when its format is unknown or matplotlib is missing."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UsageError(f"--plot {path}: unknown picture format '{p.suffix or '(none)'}'; give a .png or .svg file")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}")
    return p


def _column_key(cls: str, first_seen: int) -> tuple[int, int, int, int]:
    """Attention (and other mixers) before the feed-forward part; within each: dense, router, experts, shared
    experts; then q, k, v, gate, up, down, output; otherwise the order of the file."""
    stem = cls.split(".")[-1].split("_")
    return (int(stem[0] == "ffn"), _ROLE_RANK.get(classify(cls).role, 4),
            _STEM_RANK.get(stem[1] if len(stem) > 1 else "", 5), first_seen)


def allocation_grid(plan: Plan, model_name: str) -> AllocationGrid:
    """The plan's written types laid out by block and class."""
    written = plan.recipe.written
    cells: dict[tuple[int, str], Cell] = {}
    outside: list[tuple[str, Cell]] = []
    first: dict[str, int] = {}
    for name, ty in written.items():
        qt = qtypes.get(ty)
        cell = Cell(qt.name, qt.bpw, name in plan.allocation.overrides)
        tx = classify(name)
        if tx.layer is None:
            outside.append((tx.cls, cell))
        else:
            first.setdefault(tx.cls, len(first))
            cells[(tx.layer, tx.cls)] = cell
    columns = tuple(sorted(first, key=lambda c: _column_key(c, first[c])))
    layers = tuple(sorted({layer for layer, _ in cells}))
    s = plan.size
    title = (f"{model_name}: budget {plan.budget.describe()}\npredicted file {fmt_bytes(s.file_bytes)}; "
             f"{s.bpw_quantized:.4f} bpw over the quantized tensors")
    return AllocationGrid(title, columns, layers, cells, tuple(outside))


# -- drawing ------------------------------------------------------------------------------------------

CELL_W, CELL_H = 0.95, 0.3          # inches
LEFT, RIGHT, TOP, GAP, BOTTOM = 0.8, 2.2, 0.8, 0.75, 0.2
BAND, NOTE = 0.45, 0.55             # inches: one type's band of the colour bar; the note under it


def _text_colour(rgba: tuple[float, ...]) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _paint(ax, rows: list[list[Cell | None]], level: dict[float, int], cmap, norm) -> None:
    """Cells as coloured rectangles with white borders and their type written inside (row 0 at the top);
    missing cells light grey. Cell (i, j) spans [j, j+1] x [i, i+1]."""
    import numpy as np

    values = np.ma.masked_invalid(np.array([[level[c.bpw] if c else np.nan for c in row] for row in rows], float))
    ax.pcolormesh(values, cmap=cmap, norm=norm, edgecolors="white", linewidth=1.2)
    ax.set_xlim(0, len(rows[0]))
    ax.set_ylim(len(rows), 0)
    for i, row in enumerate(rows):
        for j, c in enumerate(row):
            if c is not None:
                ax.text(j + 0.5, i + 0.5, c.type, ha="center", va="center", fontsize=7.5,
                        color=_text_colour(cmap(norm(level[c.bpw]))), fontweight="bold" if c.override else "normal")
    ax.tick_params(length=0, labelsize=8)
    ax.xaxis.tick_top()
    for side in ax.spines.values():
        side.set_visible(False)


def draw_allocation(grid: AllocationGrid, path: str | Path) -> Path:
    """Render the grid to `path` (.png or .svg, by its extension). Each distinct bits-per-weight figure of the
    plan gets its own band of the colour scale, in order, so that types a quarter bit apart stay apart."""
    p = check_plot_path(path)
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    n_col, n_row, n_out = len(grid.columns), len(grid.layers), len(grid.outside)
    by_bpw: dict[float, set[str]] = {}
    for c in list(grid.cells.values()) + [c for _, c in grid.outside]:
        by_bpw.setdefault(c.bpw, set()).add(c.type)
    bpws = sorted(by_bpw)
    level = {b: i for i, b in enumerate(bpws)}
    cmap = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.92, len(bpws)) if len(bpws) > 1 else [0.45]))
    cmap = cmap.with_extremes(bad="#eeeeee")        # a class the block does not have
    norm = Normalize(-0.5, len(bpws) - 0.5)

    width = LEFT + max(n_col, n_out, 4) * CELL_W + RIGHT
    strip = (CELL_H + GAP) if n_out else 0.0
    grid_h = n_row * CELL_H + (GAP if n_row else 0.0)
    bar_h = max(1.2, BAND * len(bpws))
    height = TOP + max(strip + grid_h, GAP * 0.45 + bar_h) + NOTE + BOTTOM     # the bar and its note always fit
    fig = Figure(figsize=(width, height))

    def axes(top: float, rows: int, cols: int):
        return fig.add_axes((LEFT / width, 1 - (top + rows * CELL_H) / height, cols * CELL_W / width,
                             rows * CELL_H / height))

    y = TOP
    if n_out:
        ax = axes(y + GAP * 0.45, 1, n_out)
        _paint(ax, [[c for _, c in grid.outside]], level, cmap, norm)
        ax.set_xticks([j + 0.5 for j in range(n_out)], [name for name, _ in grid.outside])
        ax.set_yticks([0.5], ["outside\nthe blocks"])
        y += strip
    if n_row:
        ax = axes(y + GAP * 0.85, n_row, n_col)
        _paint(ax, [[grid.cells.get((il, c)) for c in grid.columns] for il in grid.layers], level, cmap, norm)
        ax.set_xticks([j + 0.5 for j in range(n_col)], grid.columns, rotation=30, ha="left", rotation_mode="anchor")
        ax.set_yticks([i + 0.5 for i in range(n_row)], [f"blk {il}" for il in grid.layers])
    bar_ax = fig.add_axes(((width - RIGHT + 0.6) / width, 1 - (TOP + GAP * 0.45 + bar_h) / height, 0.2 / width,
                           bar_h / height))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar_ax)
    bar.set_ticks(range(len(bpws)), labels=[f"{'/'.join(sorted(by_bpw[b]))}  {b:g}" for b in bpws], fontsize=7.5)
    bar.ax.tick_params(length=0)
    bar.ax.set_title("bits per\nweight", fontsize=8, loc="left")
    fig.text((width - RIGHT + 0.4) / width, BOTTOM / height, "types as written (after\nllama-quantize's fallback);\n"
             "bold: a per-tensor override", fontsize=7, va="bottom")
    fig.suptitle(grid.title, fontsize=10, y=1 - 0.12 / height, va="top")
    try:
        fig.savefig(p, dpi=110)
    except OSError as e:
        raise OutputError(f"--plot {p}: cannot write: {e.strerror or e}") from None
    return p
