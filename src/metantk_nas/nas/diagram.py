"""Cell diagrams like the paper's Fig. 2: cell inputs (green), intermediate nodes (blue), output (yellow), op names
on the edges.  Drawn with matplotlib (no graphviz binary needed); written as PDF and PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..provenance import atomic_path  # noqa: E402
from .genotype import Genotype  # noqa: E402

COLOURS = {"input": "#b7e4a8", "node": "#a8c8f0", "output": "#f5e08a"}


def draw_cell(genotype: Genotype, cell: str, stem: str | Path) -> list[Path]:
    nodes = getattr(genotype, cell)
    concat = getattr(genotype, f"{cell}_concat")
    pos = {0: (0.0, 2.0), 1: (0.0, 0.0)}
    for i in range(len(nodes)):
        pos[i + 2] = (1.6 + 1.5 * i, 2.6 - 1.3 * i)
    out_pos = (1.6 + 1.5 * len(nodes), 1.0)
    fig, ax = plt.subplots(figsize=(2.2 + 1.7 * len(nodes), 3.6))
    labels = {0: "c_{k-2}", 1: "c_{k-1}", **{i + 2: str(i) for i in range(len(nodes))}}
    for i, node in enumerate(nodes):
        for op, inp in node:
            (x0, y0), (x1, y1) = pos[inp], pos[i + 2]
            ax.annotate("", xy=(x1 - 0.25, y1), xytext=(x0 + 0.25, y0),
                        arrowprops={"arrowstyle": "->", "color": "#444", "lw": 1.0, "connectionstyle": "arc3,rad=0.08"})
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.1, op, fontsize=7, ha="center", va="bottom", color="#222")
    for j in concat:
        (x0, y0) = pos[j]
        ax.annotate("", xy=(out_pos[0] - 0.3, out_pos[1]), xytext=(x0 + 0.25, y0),
                    arrowprops={"arrowstyle": "->", "color": "#999", "lw": 0.8})
    for k, (x, y) in pos.items():
        kind = "input" if k < 2 else "node"
        ax.text(x, y, labels[k], ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.35", "fc": COLOURS[kind], "ec": "#333"})
    ax.text(*out_pos, "c_{k}", ha="center", va="center", fontsize=9,
            bbox={"boxstyle": "round,pad=0.35", "fc": COLOURS["output"], "ec": "#333"})
    ax.set_title(f"{cell} cell", fontsize=10)
    ax.set_xlim(-0.6, out_pos[0] + 0.6)
    ax.set_ylim(-0.8, 3.2)
    ax.axis("off")
    written = []
    for ext in ("pdf", "png"):
        target = Path(f"{stem}.{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written
