"""Genotype export under a parameter budget: an integer program solved with PuLP (bundled CBC).

Variables ``x[c, e, o]`` choose op o on edge e of cell type c, ``y[c, e]`` choose the edge.  Each node keeps exactly
2 incoming edges, each chosen edge exactly one op.  The objective is the summed importance from the search:

* edge importance: the edges the group stage kept get 2 * BIG, the others BIG * rank_sum / (max + 1) < BIG;
* op importance: the pruning round in which the op was removed (the survivor: one more than the last round).

Edge weights dominate op weights, and on each edge the survivor is the unique best op, so with no budget the
optimum is exactly the rank-based genotype (tested).  The constraint is the evaluation network's #params, which
is additive: fixed parts + sum over cells of the chosen ops' parameters in that cell.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PipelineError
from ..nas.genotype import CELL_TYPES, Genotype, edge_groups, edge_list, from_mask
from ..nas.space import OP_NAMES

BIG = 1000.0


def importance(search: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(op weights (2, E, O), edge weights (2, E)) from a search.json record."""
    n_rounds = len(search["rounds"])
    ops = np.full((2, 9, len(OP_NAMES)), -1.0)
    mask = np.array(search["mask"], dtype=bool)
    for r, rnd in enumerate(search["rounds"]):
        for cand in rnd["candidates"]:
            ops[CELL_TYPES.index(cand["cell"]), cand["edge"], OP_NAMES.index(cand["op"])] = 0.0  # took part
        for c, e, o in rnd["pruned"]:
            ops[CELL_TYPES.index(c), e, OP_NAMES.index(o)] = r + 1.0
    alive = ops.max(-1, keepdims=True) >= 0
    survivor = (ops == 0) & alive
    ops[survivor] = n_rounds + 1.0
    edges = np.zeros((2, 9))
    kept = mask.any(-1)
    for g in search.get("group") or []:
        c = CELL_TYPES.index(g["cell"])
        top = max(x["rank_sum"] for x in g["candidates"]) + 1
        for x in g["candidates"]:
            edges[c, x["edge"]] = BIG * x["rank_sum"] / top
    edges[kept] = 2 * BIG
    return ops, edges


def _op_params(channels: int, depth: int) -> np.ndarray:
    """params[c, e, o]: the op's parameters summed over the cells of type c."""
    from ..nas.networks import count_parameters, evalnet_layout   # torch only when a budget is solved
    from ..nas.ops import make_op

    params = np.zeros((2, 9, len(OP_NAMES)))
    for mult, red in evalnet_layout(depth):
        c = channels * mult
        for e, (_, inp) in enumerate(edge_list()):
            stride = 2 if red and inp < 2 else 1
            for o, name in enumerate(OP_NAMES):
                params[1 if red else 0, e, o] += count_parameters(make_op(name, c, stride, "batchnorm"))
    return params


def solve(search: dict[str, Any], channels: int, depth: int, num_classes: int,
          budget_millions: float | None) -> tuple[Genotype, dict[str, Any]]:
    import pulp

    from ..nas.networks import EvalNet, count_parameters

    ops_w, edge_w = importance(search)
    op_params = _op_params(channels, depth)
    # fixed parameters: any genotype's total minus its ops
    ref = from_mask(np.array(search["mask"], dtype=bool))
    ref_mask = ref.to_mask()
    fixed = count_parameters(EvalNet(ref, channels, depth, num_classes)) - int((op_params * ref_mask).sum())
    prob = pulp.LpProblem("genotype", pulp.LpMaximize)
    alive = ops_w >= 0   # the ops of the search's space on each edge
    cand = [(c, e, o) for c in range(2) for e in range(9) for o in range(len(OP_NAMES)) if alive[c, e, o]]
    x = {k: pulp.LpVariable(f"x_{k[0]}_{k[1]}_{k[2]}", cat="Binary") for k in cand}
    y = {(c, e): pulp.LpVariable(f"y_{c}_{e}", cat="Binary") for c in range(2) for e in range(9)}
    prob += pulp.lpSum(ops_w[k] * x[k] for k in cand) + pulp.lpSum(edge_w[c, e] * y[c, e] for (c, e) in y)
    for c in range(2):
        for e in range(9):
            prob += pulp.lpSum(x[k] for k in cand if k[:2] == (c, e)) == y[c, e]
        for a, b in edge_groups():
            prob += pulp.lpSum(y[c, e] for e in range(a, b)) == 2
    total = fixed + pulp.lpSum(op_params[k] * x[k] for k in cand)
    if budget_millions is not None:
        prob += total <= budget_millions * 1e6
    status = prob.solve(pulp.PULP_CBC_CMD(msg=False))
    if pulp.LpStatus[status] != "Optimal":
        smallest = _smallest_cell(np.where(alive, op_params, np.inf), fixed)
        raise PipelineError(f"parameter budget {budget_millions}M is below the smallest valid cell "
                            f"({smallest / 1e6:.4f}M for {depth} cells, {num_classes} classes, C={channels})")
    mask = np.zeros((2, 9, len(OP_NAMES)), dtype=bool)
    for k in cand:
        if x[k].value() > 0.5:
            mask[k] = True
    genotype = from_mask(mask)
    return genotype, {"budget_millions": budget_millions, "params": int(round(pulp.value(total))),
                      "objective": float(pulp.value(prob.objective))}


def _smallest_cell(op_params: np.ndarray, fixed: int) -> float:
    """#params of the cheapest valid cell: the 2 cheapest edges per node with their cheapest ops (``op_params`` is
    inf where an op is outside the search's space)."""
    total = float(fixed)
    cheapest = op_params.min(-1)
    for c in range(2):
        for a, b in edge_groups():
            total += float(np.sort(cheapest[c, a:b])[:2].sum())
    return total
