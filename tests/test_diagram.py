"""Cell diagrams read as a reader reads them: from the drawn artists alone (positions and strings, via the
renderer), never from the drawing code's own bookkeeping.

For the published MetaNAS v2 cell and random cells of 5 seeds: op labels overlap no other label and no node box,
each label lies on an edge (within 2 points of its path), and the (op, source, target) triples recovered from
which edge each label sits on and which node boxes that edge joins equal the genotype.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from metantk_nas.nas.diagram import figure_of_cell, figure_of_cells
from metantk_nas.nas.genotype import CELL_TYPES, Genotype, random_genotype
from metantk_nas.nas.space import OP_NAMES

from helpers import ROOT, overlap
NODE_NAMES = {r"$c_{k-2}$": 0, r"$c_{k-1}$": 1, "0": 2, "1": 3, "2": 4, r"$c_{k}$": "out"}


def published() -> Genotype:
    table = yaml.safe_load((ROOT / "config/genotypes.yaml").read_text())
    return Genotype.from_darts(table["metanas_in_v2"]["genotype"])


CASES = [("metanas_in_v2", published())] + [(f"random seed {s}", random_genotype(s, 5)) for s in range(5)]


def _distance(point: np.ndarray, poly: np.ndarray) -> float:
    """Distance from a point to a polyline (display units)."""
    a, b = poly[:-1], poly[1:]
    d = b - a
    t = np.clip(np.einsum("ij,ij->i", point - a, d) / np.maximum(np.einsum("ij,ij->i", d, d), 1e-12), 0, 1)
    return float(np.min(np.linalg.norm(a + t[:, None] * d - point, axis=1)))


def read_back(ax, renderer) -> dict:
    """What the axes show: node boxes by name, op labels with their boxes, edges as display polylines."""
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    nodes = {}
    for t in ax.texts:
        if t.get_text() in NODE_NAMES:
            c = ax.transData.transform(t.get_position())
            box = [b for b in boxes if b.get_window_extent(renderer).contains(*c)]
            assert len(box) == 1, f"node label {t.get_text()} is not inside exactly one node box"
            nodes[NODE_NAMES[t.get_text()]] = box[0].get_window_extent(renderer)
    labels = [(t.get_text(), t.get_bbox_patch().get_window_extent(renderer), ax.transData.transform(t.get_position()))
              for t in ax.texts if t.get_text() in OP_NAMES]
    edges = [ax.transData.transform(_shaft(a.get_path())) for a in arrows]
    return {"nodes": nodes, "labels": labels, "edges": edges}


def _shaft(path) -> np.ndarray:
    """The arrow's line, without its head (the path's second sub-path)."""
    moves = np.flatnonzero(path.codes == path.MOVETO)
    return path.vertices[: moves[1] if len(moves) > 1 else len(path.vertices)]


def _nearest_node(point: np.ndarray, nodes: dict) -> object:
    def gap(bb):
        dx = max(bb.x0 - point[0], 0, point[0] - bb.x1)
        dy = max(bb.y0 - point[1], 0, point[1] - bb.y1)
        return np.hypot(dx, dy)
    return min(nodes, key=lambda k: gap(nodes[k]))


def _endpoints(poly: np.ndarray, nodes: dict) -> tuple[object, object]:
    """The node at the arrow's tail and the node at its head."""
    return _nearest_node(poly[0], nodes), _nearest_node(poly[-1], nodes)


def _drawn(genotype: Genotype, cell: str) -> tuple[set, set]:
    ops = {(op, inp, i + 2) for i, node in enumerate(getattr(genotype, cell)) for op, inp in node}
    concat = {(j, "out") for j in getattr(genotype, f"{cell}_concat")}
    return ops, concat


@pytest.mark.parametrize("name,genotype", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("cell", CELL_TYPES)
def test_diagram_reads_back_as_the_genotype_with_unambiguous_labels(name, genotype, cell):
    fig = figure_of_cell(genotype, cell, f"synthetic · test · 5 cells · {name}")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    shown = read_back(ax, renderer)
    pt = fig.dpi / 72.0                                   # display units per point
    assert set(shown["nodes"]) == {0, 1, 2, 3, 4, "out"}
    assert len(shown["labels"]) == 6
    for (a, bb_a, _), (b, bb_b, _) in itertools.combinations(shown["labels"], 2):
        assert not overlap(bb_a, bb_b), f"labels {a} and {b} overlap"
    for op, bb, _ in shown["labels"]:
        for node, nb in shown["nodes"].items():
            assert not overlap(bb, nb), f"label {op} overlaps node {node}"
    for x, y in itertools.combinations(shown["nodes"].values(), 2):
        assert not overlap(x, y)
    # every edge avoids every node box but its own two ends
    for poly in shown["edges"]:
        src, dst = _endpoints(poly, shown["nodes"])
        for node, nb in shown["nodes"].items():
            if node not in (src, dst):
                inside = [(nb.x0 < x < nb.x1) and (nb.y0 < y < nb.y1) for x, y in poly]
                assert not any(inside), f"edge {src}->{dst} passes through node {node}"
    # which edge each label sits on, and what that edge joins
    triples = set()
    for op, bb, centre in shown["labels"]:
        dist = [_distance(centre, poly) for poly in shown["edges"]]
        k = int(np.argmin(dist))
        assert dist[k] <= 2 * pt, f"label {op} is {dist[k] / pt:.1f} pt from the nearest edge"
        src, dst = _endpoints(shown["edges"][k], shown["nodes"])
        triples.add((op, src, dst))
    labelled = {k for k, poly in enumerate(shown["edges"])
                if min(_distance(c, poly) for _, _, c in shown["labels"]) <= 2 * pt}
    concat = {_endpoints(poly, shown["nodes"]) for k, poly in enumerate(shown["edges"]) if k not in labelled}
    want_ops, want_concat = _drawn(genotype, cell)
    assert triples == want_ops
    assert concat == want_concat
    assert "5 cells" in ax.get_title() and cell in ax.get_title()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["convolution", "separable / dilated conv", "pooling", "identity"]


def test_read_back_sees_a_wrong_label():
    """The check above can fail: a label moved onto another edge is read back as the wrong triple."""
    genotype = CASES[0][1]
    fig = figure_of_cell(genotype, "normal", "x")
    fig.canvas.draw()
    ax = fig.axes[0]
    ops = [t for t in ax.texts if t.get_text() in OP_NAMES]
    ops[0].set_position(ops[1].get_position())          # the first label now sits on the second label's edge
    fig.canvas.draw()
    shown = read_back(ax, fig.canvas.get_renderer())
    triples = set()
    for op, bb, centre in shown["labels"]:
        k = int(np.argmin([_distance(centre, poly) for poly in shown["edges"]]))
        triples.add((op, *_endpoints(shown["edges"][k], shown["nodes"])))
    assert triples != _drawn(genotype, "normal")[0]


def test_comparison_figure_has_a_row_per_method_and_reads_back():
    panels = CASES[:3]
    fig = figure_of_cells(panels, "synthetic · 5 cells · seed 0")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"{n}: {c} cell" for n, _ in panels for c in CELL_TYPES]
    for ax, (cell_name, genotype, cell) in zip(fig.axes, [(n, g, c) for n, g in panels for c in CELL_TYPES]):
        shown = read_back(ax, renderer)
        triples = {(op, *_endpoints(shown["edges"][int(np.argmin([_distance(c, p) for p in shown["edges"]]))],
                                    shown["nodes"])) for op, _, c in shown["labels"]}
        assert triples == _drawn(genotype, cell)[0], cell_name
    boxes = [ax.get_window_extent(renderer) for ax in fig.axes]
    for a, b in itertools.combinations(boxes, 2):
        assert not overlap(a, b)


def test_compare_cells_script_draws_every_row_and_rejects_bad_input(tmp_path):
    from helpers import run_script

    pub = tmp_path / "metanas.json"
    pub.write_text(published().to_json())
    rnd = tmp_path / "random.json"
    rnd.write_text(random_genotype(3, 5).to_json())
    stem = tmp_path / "fig" / "cells"
    run_script(ROOT / "scripts/compare_cells.py", "--genotypes", f"metanas={pub}", f"random={rnd}",
               "--title", "synthetic, 5 cells, seed 0", "--out", stem, cwd=ROOT)
    assert (tmp_path / "fig/cells.png").stat().st_size > 10_000 and (tmp_path / "fig/cells.pdf").exists()
    assert (tmp_path / "fig/cells.png.prov.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for spec, message in [(f"{pub}", "expected NAME=PATH"), (f"x={tmp_path / 'nope.json'}", "no such genotype file"),
                          (f"x={bad}", "not a valid genotype")]:
        proc = run_script(ROOT / "scripts/compare_cells.py", "--genotypes", spec, "--out", tmp_path / "o" / "c",
                          cwd=ROOT, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
        assert not (tmp_path / "o").exists()
