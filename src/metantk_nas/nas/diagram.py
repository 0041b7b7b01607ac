"""Cell diagrams in the style of the paper's Fig. 2 and the DARTS plots, drawn with matplotlib (no graphviz binary).

Layout: the cell inputs c_{k-2} and c_{k-1} on the left (green), the intermediate nodes 0..n-1 from left to right in
a zigzag (blue), the output c_{k} on the right (yellow).  Each edge is a straight line or a gentle quadratic curve,
the least curved one that passes through no node box.  Each op label sits on a point of its own edge, on a box in
its op family's colour (the edge has the same colour), at the point nearest the middle of the edge where it
overlaps no node and no other label and, where possible, hides no other edge.  Label extents are measured with the
figure's renderer, so the placement holds for the figure as saved.  The concat edges into c_{k} are grey and
unlabelled.  ``tests/test_diagram.py`` reads the genotype back from the drawn artists.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ..provenance import atomic_path  # noqa: E402
from .genotype import CELL_TYPES, Genotype  # noqa: E402

log = logging.getLogger(__name__)

FAMILY = {"skip_connect": "identity", "sep_conv_3x3": "separable / dilated conv",
          "dil_conv_3x3": "separable / dilated conv", "avg_pool_3x3": "pooling", "max_pool_3x3": "pooling",
          "conv_1x5_5x1": "convolution", "conv_3x3": "convolution"}
FAMILY_COLOURS = {"convolution": "#c0392b", "separable / dilated conv": "#6c3fb5", "pooling": "#1e8a5a",
                  "identity": "#555555"}
NODE_COLOURS = {"input": "#b7e4a8", "node": "#a8c8f0", "output": "#f5e08a"}
CONCAT_COLOUR = "#9a9a9a"
OUT = -1                    #: the id of the output node c_{k}; 0, 1 are the inputs, 2.. the intermediate nodes
NODE_W, NODE_H = 1.0, 0.5   #: node box size, data units
X_STEP, Y_NODE, Y_INPUT = 2.4, 0.95, 1.1
Y_LIM = 2.1
UNIT_INCHES = 0.8           #: figure inches per data unit (equal in x and y)
FONT_SIZE = 8.0
LABEL_PAD = 0.25            #: label box padding, in font sizes
CURVES = (0.0, 0.16, -0.16, 0.3, -0.3, 0.45, -0.45)              #: control-point offsets tried, shortest first
POSITIONS = (0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73, 0.2, 0.8)   #: label positions tried, as arc-length fractions
DPI = 150


@dataclass(frozen=True)
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    def grow(self, d: float) -> "Rect":
        return Rect(self.x0 - d, self.y0 - d, self.x1 + d, self.y1 + d)

    def overlaps(self, other: "Rect") -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def contains(self, pts: np.ndarray) -> np.ndarray:
        return (pts[:, 0] > self.x0) & (pts[:, 0] < self.x1) & (pts[:, 1] > self.y0) & (pts[:, 1] < self.y1)


@dataclass
class _Edge:
    source: int
    target: int
    op: str | None          #: None for a concat edge
    points: np.ndarray      #: the visible polyline (outside both end boxes), data units


def node_label(node: int) -> str:
    return {0: r"$c_{k-2}$", 1: r"$c_{k-1}$", OUT: r"$c_{k}$"}.get(node, str(node - 2))


def layout(n_nodes: int) -> dict[int, tuple[float, float]]:
    pos = {0: (0.0, Y_INPUT), 1: (0.0, -Y_INPUT)}
    for i in range(n_nodes):
        pos[i + 2] = (X_STEP * (i + 1), Y_NODE if i % 2 == 0 else -Y_NODE)
    pos[OUT] = (X_STEP * (n_nodes + 1), 0.0)
    return pos


def _node_rect(xy: tuple[float, float]) -> Rect:
    return Rect(xy[0] - NODE_W / 2, xy[1] - NODE_H / 2, xy[0] + NODE_W / 2, xy[1] + NODE_H / 2)


def _curve(p0: tuple[float, float], p1: tuple[float, float], bend: float, samples: int = 121) -> np.ndarray:
    """Quadratic Bezier from p0 to p1 whose control point is the midpoint moved ``bend`` x length to the left."""
    a, b = np.asarray(p0), np.asarray(p1)
    d = b - a
    control = (a + b) / 2 + bend * np.array([-d[1], d[0]])
    t = np.linspace(0.0, 1.0, samples)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t ** 2 * b


def _visible(points: np.ndarray, start: Rect, end: Rect) -> np.ndarray:
    """The part of a centre-to-centre curve between leaving the source box and entering the target box."""
    inside_start, inside_end = start.contains(points), end.contains(points)
    first = int(np.argmin(inside_start)) if inside_start.any() else 0
    last = len(points) - int(np.argmin(inside_end[::-1])) if inside_end.any() else len(points)
    return points[first:last]


def _route(source: int, target: int, op: str | None, pos: dict[int, tuple[float, float]],
           rects: dict[int, Rect], taken: set[tuple[int, int, float]]) -> _Edge:
    """The least curved route that avoids every other node box and stays in the axes (and differs from a parallel
    edge's route between the same two nodes)."""
    others = [r.grow(0.1) for k, r in rects.items() if k not in (source, target)]
    for bend in CURVES:
        if (source, target, bend) in taken:
            continue
        pts = _visible(_curve(pos[source], pos[target], bend), rects[source], rects[target])
        if len(pts) > 1 and np.all(np.abs(pts[:, 1]) < Y_LIM - 0.1) and not any(r.contains(pts).any() for r in others):
            taken.add((source, target, bend))
            return _Edge(source, target, op, pts)
    log.warning("edge %s -> %s: no route avoids every node; drawn straight", source, target)
    return _Edge(source, target, op, _visible(_curve(pos[source], pos[target], 0.0), rects[source], rects[target]))


def _at_fraction(points: np.ndarray, fraction: float) -> tuple[float, float]:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    x = np.interp(fraction * s[-1], s, points[:, 0])
    y = np.interp(fraction * s[-1], s, points[:, 1])
    return float(x), float(y)


def _data_rect(ax: Axes, text: Text, renderer: object) -> Rect:
    """The label's box (text extent plus its padding) in data units."""
    pad = LABEL_PAD * FONT_SIZE * ax.figure.dpi / 72.0
    bb = text.get_window_extent(renderer)
    (x0, y0), (x1, y1) = ax.transData.inverted().transform([[bb.x0 - pad, bb.y0 - pad], [bb.x1 + pad, bb.y1 + pad]])
    return Rect(x0, y0, x1, y1)


def _place_label(ax: Axes, edge: _Edge, edges: list[_Edge], node_rects: list[Rect], placed: list[Rect],
                 renderer: object) -> Rect:
    colour = FAMILY_COLOURS[FAMILY[edge.op]]
    text = ax.text(0, 0, edge.op, fontsize=FONT_SIZE, ha="center", va="center", color="#111", zorder=4,
                   bbox={"boxstyle": f"round,pad={LABEL_PAD}", "fc": "white", "ec": colour, "lw": 0.9})
    x_lim, y_lim = ax.get_xlim(), ax.get_ylim()
    best: tuple[tuple[int, float], tuple[float, float], Rect] | None = None
    for fraction in POSITIONS:
        xy = _at_fraction(edge.points, fraction)
        text.set_position(xy)
        box = _data_rect(ax, text, renderer)
        if (any(box.overlaps(r) for r in node_rects) or any(box.overlaps(r.grow(0.03)) for r in placed)
                or box.x0 < x_lim[0] or box.x1 > x_lim[1] or box.y0 < y_lim[0] or box.y1 > y_lim[1]):
            continue
        hidden = sum(bool(box.grow(0.04).contains(e.points).any()) for e in edges if e is not edge)
        key = (hidden, abs(fraction - 0.5))
        if best is None or key < best[0]:
            best = (key, xy, box)
    if best is None:
        log.warning("label %s on edge %s -> %s overlaps a node or a label", edge.op, edge.source, edge.target)
        xy = _at_fraction(edge.points, 0.5)
        text.set_position(xy)
        return _data_rect(ax, text, renderer)
    text.set_position(best[1])
    return best[2]


def draw_cell_on(ax: Axes, genotype: Genotype, cell: str, title: str) -> None:
    """Draw one cell (``normal`` or ``reduce``) on ``ax``, whose figure size must be final (labels are measured)."""
    nodes = getattr(genotype, cell)
    concat = getattr(genotype, f"{cell}_concat")
    pos = layout(len(nodes))
    rects = {k: _node_rect(xy) for k, xy in pos.items()}
    ax.set_xlim(-NODE_W, pos[OUT][0] + NODE_W)
    ax.set_ylim(-Y_LIM, Y_LIM)
    ax.axis("off")
    ax.set_title(title, fontsize=FONT_SIZE + 1)
    taken: set[tuple[int, int, float]] = set()
    edges = [_route(j, OUT, None, pos, rects, taken) for j in concat]
    edges += [_route(inp, i + 2, op, pos, rects, taken) for i, node in enumerate(nodes) for op, inp in node]
    for e in edges:
        colour = CONCAT_COLOUR if e.op is None else FAMILY_COLOURS[FAMILY[e.op]]
        ax.add_patch(FancyArrowPatch(path=MplPath(e.points), arrowstyle="-|>", mutation_scale=9, color=colour,
                                     lw=0.8 if e.op is None else 1.2, shrinkA=0, shrinkB=0, zorder=2))
    for k, (x, y) in pos.items():
        kind = "output" if k == OUT else "input" if k < 2 else "node"
        ax.add_patch(FancyBboxPatch((x - NODE_W / 2, y - NODE_H / 2), NODE_W, NODE_H, zorder=3, lw=0.9, ec="#333",
                                    fc=NODE_COLOURS[kind], boxstyle="round,pad=0,rounding_size=0.12"))
        ax.text(x, y, node_label(k), ha="center", va="center", fontsize=FONT_SIZE + 1, zorder=5)
    renderer = ax.figure.canvas.get_renderer()
    node_rects = [r.grow(0.04) for r in rects.values()]
    placed: list[Rect] = []
    for e in edges:
        if e.op is not None:
            placed.append(_place_label(ax, e, edges, node_rects, placed, renderer))


def _panel_inches(n_nodes: int) -> tuple[float, float]:
    return (X_STEP * (n_nodes + 1) + 2 * NODE_W) * UNIT_INCHES, 2 * Y_LIM * UNIT_INCHES


def _family_legend(fig: Figure, y: float) -> None:
    handles = [Line2D([], [], color=c, lw=2, label=f) for f, c in FAMILY_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, y), ncol=len(handles), frameon=False,
               fontsize=FONT_SIZE)


def figure_of_cells(panels: Sequence[tuple[str, Genotype]], title: str) -> Figure:
    """One row per (name, genotype), a normal and a reduction panel per row, the op-family legend at the bottom."""
    n_nodes = len(panels[0][1].normal)
    w, h = _panel_inches(n_nodes)
    top, bottom, gap = 0.45, 0.35, 0.3
    fig_w, fig_h = 2 * w + gap, len(panels) * (h + gap) + top + bottom
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=DPI)
    fig.suptitle(title, fontsize=FONT_SIZE + 2, y=1 - 0.12 / fig_h)
    for row, (name, genotype) in enumerate(panels):
        y0 = fig_h - top - (row + 1) * h - row * gap
        for col, cell in enumerate(CELL_TYPES):
            ax = fig.add_axes((col * (w + gap) / fig_w, y0 / fig_h, w / fig_w, h / fig_h))
            draw_cell_on(ax, genotype, cell, f"{name}: {cell} cell" if name else f"{cell} cell")
    _family_legend(fig, 0.05 / fig_h)
    return fig


def figure_of_cell(genotype: Genotype, cell: str, title: str) -> Figure:
    w, h = _panel_inches(len(genotype.normal))
    top, bottom = 0.35, 0.35
    fig = plt.figure(figsize=(w, h + top + bottom), dpi=DPI)
    ax = fig.add_axes((0, bottom / (h + top + bottom), 1, h / (h + top + bottom)))
    draw_cell_on(ax, genotype, cell, f"{title}: {cell} cell" if title else f"{cell} cell")
    _family_legend(fig, 0.02)
    return fig


def save(fig: Figure, stem: str | Path, formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    written = []
    for ext in formats:
        target = Path(f"{stem}.{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches="tight", pad_inches=0.05)
        written.append(target)
    plt.close(fig)
    return written


def draw_cell(genotype: Genotype, cell: str, stem: str | Path, title: str = "") -> list[Path]:
    """``{stem}.pdf`` and ``{stem}.png`` of one cell; ``title`` names the run (dataset, method, cells, seed)."""
    return save(figure_of_cell(genotype, cell, title), stem)


def draw_cells(panels: Sequence[tuple[str, Genotype]], stem: str | Path, title: str) -> list[Path]:
    """The cells of several genotypes side by side (one row each), e.g. every method of one (dataset, cells, seed)."""
    return save(figure_of_cells(panels, title), stem)
