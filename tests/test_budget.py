"""Genotype export under a parameter budget (search/budget.py) on a fabricated search record: the importance
weights derived by hand, and the integer program's optimum against an exhaustive enumeration of every genotype of
the record's space (numpy, no solver), at several budgets. Seconds, no search run."""
import itertools

import numpy as np
import pytest

from metantk_nas.errors import PipelineError
from metantk_nas.nas.genotype import CELL_TYPES, edge_groups, from_mask
from metantk_nas.nas.networks import eval_net_parameters
from metantk_nas.nas.space import OP_NAMES
from metantk_nas.search.budget import BIG, _op_params, importance, solve

OPS = ("max_pool_3x3", "sep_conv_3x3")   # a cheap and a costly op, so budgets bind
C, DEPTH, CLASSES = 4, 5, 5


def fabricated_record(seed: int = 0) -> dict:
    """One pruning round over the 2-op space (each edge loses one op, drawn at random), then the group stage
    keeping 2 edges per node by a drawn rank sum (the lowest two)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, 9, len(OP_NAMES)), dtype=bool)
    candidates, pruned = [], []
    for c, ct in enumerate(CELL_TYPES):
        for e in range(9):
            for op in OPS:
                candidates.append({"cell": ct, "edge": e, "op": op})
            gone = OPS[int(rng.integers(2))]
            pruned.append([ct, e, gone])
            mask[c, e, OP_NAMES.index(next(o for o in OPS if o != gone))] = True
    group = []
    for c, ct in enumerate(CELL_TYPES):
        for node, (a, b) in enumerate(edge_groups()):
            sums = rng.permutation(b - a) * 2 + 1
            group.append({"cell": ct, "node": node,
                          "candidates": [{"edge": e, "rank_sum": int(s)} for e, s in zip(range(a, b), sums)]})
            for e, s in zip(range(a, b), sums):
                if s > np.sort(sums)[1]:
                    mask[c, e] = False
    return {"rounds": [{"candidates": candidates, "pruned": pruned}], "group": group, "mask": mask.astype(int).tolist()}


def test_importance_by_hand():
    rec = fabricated_record()
    ops, edges = importance(rec)
    assert ops.shape == (2, 9, len(OP_NAMES)) and edges.shape == (2, 9)   # (cell types, edges, ops)
    mask = np.array(rec["mask"], dtype=bool)
    for c, ct in enumerate(CELL_TYPES):
        gone = {(e, o) for cc, e, o in rec["rounds"][0]["pruned"] if cc == ct}
        for e in range(9):
            for o, name in enumerate(OP_NAMES):
                want = -1.0 if name not in OPS else (1.0 if (e, name) in gone else 2.0)   # round 0 + 1; survivor 2
                assert ops[c, e, o] == want, (ct, e, name)
        for g in (g for g in rec["group"] if g["cell"] == ct):
            top = max(x["rank_sum"] for x in g["candidates"]) + 1
            for x in g["candidates"]:
                want = 2 * BIG if mask[c, x["edge"]].any() else BIG * x["rank_sum"] / top
                assert edges[c, x["edge"]] == pytest.approx(want)


def _all_cells(ops_w, edge_w, params, c):
    """Every cell of type c in the record's space: (objective, #params of its ops, mask)."""
    per_node = []
    for a, b in edge_groups():
        choices = []
        for e1, e2 in itertools.combinations(range(a, b), 2):
            for o1 in np.flatnonzero(ops_w[c, e1] >= 0):
                for o2 in np.flatnonzero(ops_w[c, e2] >= 0):
                    choices.append((edge_w[c, e1] + edge_w[c, e2] + ops_w[c, e1, o1] + ops_w[c, e2, o2],
                                    params[c, e1, o1] + params[c, e2, o2], ((e1, o1), (e2, o2))))
        per_node.append(choices)
    out = []
    for combo in itertools.product(*per_node):
        out.append((sum(x[0] for x in combo), sum(x[1] for x in combo), [eo for x in combo for eo in x[2]]))
    return out


def test_the_op_parameters_add_up_to_the_evaluation_networks_count():
    """The additivity the integer program rests on: fixed + the chosen ops' parameters = #params of the EvalNet
    built from the genotype (counted directly), for the rank-based cell and cells drawn at random."""
    rec = fabricated_record()
    params = _op_params(C, DEPTH)
    ref = from_mask(np.array(rec["mask"], dtype=bool))
    fixed = eval_net_parameters(ref, C, DEPTH, CLASSES) - int((params * ref.to_mask()).sum())
    rng = np.random.default_rng(1)
    for _ in range(4):
        mask = np.zeros((2, 9, len(OP_NAMES)), dtype=bool)
        for c in range(2):
            for a, b in edge_groups():
                for e in rng.choice(np.arange(a, b), 2, replace=False):
                    mask[c, e, rng.integers(len(OP_NAMES))] = True
        g = from_mask(mask)
        assert eval_net_parameters(g, C, DEPTH, CLASSES) == fixed + int((params * mask).sum())


@pytest.mark.parametrize("fraction", [None, 1.0, 0.97, 0.9, 0.8])
def test_the_integer_program_finds_the_exhaustive_optimum(fraction):
    rec = fabricated_record()
    ops_w, edge_w = importance(rec)
    params = _op_params(C, DEPTH)
    ref = from_mask(np.array(rec["mask"], dtype=bool))
    full = eval_net_parameters(ref, C, DEPTH, CLASSES)
    fixed = full - int((params * ref.to_mask()).sum())
    normal, reduce = (_all_cells(ops_w, edge_w, params, c) for c in range(2))
    obj = np.array([x[0] for x in normal])[:, None] + np.array([x[0] for x in reduce])[None, :]
    tot = fixed + np.array([x[1] for x in normal])[:, None] + np.array([x[1] for x in reduce])[None, :]
    budget = None if fraction is None else fraction * full / 1e6
    feasible = np.ones_like(tot, dtype=bool) if budget is None else tot <= budget * 1e6
    assert feasible.any()
    best = obj[feasible].max()
    got, info = solve(rec, C, DEPTH, CLASSES, budget)
    assert info["objective"] == pytest.approx(best, abs=1e-6)
    assert info["budget_millions"] == budget
    assert info["params"] == eval_net_parameters(got, C, DEPTH, CLASSES)
    if budget is not None:
        assert info["params"] <= budget * 1e6
    if fraction in (None, 1.0):   # no binding budget: exactly the rank-based genotype
        assert got == ref
    else:                          # a binding one: the rank-based cell is over it, the answer is not that cell
        assert full > budget * 1e6 and got != ref


def test_a_budget_below_every_cell_is_one_line_naming_the_smallest():
    """The number the error names is the smallest valid cell of the search's own space (here its 2 ops; skip_connect,
    with no parameters in a normal cell, is outside it), found by enumerating every cell."""
    rec = fabricated_record()
    ops_w, edge_w = importance(rec)
    params = _op_params(C, DEPTH)
    ref = from_mask(np.array(rec["mask"], dtype=bool))
    fixed = eval_net_parameters(ref, C, DEPTH, CLASSES) - int((params * ref.to_mask()).sum())
    smallest = fixed + sum(min(x[1] for x in _all_cells(ops_w, edge_w, params, c)) for c in range(2))
    with pytest.raises(PipelineError, match=r"below the smallest valid cell \(\d+\.\d{4}M for 5 cells, 5 classes, C=4\)") as e:
        solve(rec, C, DEPTH, CLASSES, 1e-4)
    assert f"({smallest / 1e6:.4f}M " in str(e.value)


def test_one_op_per_edge_even_where_two_ops_on_one_edge_would_score_more():
    """A record of 3 pruning rounds over 4 ops, built so that putting two cheap ops on one edge would outscore any
    valid cell: in the normal cell's node 1 the kept edge 2 rates avg/max pool 3/4 and the kept edge 3 only 1/2. A
    budget that admits only pools then has one answer, derived by hand: every kept edge with its better pool,
    max_pool_3x3 (4 on edge 2, 2 on edge 3)."""
    cheap_a, cheap_b, c3, c5 = "avg_pool_3x3", "max_pool_3x3", "sep_conv_3x3", "conv_1x5_5x1"
    default = (c5, c3, cheap_a)          # pruned in rounds 1, 2, 3; the survivor is max_pool: weights 1, 2, 3, 4
    odd = (cheap_a, cheap_b, c5)         # normal edge 3: the pools go first, sep_conv survives
    kept = (0, 1, 2, 3, 5, 6)
    rounds = []
    for r in range(3):
        cand, pruned = [], []
        for ct in CELL_TYPES:
            for e in range(9):
                order = odd if (ct, e) == (CELL_TYPES[0], 3) else default
                cand += [{"cell": ct, "edge": e, "op": o} for o in (cheap_a, cheap_b, c3, c5) if o not in order[:r]]
                pruned.append([ct, e, order[r]])
        rounds.append({"candidates": cand, "pruned": pruned})
    mask = np.zeros((2, 9, len(OP_NAMES)), dtype=bool)
    for c in range(2):
        for e in kept:
            mask[c, e, OP_NAMES.index(c3 if (c, e) == (0, 3) else cheap_b)] = True
    rec = {"rounds": rounds, "group": [], "mask": mask.astype(int).tolist()}
    want = mask.copy()
    want[0, 3] = False
    want[0, 3, OP_NAMES.index(cheap_b)] = True   # every kept edge with max_pool_3x3
    params = _op_params(C, DEPTH)
    pools = from_mask(want)
    budget = (eval_net_parameters(pools, C, DEPTH, CLASSES) + 0.5) / 1e6   # pools only: any conv is over it
    assert eval_net_parameters(from_mask(mask), C, DEPTH, CLASSES) > budget * 1e6
    got, info = solve(rec, C, DEPTH, CLASSES, budget)
    assert np.array_equal(got.to_mask(), want)
    assert info["params"] == eval_net_parameters(pools, C, DEPTH, CLASSES) <= budget * 1e6
    assert params[0, 3, OP_NAMES.index(cheap_a)] == params[0, 3, OP_NAMES.index(cheap_b)]   # the pools tie on cost


def test_a_mask_of_the_wrong_shape_is_refused():
    """A mask read from a damaged search.json with an extra cell type or edge is an error, not silently cut."""
    good = fabricated_record()["mask"]
    for bad in (np.pad(np.array(good), ((0, 1), (0, 0), (0, 0))), np.pad(np.array(good), ((0, 0), (0, 1), (0, 0)))):
        with pytest.raises(ValueError, match=r"mask of shape \(\d, \d+, 7\), expected \(2, 9, 7\)"):
            from_mask(bad)
