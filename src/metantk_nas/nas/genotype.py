"""Genotypes: the searched cell as data, its JSON form and the DARTS ``Genotype(...)`` string the original prints.

A cell has 3 intermediate nodes; node ``i`` (0-based) has two ``(op, input)`` pairs, input 0 = c_{k-2},
1 = c_{k-1}, 2.. = earlier intermediate nodes; the cell output concatenates nodes ``concat`` (= [2, 3, 4]).
The search mask is an array ``(2, E, O)`` of booleans: cell type (normal, reduce) x edge x op, with edges in the
original's order ``0<-0, 0<-1, 1<-0, 1<-1, 1<-2, 2<-0, ...``.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import PipelineError
from .space import OP_NAMES, ORIGINAL_NAMES, canonical_op

N_NODES = 3
CELL_TYPES = ("normal", "reduce")


def edge_list(nodes: int = N_NODES) -> list[tuple[int, int]]:
    """(node, input) per edge, in the original's sorted ``"i<-j"`` key order."""
    return [(i, j) for i in range(nodes) for j in range(i + 2)]


def edge_groups(nodes: int = N_NODES) -> list[tuple[int, int]]:
    """[start, stop) of each node's incoming edges: [(0, 2), (2, 5), (5, 9)] for 3 nodes."""
    out, start = [], 0
    for i in range(nodes):
        out.append((start, start + i + 2))
        start += i + 2
    return out


Pair = tuple[str, int]
Node = tuple[Pair, Pair]


@dataclass(frozen=True)
class Genotype:
    normal: tuple[Node, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Node, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for ct in CELL_TYPES:
            nodes = getattr(self, ct)
            for i, node in enumerate(nodes):
                if len(node) != 2:
                    raise ValueError(f"genotype {ct} node {i}: expected 2 (op, input) pairs, got {len(node)}")
                for op, inp in node:
                    canonical_op(op)
                    if not 0 <= inp < i + 2:
                        raise ValueError(f"genotype {ct} node {i}: input {inp} out of range 0..{i + 1}")

    @staticmethod
    def make(normal: Iterable[Iterable[Sequence[Any]]], reduce: Iterable[Iterable[Sequence[Any]]],
             normal_concat: Iterable[int] = (2, 3, 4), reduce_concat: Iterable[int] = (2, 3, 4)) -> "Genotype":
        def nodes(spec: Iterable[Iterable[Sequence[Any]]]) -> tuple[Node, ...]:
            return tuple(tuple((canonical_op(str(op)), int(inp)) for op, inp in node) for node in spec)  # type: ignore[misc]
        return Genotype(nodes(normal), tuple(int(c) for c in normal_concat), nodes(reduce),
                        tuple(int(c) for c in reduce_concat))

    # -- JSON -------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"normal": [[list(p) for p in node] for node in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [[list(p) for p in node] for node in self.reduce], "reduce_concat": list(self.reduce_concat)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Genotype":
        return Genotype.make(d["normal"], d["reduce"], d.get("normal_concat", (2, 3, 4)), d.get("reduce_concat", (2, 3, 4)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Genotype":
        return Genotype.from_dict(json.loads(text))

    # -- DARTS string -----------------------------------------------------------------------------------------------
    def to_darts(self, original_names: bool = True) -> str:
        """The string the original prints: nested per-node lists; pools named ``*_3x3BN`` unless told otherwise."""
        def fmt(nodes: tuple[Node, ...]) -> str:
            name = (lambda op: ORIGINAL_NAMES.get(op, op)) if original_names else (lambda op: op)
            return "[" + ", ".join("[" + ", ".join(f"('{name(op)}', {inp})" for op, inp in node) + "]" for node in nodes) + "]"
        return (f"Genotype(normal={fmt(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={fmt(self.reduce)}, reduce_concat={list(self.reduce_concat)})")

    @staticmethod
    def from_darts(text: str) -> "Genotype":
        """Parse a ``Genotype(...)`` string without ``eval``: only literals and ``range(a, b)`` are accepted."""
        text = text.strip()
        m = re.fullmatch(r"Genotype\((.*)\)", text, flags=re.S)
        if not m:
            raise ValueError(f"not a Genotype(...) string: {text[:60]!r}")
        body = re.sub(r"range\(\s*(\d+)\s*,\s*(\d+)\s*\)", lambda r: str(list(range(int(r[1]), int(r[2])))), m[1])
        try:
            tree = ast.parse(f"dict({body})", mode="eval")
            call = tree.body
            assert isinstance(call, ast.Call)
            fields = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        except (SyntaxError, ValueError, AssertionError) as e:
            raise ValueError(f"cannot parse genotype string: {e}") from None
        missing = {"normal", "reduce"} - set(fields)
        if missing:
            raise ValueError(f"genotype string lacks {sorted(missing)}")
        normal, reduce = fields["normal"], fields["reduce"]
        if normal and isinstance(normal[0], tuple):  # flat DARTS list of pairs -> per node
            normal = [normal[i:i + 2] for i in range(0, len(normal), 2)]
            reduce = [reduce[i:i + 2] for i in range(0, len(reduce), 2)]
        return Genotype.make(normal, reduce, fields.get("normal_concat", (2, 3, 4)), fields.get("reduce_concat", (2, 3, 4)))

    # -- masks ------------------------------------------------------------------------------------------------------
    def to_mask(self) -> np.ndarray:
        edges = edge_list(len(self.normal))
        mask = np.zeros((2, len(edges), len(OP_NAMES)), dtype=bool)
        for c, ct in enumerate(CELL_TYPES):
            for i, node in enumerate(getattr(self, ct)):
                for op, inp in node:
                    mask[c, edges.index((i, inp)), OP_NAMES.index(op)] = True
        return mask


def from_mask(mask: np.ndarray, concat: tuple[int, ...] = (2, 3, 4)) -> Genotype:
    """Read a genotype off a single-path mask in which every node has exactly two live edges."""
    mask = np.asarray(mask, dtype=bool)
    groups = edge_groups()
    edges = edge_list()
    if mask.shape != (len(CELL_TYPES), len(edges), len(OP_NAMES)):
        raise ValueError(f"mask of shape {mask.shape}, expected {(len(CELL_TYPES), len(edges), len(OP_NAMES))} "
                         "(cell types, edges, ops)")
    nodes_per_cell = []
    for c, ct in enumerate(CELL_TYPES):
        nodes = []
        for i, (a, b) in enumerate(groups):
            live = [(e, np.flatnonzero(mask[c, e])) for e in range(a, b) if mask[c, e].any()]
            if len(live) != 2 or any(len(ops) != 1 for _, ops in live):
                raise ValueError(f"{ct} node {i}: mask is not single-path with 2 edges "
                                 f"({[(e, [OP_NAMES[o] for o in ops]) for e, ops in live]})")
            nodes.append(tuple((OP_NAMES[int(ops[0])], edges[e][1]) for e, ops in live))
        nodes_per_cell.append(tuple(nodes))
    return Genotype(nodes_per_cell[0], concat, nodes_per_cell[1], concat)


def random_genotype(seed: int, cells: int, ops: Sequence[str] = OP_NAMES, nodes: int = N_NODES) -> Genotype:
    """A uniformly sampled valid cell of the search space of ``ops`` (the Random Cell baseline): per node two
    distinct inputs and an op for each, drawn from ``ops`` (in OP_NAMES order, so the full space draws as before).

    Each (cells, seed) draws its own cell, as separate runs of the original do (a 5-cell and an 8-cell run with the
    same seed do not share one)."""
    space = [name for name in OP_NAMES if name in {canonical_op(o) for o in ops}]
    if not space:
        raise ValueError("random_genotype: no operations to draw from")
    rng = np.random.default_rng([seed, cells, 0x5EED])
    cells = []
    for _ in CELL_TYPES:
        cell = []
        for i in range(nodes):
            inputs = sorted(rng.choice(i + 2, 2, replace=False).tolist())
            cell.append(tuple((space[int(rng.integers(len(space)))], int(j)) for j in inputs))
        cells.append(tuple(cell))
    concat = tuple(range(2, 2 + nodes))
    return Genotype(cells[0], concat, cells[1], concat)


def load_genotype(path: str | Path) -> Genotype:
    """Read ``genotype.json`` (either the genotype itself or a record with a ``genotype`` key); a missing, corrupt or
    invalid file is a :class:`PipelineError` naming it."""
    try:
        d = json.loads(Path(path).read_text())
        return Genotype.from_dict(d.get("genotype", d))
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such genotype file") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:   # JSONDecodeError is a ValueError
        raise PipelineError(f"{path}: not a valid genotype ({type(e).__name__}: {e})") from None
