import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from metantk_nas.config import FidelitySwitches, KernelSpec, LinearRegionSpec, SearchConfig
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.genotype import CELL_TYPES, edge_groups
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


TWO_OPS = ("max_pool_3x3", "conv_3x3")   # one pruning round of 28 candidates instead of two (70): for the tests that
                                        # need a whole search but not two rounds


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


@pytest.mark.parametrize("method,inner", [("metantk", "maml"), ("metantk", "anil"), ("tenas", None)])
def test_backends_agree_on_the_exact_kernel_each_method_computes(method, inner, tiny_prepared):
    """fast = opacus on the search's own configuration: its networks, batches and heads (for tenas, the
    supernet's own classifier), in float64."""
    train = load_split(tiny_prepared, "train")
    kernel = KernelSpec(inner, 1.0, 1e-5) if inner else None
    scorers = {b: Scorer(replace(small_cfg(method), kernel=kernel, ntk_backend=b, grad_dtype="float64"), train,
                         torch.device("cpu")) for b in ("fast", "opacus")}
    scorers["fast"].reinit_kernel_net(0)
    scorers["opacus"].kernel_net.load_state_dict(scorers["fast"].kernel_net.state_dict())
    cand = initial_mask(small_cfg().ops)
    cand[0, 3, OP_NAMES.index("conv_3x3")] = False
    for mask in (initial_mask(small_cfg().ops), cand):
        out = {}
        for b, s in scorers.items():
            inputs, head = s.kernel_inputs(0, 1, 0), s.new_head(0, 1, 0)
            out[b] = (s.metantk_kernels(mask, inputs, head) if method == "metantk" else (s.ntk_kernel(mask, inputs),))
        for a, b in zip(out["fast"], out["opacus"]):
            assert torch.allclose(a.double(), b.double(), rtol=1e-9, atol=1e-12)
    if method == "tenas":
        from metantk_nas.nas.networks import LogitsNet
        from metantk_nas.kernels.ntk import kernel_parameter_names
        net = LogitsNet(scorers["fast"].kernel_net, cand)
        assert "body.classifier.weight" in kernel_parameter_names(net, net.live_parameter)


# -- every fidelity switch changes what the docs say, and nothing else -------------------------------------------
def _spy(scorer, monkeypatch):
    calls = []

    def fake(mask, inputs, head):
        calls.append((mask.copy(), inputs, head))
        return 2.0 + float(mask.sum()) / 100
    monkeypatch.setattr(scorer, "kernel_condition", fake)
    return calls


def test_fresh_head_per_network_gives_the_candidate_its_own_head(tiny_prepared, monkeypatch):
    train = load_split(tiny_prepared, "train")
    origin = initial_mask(small_cfg().ops)
    cand = origin.copy()
    cand[1, 2, OP_NAMES.index("conv_3x3")] = False
    seen = {}
    for fresh in (True, False):
        cfg = replace(small_cfg(), fidelity=FidelitySwitches(fresh_head_per_network=fresh))
        scorer = Scorer(cfg, train, torch.device("cpu"))
        calls = _spy(scorer, monkeypatch)
        scorer.kernel_delta(origin, cand, 0, 5, 0)
        (m_o, x_o, h_o), (m_c, x_c, h_c) = calls
        assert x_o is x_c and (m_o == origin).all() and (m_c == cand).all()
        assert (h_o is not h_c) == fresh
        assert torch.equal(h_o.weight, h_c.weight) != fresh
        seen[fresh] = (x_o, h_o)
    # nothing else: the same batch and the same origin head either way
    assert torch.equal(seen[True][0].x, seen[False][0].x) and torch.equal(seen[True][1].weight, seen[False][1].weight)


def test_fresh_batch_per_candidate_recomputes_the_origin_on_its_own_batch(tiny_prepared, monkeypatch):
    assert FidelitySwitches().fresh_batch_per_candidate is True     # the original's behaviour is the default
    train = load_split(tiny_prepared, "train")
    mask = initial_mask(TWO_OPS)
    records = {}
    for fresh in (True, False):
        cfg = replace(small_cfg(ops=TWO_OPS), repeats=2, fidelity=FidelitySwitches(fresh_batch_per_candidate=fresh),
                      batch_candidates=False)   # the calls one by one (test_batched.py: the batched path's values)
        scorer = Scorer(cfg, train, torch.device("cpu"))
        calls = _spy(scorer, monkeypatch)
        _, records[fresh] = PruningSearch(cfg, scorer, progress=False).prune_round(mask, 0, lambda n: None)
        n_cand = len(records[fresh]["candidates"])
        origin_calls = [c for c in calls if (c[0] == mask).all()]
        batches = {id(c[1]) for c in calls}
        if fresh:   # per candidate and repeat: its own batch, the origin's kernel on it
            assert len(origin_calls) == n_cand * 2 and len(batches) == n_cand * 2
        else:       # one batch per repeat for the whole round, the origin's kernel once per repeat
            assert len(origin_calls) == 2 and len(batches) == 2
        assert len(calls) - len(origin_calls) == n_cand * 2
    # nothing else: the region scores are the same
    assert [c["dR"] for c in records[True]["candidates"]] == [c["dR"] for c in records[False]["candidates"]]


def test_default_init_is_pytorchs_default_and_the_switch_gives_kaiming_normal(tiny_prepared):
    train = load_split(tiny_prepared, "train")
    weights, inputs = {}, {}
    for default in (True, False):
        cfg = replace(small_cfg(), fidelity=FidelitySwitches(default_init=default))
        scorer = Scorer(cfg, train, torch.device("cpu"))
        scorer.reinit_kernel_net(0)
        scorer.reinit_thin(0, 0)
        w = torch.cat([m.weight.flatten() / (1 / m.weight[0].numel() ** 0.5) for m in scorer.kernel_net.modules()
                       if isinstance(m, torch.nn.Conv2d)])   # in units of 1/sqrt(fan_in)
        t = torch.cat([m.weight.flatten() * m.weight[0].numel() ** 0.5 for m in scorer.thin.modules()
                       if isinstance(m, torch.nn.Conv2d)])
        weights[default] = (w, t)
        inputs[default] = scorer.kernel_inputs(0, 0, 0).x
    # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) -> |w| <= 1, variance 1/3; kaiming normal: variance 2
    for w in weights[True]:
        assert w.abs().max() <= 1 and abs(float(w.var()) - 1 / 3) < 0.1
    for w in weights[False]:
        assert w.abs().max() > 1 and abs(float(w.var()) - 2) < 0.5
    assert torch.equal(inputs[True], inputs[False])   # nothing else: the same data


def test_cifar_normalisation_changes_only_the_kernel_inputs_constants(tiny_prepared):
    from metantk_nas.data.readers import CIFAR10_MEAN, CIFAR10_STD

    train = load_split(tiny_prepared, "train")
    got = {}
    for cifar in (True, False):
        for method in ("metantk", "tenas"):
            scorer = Scorer(replace(small_cfg(method), fidelity=FidelitySwitches(cifar_normalisation=cifar)), train,
                            torch.device("cpu"))
            inputs = scorer.kernel_inputs(0, 0, 0)
            x = inputs.x if method == "metantk" else inputs
            mean, std = (CIFAR10_MEAN, CIFAR10_STD) if cifar else (train.mean, train.std)
            raw = x * torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1) + torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
            got[cifar, method] = (raw, scorer.region_inputs(np.random.default_rng(0), torch.Generator().manual_seed(0)))
    for method in ("metantk", "tenas"):
        (raw_c, reg_c), (raw_d, reg_d) = got[True, method], got[False, method]
        assert torch.allclose(raw_c, raw_d, atol=1e-5)            # the same images, only normalised differently
        assert not torch.allclose(got[True, method][0], got[True, method][0] * 0 + raw_d.mean())
        assert all(torch.equal(a, b) for a, b in zip(reg_c, reg_d))   # the regions' inputs: unchanged


def test_nan_condition_is_the_value_of_a_nan_kernel(tiny_prepared, monkeypatch):
    train = load_split(tiny_prepared, "train")
    for method in ("metantk", "tenas"):
        cfg = replace(small_cfg(method), fidelity=FidelitySwitches(nan_condition=123.0))
        scorer = Scorer(cfg, train, torch.device("cpu"))
        inputs, head = scorer.kernel_inputs(0, 0, 0), scorer.new_head(0, 0, 0)
        mask = initial_mask(cfg.ops)
        finite = scorer.kernel_condition(mask, inputs, head)
        assert np.isfinite(finite) and finite != 123.0
        if method == "metantk":
            monkeypatch.setattr(scoring, "metantk", lambda *a, **k: torch.full((5, 5), float("nan")))
        else:
            monkeypatch.setattr(scorer, "ntk_kernel", lambda m, x: torch.full((6, 6), float("nan")))
        assert scorer.kernel_condition(mask, inputs, head) == 123.0
        monkeypatch.undo()


def test_a_five_and_an_eight_cell_search_of_one_seed_draw_separate_streams(tiny_prepared):
    """As separate runs of the original: its supernet's size changes every draw after it (linreg's too)."""
    train = load_split(tiny_prepared, "train")
    thin = {}
    for cells in (5, 8):
        scorer = Scorer(replace(small_cfg("linreg"), cells=cells), train, torch.device("cpu"))
        scorer.reinit_thin(0, 0)
        thin[cells] = torch.cat([p.flatten() for p in scorer.thin.parameters()])
    assert not torch.equal(thin[5], thin[8])


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


def test_metantk_task_batch_puts_all_queries_before_all_supports(tmp_path):
    """The MetaNTK kernel reads rows [0, n_query) as the tasks' queries and the rest as their supports (the
    original's order).  Images of one flat grey level each (level = image index) identify every row through its
    centre pixel, which no flip or 4-pixel crop moves off the image; with 3 queries and 1 shot per class
    (n_query != n_support) a swapped order or a mixed-up task shows."""
    from metantk_nas.data.prepared import PreparedSplit

    n_classes, per_class = 10, 20
    levels = np.arange(n_classes * per_class, dtype=np.uint8)      # 200 distinct grey levels
    images = np.broadcast_to(levels[:, None, None, None], (len(levels), 16, 16, 3)).copy()
    train = PreparedSplit(images, np.repeat(np.arange(n_classes), per_class), (0.5,) * 3, (0.25,) * 3)
    cfg = replace(small_cfg(), image_size=16, ways=5, shots=1, queries=3, tasks_per_batch=2, task_pool=20)
    scorer = Scorer(cfg, train, torch.device("cpu"))
    rng = np.random.default_rng(11)
    batch = scorer.task_batch(np.random.default_rng(11), torch.Generator().manual_seed(0))
    tasks = scorer.sampler.batch(rng.choice(cfg.task_pool, cfg.tasks_per_batch, replace=False))
    queries = np.concatenate([t.query for t in tasks])
    supports = np.concatenate([t.support for t in tasks])
    assert (batch.n_tasks, batch.n_query) == (2, 2 * 5 * 3) and len(batch.x) == 2 * 5 * (3 + 1)
    (mean, *_), (std, *_) = scorer.norm_consts        # the original's CIFAR constants by default
    centre = batch.x[:, 0, 8, 8].double() * std + mean               # un-normalise channel 0
    rows = np.rint(centre.numpy() * 255).astype(int)
    assert rows[:batch.n_query].tolist() == queries.tolist()
    assert rows[batch.n_query:].tolist() == supports.tolist()
    assert set(queries // per_class) == set(supports // per_class)   # the same tasks' classes
