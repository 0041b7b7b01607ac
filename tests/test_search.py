"""Whole searches: TE-NAS's rank rules, the rounds and the edge-group stage, every method, resumes after a kill or
a signal to byte-identical results, the export under a parameter budget."""
import json
from dataclasses import replace

import pytest
import torch

from metantk_nas.data.prepared import load_split
from metantk_nas.nas.genotype import CELL_TYPES, edge_groups
from metantk_nas.nas.ops import OP_NAMES
from metantk_nas.search import scoring
from metantk_nas.search.pruning import PruningSearch, dense_ranks, initial_mask, rank_candidates, round_sig
from metantk_nas.search.scoring import Scorer

from helpers import TWO_OPS, small_cfg


def run(cfg, prepared, state=None):
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


@pytest.mark.parametrize("method", ["metantk", "tenas", "linreg", "random"])
def test_every_method_gives_a_valid_genotype(method, tiny_prepared, reference_run):
    genotype = reference_run[1] if method == "metantk" else run(small_cfg(method, ops=TWO_OPS), tiny_prepared)[0]
    for nodes in (genotype.normal, genotype.reduce):
        for i, node in enumerate(nodes):
            assert len({inp for _, inp in node}) == 2 and all(0 <= inp < i + 2 for _, inp in node)


class _Enough(Exception):
    """Stops a search once a test has seen what it checks."""


@pytest.mark.parametrize("method", ["tenas", "metantk"])
def test_batchnorm_kernels_use_the_coupled_backend(method, tiny_prepared, monkeypatch):
    """The search's own path, up to its third kernel (the origin's and two candidates'): every one coupled."""
    seen = []
    real = scoring.per_sample_grads

    def spy(net, x, names, backend, chunk=0):
        seen.append(backend)
        if len(seen) > 3:
            raise _Enough
        return real(net, x, names, backend, chunk)
    monkeypatch.setattr(scoring, "per_sample_grads", spy)
    with pytest.raises(_Enough):
        run(replace(small_cfg(method, ops=TWO_OPS), norm="batchnorm"), tiny_prepared)
    assert set(seen) == {"coupled"}


def test_linreg_never_computes_a_kernel(tiny_prepared, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a kernel was computed")
    monkeypatch.setattr(scoring, "per_sample_grads", boom)
    cfg = small_cfg("linreg", ops=TWO_OPS)
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
    assert scorer.kernel_net is None
    _, state = PruningSearch(cfg, scorer, progress=False).run()
    assert len({c["dR"] for r in state.rounds for c in r["candidates"]}) > 1   # ranked on the regions alone


def test_random_differs_across_seeds_and_repeats_for_a_seed(tiny_prepared):
    a, _ = run(small_cfg("random", seed=1), tiny_prepared)
    b, _ = run(small_cfg("random", seed=1), tiny_prepared)
    c, _ = run(small_cfg("random", seed=2), tiny_prepared)
    assert a == b and a != c
    # the baseline lives in the configured search space (search.ops), as the pruning methods do
    for seed in range(20):
        g, _ = run(small_cfg("random", seed=seed, ops=("max_pool_3x3",)), tiny_prepared)
        assert {op for ct in ("normal", "reduce") for node in getattr(g, ct) for op, _ in node} == {"max_pool_3x3"}


def test_killed_search_resumes_to_the_same_result(chunked_references, tiny_prepared, tmp_path):
    cfg, g_full, s_full = chunked_references(1)   # the 2-op search, one by one
    # simulate a kill after the first round: keep only the state saved by round 0
    state = tmp_path / "search_state.json"
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
    search = PruningSearch(cfg, scorer, progress=False)
    mask, record = search.prune_round(initial_mask(cfg.ops), 0, lambda n: None)
    state.write_text(json.dumps({"mask": mask.astype(int).tolist(), "rounds": [record], "group": None, "seconds": [1.0],
                                 "networks_per_pass": 1}))
    g_resumed, s_resumed = run(cfg, tiny_prepared, state)
    assert s_resumed.resumes == ["round 1"] and s_resumed.networks_per_pass == 1
    assert g_resumed == g_full
    assert json.dumps(s_resumed.rounds) == json.dumps(s_full.rounds)
    assert json.dumps(s_resumed.group) == json.dumps(s_full.group)


ANOTHER_PASS = json.dumps({"mask": initial_mask(small_cfg().ops).astype(int).tolist(), "rounds": [], "group": None,
                           "partial": {"stage": "round", "scores": [[0.5, 0.5]], "seconds": 1.0},
                           "networks_per_pass": 3})


@pytest.mark.parametrize("content", ['{"mask": [[1, 0', '{"mask": [1, 0, 1], "rounds": [], "group": null}', ANOTHER_PASS],
                         ids=["truncated", "mask-of-another-supernet", "scored-with-another-pass-size"])
def test_an_unreadable_search_state_is_a_logged_fresh_start(tiny_prepared, tmp_path, caplog, monkeypatch, content):
    """A corrupt or foreign search_state.json: a warning naming the file, then the search from scratch (the
    documented behaviour, docs/scaling.md): its first scores are round 0's, of the initial mask's candidates, with
    none taken from the file: the uninterrupted search's start (which the search's determinism carries to its
    end: test_search_script_outputs_are_byte_identical)."""
    cfg = small_cfg()
    state = tmp_path / "search_state.json"
    state.write_text(content)
    started = []

    def first_scores(self, cands, shared, scores, bar):
        started.append((self._state.rounds, self._state.group, [c for _, _, c, _ in cands], list(scores)))
        raise _Enough
    monkeypatch.setattr(PruningSearch, "_score_all", first_scores)
    with caplog.at_level("WARNING", logger="metantk_nas.search.pruning"), pytest.raises(_Enough):
        run(cfg, tiny_prepared, state)
    assert any(str(state) in r.getMessage() and "starting the search from scratch" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    ((rounds, group, cands, scores),) = started
    mask = initial_mask(cfg.ops)
    assert rounds == [] and group is None and scores == []
    assert len(cands) == int(mask.sum()) and all((c <= mask).all() and c.sum() == mask.sum() - 1 for c in cands)


def test_search_script_outputs_are_byte_identical(tmp_path):
    from helpers import ROOT, run_script
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
        cost = json.loads((tmp_path / f"s{k}/cost.json").read_text())
        assert cost["wall_seconds"] > 0 and cost["wall_seconds"] == pytest.approx(sum(cost["round_seconds"]), abs=1e-3)
        assert cost["device_hours"] == pytest.approx(cost["wall_seconds"] / 3600, abs=1e-6)
        assert cost["ntk_backend"] == "fast" and cost["device"]
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


# -- the search's own networks ----------------------------------------------------------------------------------
def test_in_a_reference_search_normal_cell_candidates_change_the_region_count(reference_run):
    """The linear-region network has a normal cell (it used to have two reduction cells, so every normal-cell dR
    was exactly 0 and normal cells were pruned on dK alone)."""
    _, _, state = reference_run
    normal = [c["dR"] for r in state.rounds for c in r["candidates"] if c["cell"] == "normal"]
    assert any(d != 0 for d in normal)   # 40 inputs of 8x8 crops nearly saturate the count: 3 of 45 here


@pytest.fixture(scope="module")
def chunked_references(tiny_prepared):
    """Uninterrupted searches of the reference config, one per number of networks per kernel pass (1: one by one,
    the default; more: search.batch_candidates): a search's numbers are reproducible for a fixed pass size only,
    so a resumed search is compared with the uninterrupted one of its own pass size."""
    out = {}

    def get(per_pass: int):
        if per_pass not in out:
            cfg = replace(small_cfg(ops=TWO_OPS), checkpoint_seconds=0, batch_candidates=per_pass > 1)
            out[per_pass] = (cfg, *PruningSearch(cfg, chunked_scorer(cfg, tiny_prepared, per_pass), progress=False).run())
        return out[per_pass]
    return get


def chunked_scorer(cfg, prepared, per_pass: int) -> Scorer:
    scorer = Scorer(cfg, load_split(prepared, "train"), torch.device("cpu"))
    if per_pass > 1:
        scorer._pass_networks = per_pass   # networks per batched pass (shared origin: one network per candidate)
    assert scorer.pass_size() == per_pass
    return scorer


@pytest.mark.chunking
@pytest.mark.parametrize("stage,at,chunk,saved", [   # batched passes (chunk > 1): in `make test` only (sweep)
    ("round", 7, 1, 7), ("group", 3, 1, 3), pytest.param("round", 7, 3, 9, marks=pytest.mark.sweep),
    pytest.param("group", 2, 2, 2, marks=pytest.mark.sweep)])
def test_a_signalled_search_checkpoints_mid_stage_and_resumes_to_the_same_result(chunked_references, tiny_prepared,
                                                                                 tmp_path, monkeypatch, stage, at,
                                                                                 chunk, saved):
    """SIGUSR1 while candidate ``at`` of round 0 (or of the group stage) is scored: its chunk of ``chunk``
    candidates (one by one, or round-batched) finishes, the state holds the ``saved`` scores finished, Preempted
    is raised; the resumed search scores only the rest, in the same chunks, and ends with the records of the
    uninterrupted search of the same pass size, byte for byte (the same computation, so equal by construction on
    any machine and thread count)."""
    import os
    import signal

    from metantk_nas.preemption import Preempted

    cfg, g_full, s_full = chunked_references(chunk)
    assert s_full.networks_per_pass == chunk
    state_path = tmp_path / "search_state.json"
    scorer = chunked_scorer(cfg, tiny_prepared, chunk)
    real = scorer.region_delta
    calls = []
    n_round = sum(len(r["candidates"]) for r in s_full.rounds)

    def signalling(origin, cand, *key):
        calls.append(key)
        if len(calls) == (at if stage == "round" else n_round + at):
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(origin, cand, *key)
    monkeypatch.setattr(scorer, "region_delta", signalling)
    with pytest.raises(Preempted, match="rerun to resume"):
        PruningSearch(cfg, scorer, progress=False).run(state_path)
    state = json.loads(state_path.read_text())
    assert state["partial"]["stage"] == stage and len(state["partial"]["scores"]) == saved
    assert state["networks_per_pass"] == chunk
    monkeypatch.undo()
    resumed_calls = []
    scorer2 = chunked_scorer(cfg, tiny_prepared, chunk)
    real2 = scorer2.region_delta
    monkeypatch.setattr(scorer2, "region_delta", lambda o, c, *k: resumed_calls.append(k) or real2(o, c, *k))
    g, s = PruningSearch(cfg, scorer2, progress=False).run(state_path)
    assert len(resumed_calls) == n_round + 14 - len(calls)   # only the candidates left (14 in the group stage)
    assert len(s.resumes) == 1
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)   # noqa: E731 (search.json sorts)
    assert g == g_full and same(s.rounds, s_full.rounds) and same(s.group, s_full.group) and s.partial is None
