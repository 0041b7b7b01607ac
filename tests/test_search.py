import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from metantk_nas.config import FidelitySwitches, KernelSpec, LinearRegionSpec, SearchConfig
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.genotype import CELL_TYPES, edge_groups
from metantk_nas.nas.networks import full_mask
from metantk_nas.nas.ops import OP_NAMES
from metantk_nas.search import scoring
from metantk_nas.search.pruning import PruningSearch, dense_ranks, initial_mask, rank_candidates, round_sig
from metantk_nas.search.scoring import Scorer


def small_cfg(method="metantk", seed=0, ops=("sep_conv_3x3", "max_pool_3x3", "conv_3x3"), **kw):
    return SearchConfig(method=method, cells=5, seed=seed,
                        kernel=KernelSpec("maml", float("inf"), 1e-3) if method == "metantk" else None,
                        channels=4, image_size=8, tasks_per_batch=1, ntk_batch=6, task_pool=20, repeats=1,
                        ops=ops, linear_regions=LinearRegionSpec(batch=40, batches=1),
                        fidelity=FidelitySwitches(fresh_batch_per_candidate=False), **kw)


def run(cfg, prepared, state=None):
    torch.set_num_threads(1)
    scorer = None if cfg.method == "random" else Scorer(cfg, load_split(prepared, "train"), torch.device("cpu"))
    return PruningSearch(cfg, scorer, progress=False).run(state)


def test_rank_helpers_follow_te_nas():
    assert round_sig(0.0123456, 3) == pytest.approx(0.0123)
    assert round_sig(float("nan"), 3) == 0.0
    # dense ranks: descending, ties need exact equality even when the sort keys agree
    assert dense_ranks([0.5, 0.1, 0.5, 0.3], True, 3) == [0, 2, 0, 1]
    assert dense_ranks([0.5, 0.1, 0.5, 0.3], False, 3) == [2, 0, 2, 1]
    # equal 3-significant-figure keys keep their (stable) order, but the values differ, so the ranks do too
    assert dense_ranks([0.12341, 0.12342], True, 3) == [0, 1]
    rk, rr, order = rank_candidates([0.2, 0.2, 0.1], [0.0, 0.5, 0.0], 3)
    assert (rk, rr) == ([0, 0, 1], [0, 1, 0]) and order == [0, 1, 2]  # ties keep the dK order, then enumeration


@pytest.fixture(scope="module")
def reference_run(tiny_prepared):
    """One uninterrupted 3-op MetaNTK search shared by the tests below."""
    cfg = small_cfg()
    return cfg, *run(cfg, tiny_prepared)


def test_one_op_per_edge_per_round_then_two_edges_per_node(reference_run):
    cfg, genotype, state = reference_run
    mask = initial_mask(cfg.ops)
    assert len(state.rounds) == len(cfg.ops) - 1
    for rnd in state.rounds:
        assert len(rnd["pruned"]) == 18
        assert sorted((c, e) for c, e, _ in rnd["pruned"]) == sorted((c, e) for c in CELL_TYPES for e in range(9))
        for c, e, o in rnd["pruned"]:
            assert mask[CELL_TYPES.index(c), e, OP_NAMES.index(o)]
            mask[CELL_TYPES.index(c), e, OP_NAMES.index(o)] = False
    assert (mask.sum(-1) == 1).all()
    assert {(g["cell"], g["node"]) for g in state.group} == {(c, n) for c in CELL_TYPES for n in (1, 2)}
    for c in range(2):
        for a, b in edge_groups():
            assert state.mask[c, a:b].any(-1).sum() == 2
    assert all(op in cfg.ops for node in genotype.normal + genotype.reduce for op, _ in node)


def test_full_space_takes_six_rounds(tiny_prepared):
    cfg = small_cfg(method="linreg", ops=tuple(OP_NAMES))
    _, state = run(cfg, tiny_prepared)
    assert len(state.rounds) == 6
    assert [len(r["candidates"]) for r in state.rounds] == [18 * k for k in (7, 6, 5, 4, 3, 2)]


@pytest.mark.parametrize("method", ["metantk", "tenas", "linreg", "random"])
def test_every_method_gives_a_valid_genotype(method, tiny_prepared):
    genotype, _ = run(small_cfg(method), tiny_prepared)
    for nodes in (genotype.normal, genotype.reduce):
        for i, node in enumerate(nodes):
            assert len({inp for _, inp in node}) == 2 and all(0 <= inp < i + 2 for _, inp in node)


@pytest.mark.parametrize("method", ["tenas", "metantk"])
def test_batchnorm_kernels_use_the_coupled_backend(method, tiny_prepared, monkeypatch):
    seen = []
    real = scoring.per_sample_grads
    monkeypatch.setattr(scoring, "per_sample_grads", lambda net, x, names, backend, chunk=0: seen.append(backend) or real(net, x, names, backend, chunk))
    genotype, _ = run(replace(small_cfg(method), norm="batchnorm"), tiny_prepared)
    assert genotype is not None and seen and set(seen) == {"coupled"}


def test_linreg_never_computes_a_kernel(tiny_prepared, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a kernel was computed")
    monkeypatch.setattr(scoring, "per_sample_grads", boom)
    cfg = small_cfg("linreg")
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
    assert scorer.kernel_net is None
    _, state = PruningSearch(cfg, scorer, progress=False).run()
    assert all(c["dK"] == 0.0 for r in state.rounds for c in r["candidates"])


def test_random_differs_across_seeds_and_repeats_for_a_seed(tiny_prepared):
    a, _ = run(small_cfg("random", seed=1), tiny_prepared)
    b, _ = run(small_cfg("random", seed=1), tiny_prepared)
    c, _ = run(small_cfg("random", seed=2), tiny_prepared)
    assert a == b and a != c


def test_search_is_deterministic(reference_run, tiny_prepared):
    cfg, _, s1 = reference_run
    _, s2 = run(cfg, tiny_prepared)
    assert json.dumps(s1.rounds) == json.dumps(s2.rounds) and json.dumps(s1.group) == json.dumps(s2.group)
    assert (s1.mask == s2.mask).all()


def test_killed_search_resumes_to_the_same_result(reference_run, tiny_prepared, tmp_path):
    cfg, g_full, s_full = reference_run
    # simulate a kill after the first round: keep only the state saved by round 0
    state = tmp_path / "search_state.json"
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
    search = PruningSearch(cfg, scorer, progress=False)
    mask, record = search.prune_round(initial_mask(cfg.ops), 0, lambda n: None)
    state.write_text(json.dumps({"mask": mask.astype(int).tolist(), "rounds": [record], "group": None, "seconds": [1.0]}))
    g_resumed, s_resumed = run(cfg, tiny_prepared, state)
    assert g_resumed == g_full
    assert json.dumps(s_resumed.rounds) == json.dumps(s_full.rounds)


def test_fresh_batches_per_candidate_is_the_default_and_runs(tiny_prepared):
    assert FidelitySwitches().fresh_batch_per_candidate is True
    cfg = replace(small_cfg("tenas", ops=("max_pool_3x3", "conv_3x3")), fidelity=FidelitySwitches())
    genotype, _ = run(cfg, tiny_prepared)
    assert genotype is not None


def test_search_script_outputs_are_byte_identical(tmp_path):
    from conftest import ROOT, run_script
    import yaml

    over = tmp_path / "tiny.yaml"
    over.write_text(yaml.safe_dump({
        "experiment": "t", "device": "cpu",
        "data": {"prepared_root": str(tmp_path / "prep"), "datasets": {"synthetic": {"format": "synthetic", "synthetic": {
            "seed": 0, "train_classes": 8, "val_classes": 5, "test_classes": 5, "images_per_class": 10, "image_size": 8}}}},
        "grid": [{"dataset": "synthetic", "methods": ["metantk"], "cells": [5], "seeds": [0]}],
        "search": {"channels": 4, "image_size": 8, "repeats": 1, "tasks_per_batch": 1, "ntk_batch": 6, "task_pool": 20,
                   "ops": ["max_pool_3x3", "conv_3x3"], "linear_regions": {"batch": 30, "batches": 1},
                   "fidelity": {"fresh_batch_per_candidate": False}}}))
    cf = ["--configfile", ROOT / "config/config.yaml", over]
    run_script("scripts/prepare_data.py", *cf, "--dataset", "synthetic", "--out", tmp_path / "prep/synthetic")
    outs = []
    for k in (1, 2):
        run_script("scripts/search.py", *cf, "--dataset", "synthetic", "--method", "metantk", "--cells", "5", "--seed",
                   "0", "--prepared", tmp_path / "prep/synthetic", "--out", tmp_path / f"s{k}", "--no-progress")
        outs.append((tmp_path / f"s{k}/search.json").read_bytes())
        assert json.loads((tmp_path / f"s{k}/cost.json").read_text())["device_hours"] >= 0
    assert outs[0] == outs[1]


# -- genotype export under a parameter budget ------------------------------------------------------------------
def _record(cfg, genotype, state):
    return {"method": cfg.method, "cells": cfg.cells, "rounds": state.rounds, "group": state.group,
            "mask": state.mask.astype(int).tolist(), "genotype": genotype.to_dict()}


def test_infinite_budget_gives_exactly_the_rank_based_genotype(reference_run):
    from metantk_nas.search.budget import solve

    cfg, genotype, state = reference_run
    for budget in (None, 1e6):
        got, info = solve(_record(cfg, genotype, state), 4, 5, 8, budget)
        assert got.to_mask().tolist() == genotype.to_mask().tolist()


def test_a_budget_is_respected_and_a_too_small_one_is_a_clear_error(reference_run):
    from metantk_nas.errors import PipelineError
    from metantk_nas.nas.networks import eval_net_parameters
    from metantk_nas.search.budget import solve

    cfg, genotype, state = reference_run
    rec = _record(cfg, genotype, state)
    full = eval_net_parameters(genotype, 16, 5, 8)
    got, info = solve(rec, 16, 5, 8, budget_millions=(full - 1) / 1e6)
    assert info["params"] == eval_net_parameters(got, 16, 5, 8) <= full - 1
    assert got != genotype
    with pytest.raises(PipelineError, match="below the smallest valid cell"):
        solve(rec, 16, 5, 8, budget_millions=0.0001)
