"""The pruning logic, proven independently of the scores: a stub scorer returns designed dK/dR per candidate and
every expectation below is derived by hand from the algorithm's definition (research §6.2-§6.3, TE-NAS
``prune_func_rank`` / ``prune_func_rank_group``), written out in the comments.

Definitions used:
* dK sorted descending by its 3-significant-figure key (stable), dR ascending; dense ranks from 0, where an item
  shares its predecessor's rank only if its (unrounded) value is exactly equal;
* rank sum = rank_K + rank_R; candidates sorted by rank sum, stably over the dK-sorted order;
* a round removes, on each edge, the first candidate of that edge in this order;
* the group stage removes all but the LAST two edges of a node's order (keeps the two largest rank sums); the
  kernel's origin is the mask of the stage's start when ``stale_group_origin`` (the original), the current mask
  otherwise; the region origin is always the current mask.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from metantk_nas.config import FidelitySwitches, KernelSpec, SearchConfig
from metantk_nas.nas.ops import OP_NAMES
from metantk_nas.search.pruning import PruningSearch

N, R = 0, 1   # cell types


def _cfg(**fidelity) -> SearchConfig:
    return SearchConfig(method="metantk", cells=5, seed=0, kernel=KernelSpec("maml", float("inf"), 1e-3),
                        repeats=1, precision=3, fidelity=FidelitySwitches(**fidelity))


class StubScorer:
    """Designed scores: ``dk(origin, cand)`` and ``dr(origin, cand)``; records every call."""

    kernel_net = object()   # the search has a kernel network (its re-initialisation is a no-op here)

    def __init__(self, dk, dr):
        self.dk, self.dr = dk, dr
        self.kernel_calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.region_calls: list[tuple[np.ndarray, np.ndarray]] = []

    def reinit_kernel_net(self, *key: int) -> None:
        pass

    def batchable(self) -> bool:   # one candidate at a time (the batched path's values: test_batched.py)
        return False

    def pass_size(self) -> int:
        return 1

    def reinit_thin(self, *key: int) -> None:
        pass

    def shared_origin(self, origin, *key):
        return None, None, 0.0

    def kernel_delta(self, origin, cand, *key, shared=None) -> float:
        self.kernel_calls.append((origin.copy(), cand.copy()))
        return self.dk(origin, cand)

    def region_delta(self, origin, cand, *key) -> float:
        self.region_calls.append((origin.copy(), cand.copy()))
        return self.dr(origin, cand)


def _removed_op(origin, cand):
    (c, e, o), = zip(*np.nonzero(origin & ~cand))
    return int(c), int(e), int(o)


def _round_mask() -> np.ndarray:
    """Two edges with several live ops: normal edge 0 {0, 1, 2} and reduce edge 4 {1, 3, 5}; one op elsewhere."""
    mask = np.zeros((2, 9, 7), dtype=bool)
    mask[:, :, 6] = True
    mask[N, 0] = False
    mask[N, 0, [0, 1, 2]] = True
    mask[R, 4] = False
    mask[R, 4, [1, 3, 5]] = True
    return mask


def test_a_round_removes_on_each_edge_the_op_first_in_rank_sum_order_with_ties_in_dk_order():
    # enumeration order (cell -> edge -> op): A0 A1 A2 B1 B3 B5  (A = normal edge 0, B = reduce edge 4)
    dk = {(N, 0, 0): 0.1, (N, 0, 1): 0.3, (N, 0, 2): 0.2, (R, 4, 1): 0.30004, (R, 4, 3): 0.05, (R, 4, 5): 0.2}
    dr = {(N, 0, 0): -0.1, (N, 0, 1): 0.2, (N, 0, 2): 0.0, (R, 4, 1): 0.1, (R, 4, 3): -0.2, (R, 4, 5): 0.0}
    # dK keys (3 s.f.) descending, stable: A1 (0.3), B1 (0.300 key), A2 (0.2), B5 (0.2), A0 (0.1), B3 (0.05)
    # dense ranks, exact equality: A1 0; B1 0.30004 != 0.3 -> 1; A2 2; B5 == A2 -> 2; A0 3; B3 4
    rank_k = {(N, 0, 0): 3, (N, 0, 1): 0, (N, 0, 2): 2, (R, 4, 1): 1, (R, 4, 3): 4, (R, 4, 5): 2}
    # dR ascending: B3 (-0.2) 0, A0 (-0.1) 1, A2 (0.0) 2, B5 (0.0) 2, B1 (0.1) 3, A1 (0.2) 4
    rank_r = {(N, 0, 0): 1, (N, 0, 1): 4, (N, 0, 2): 2, (R, 4, 1): 3, (R, 4, 3): 0, (R, 4, 5): 2}
    # every rank sum is 4, so the order is the dK order: A1 B1 A2 B5 A0 B3 -> remove A1 (op 1) and B1 (op 1),
    # although A0 comes first in enumeration order
    stub = StubScorer(lambda o, c: dk[_removed_op(o, c)], lambda o, c: dr[_removed_op(o, c)])
    mask = _round_mask()
    new, record = PruningSearch(_cfg(), stub, progress=False).prune_round(mask, 0, lambda n: None)
    expected = mask.copy()
    expected[N, 0, 1] = expected[R, 4, 1] = False
    assert np.array_equal(new, expected)
    assert record["pruned"] == [["normal", 0, "sep_conv_3x3"], ["reduce", 4, "sep_conv_3x3"]]   # our op 1
    got = {(("normal", "reduce").index(c["cell"]), c["edge"], _op_index(c["op"])): (c["rank_K"], c["rank_R"])
           for c in record["candidates"]}
    assert got == {k: (rank_k[k], rank_r[k]) for k in dk}
    # every candidate is the origin with exactly its op removed, on the same origin
    assert all(np.array_equal(o, mask) for o, _ in stub.kernel_calls + stub.region_calls)


def _op_index(name: str) -> int:
    from metantk_nas.nas.ops import OP_NAMES
    return OP_NAMES.index(name)


@pytest.mark.parametrize("dk,dr,removed", [
    # rank_K [0, 1, 2], rank_R [0, 1, 2], sums [0, 2, 4]: the smallest sum goes
    ([0.3, 0.2, 0.1], [0.0, 0.5, 0.6], 0),
    # rank_K [2, 1, 0], rank_R [2, 0, 1], sums [4, 1, 1]: op 1 and op 2 tie; dK order puts op 2 first
    ([0.1, 0.2, 0.3], [0.3, 0.1, 0.2], 2),
    # dK ties exactly: rank_K [0, 0, 1]; rank_R [1, 0, 2]; sums [1, 0, 3]: op 1
    ([0.5, 0.5, 0.1], [0.1, 0.0, 0.2], 1),
    # equal 3 s.f. keys (0.123), different values: stable key order keeps enumeration, ranks [0, 1, 2];
    # dR all equal (ranks 0): sums [0, 1, 2] -> op 0, although op 1's dK is larger
    ([0.12341, 0.12342, 0.01], [0.0, 0.0, 0.0], 0),
])
def test_one_edge_round(dk, dr, removed):
    mask = _round_mask()
    mask[R, 4] = False
    mask[R, 4, 6] = True            # only normal edge 0 {0, 1, 2} has candidates
    stub = StubScorer(lambda o, c: dk[_removed_op(o, c)[2]], lambda o, c: dr[_removed_op(o, c)[2]])
    new, record = PruningSearch(_cfg(), stub, progress=False).prune_round(mask, 0, lambda n: None)
    assert list(np.flatnonzero(mask[N, 0] & ~new[N, 0])) == [removed]
    assert np.array_equal(np.delete(new, 0, axis=1), np.delete(mask, 0, axis=1)) and (new[R] == mask[R]).all()


# -- the group stage -----------------------------------------------------------------------------------------------
W = {(N, 2): 0.125, (N, 3): 0.375, (N, 4): 0.25,                         # node 1 of the normal cell
     (N, 5): 0.5, (N, 6): 0.375, (N, 7): 0.25, (N, 8): 0.125,            # node 2
     (R, 2): 0.125, (R, 3): 0.375, (R, 4): 0.25,
     (R, 5): 0.5, (R, 6): 0.375, (R, 7): 0.25, (R, 8): 0.125}
DR = {2: 0.125, 3: 0.0, 4: 0.25, 5: 0.125, 6: 0.0, 7: 0.375, 8: 0.25}


def _dead_edges(mask):
    return {(c, e) for c in range(2) for e in range(9) if not mask[c, e].any()}


def _group_dk(origin, cand):
    """Sum of W over the edges dead in the candidate (edges removed earlier add the same constant to every
    candidate of a node, so they cannot change its ranks: the weights are dyadic, the sums exact).  Reduce-cell
    candidates flip sign when the kernel's origin no longer has normal edge 3: that is how the test sees which
    origin the search used."""
    dead = _dead_edges(cand)
    value = sum(W[k] for k in dead)
    if any(c == R for c, _ in dead - _dead_edges(origin)) and not origin[N, 3].any():
        value = -value
    return value


def _group_dr(origin, cand):
    (c, e), = _dead_edges(cand) - _dead_edges(origin)   # the region origin is the current mask: one edge differs
    return DR[e]


@pytest.mark.parametrize("stale", [True, False])
def test_group_stage_keeps_the_two_edges_with_the_largest_rank_sums(stale):
    # normal node 1 (edges 2, 3, 4): dK 0.125, 0.375, 0.25 -> rank_K e3 0, e4 1, e2 2; dR 0.125, 0, 0.25 ->
    #   rank_R e3 0, e2 1, e4 2; sums e2 3, e3 0, e4 3; order (over dK order e3 e4 e2) e3 e4 e2: remove e3.
    # normal node 2 (5..8): rank_K 0 1 2 3; dR .125 0 .375 .25 -> rank_R e6 0, e5 1, e8 2, e7 3;
    #   sums e5 1, e6 1, e7 5, e8 5; order e5 e6 e7 e8: remove e5, e6, keep e7, e8.
    # reduce node 1, stale origin (normal edge 3 still alive in it): as normal node 1 -> remove e3.
    #   current origin (normal e3 removed): dK negated (plus a constant) -> dK order e2 e4 e3, rank_K e2 0, e4 1,
    #   e3 2; rank_R e3 0, e2 1, e4 2; sums e2 1, e3 2, e4 3; order e2 e3 e4: remove e2, keep e3, e4.
    # reduce node 2: the sign flips every candidate alike when not stale; stale: as normal node 2.
    #   not stale: dK order e8 e7 e6 e5, rank_K e8 0, e7 1, e6 2, e5 3; rank_R as above; sums e5 4, e6 2, e7 4,
    #   e8 2; order over e8 e7 e6 e5: e8 e6 e7 e5 -> remove e8, e6; keep e7, e5.
    mask = np.zeros((2, 9, 7), dtype=bool)
    mask[:, :, 3] = True                                  # single path: one op on every edge
    stub = StubScorer(_group_dk, _group_dr)
    new, records = PruningSearch(_cfg(stale_group_origin=stale), stub, progress=False).prune_groups(mask, lambda n: None)
    kept = {(c, e) for c in range(2) for e in range(9) if new[c, e].any()}
    expected_reduce = {0, 1, 2, 4, 7, 8} if stale else {0, 1, 3, 4, 5, 7}
    assert kept == {(N, e) for e in (0, 1, 2, 4, 7, 8)} | {(R, e) for e in expected_reduce}
    assert [(r["cell"], r["node"], r["removed"]) for r in records] == [
        ("normal", 1, [3]), ("normal", 2, [5, 6]),
        ("reduce", 1, [3] if stale else [2]), ("reduce", 2, [5, 6] if stale else [8, 6])]
    # the kernel's origin: the stage's start (stale) or the current mask; the regions' origin: always current
    def reduce_stage(calls):   # only the reduce cell's candidates have a dead reduce edge
        return [o for o, c in calls if any(cell == R for cell, _ in _dead_edges(c))]
    assert len(reduce_stage(stub.kernel_calls)) == 7 and all(o[N, 3].any() == stale for o in reduce_stage(stub.kernel_calls))
    assert len(reduce_stage(stub.region_calls)) == 7 and not any(o[N, 3].any() for o in reduce_stage(stub.region_calls))


def test_node_zero_keeps_both_inputs_and_a_node_with_two_live_edges_is_not_scored():
    mask = np.zeros((2, 9, 7), dtype=bool)
    mask[:, :, 0] = True
    mask[N, 2] = False                          # normal node 1 already has only two live edges
    stub = StubScorer(_group_dk, lambda o, c: 0.0)
    new, records = PruningSearch(_cfg(), stub, progress=False).prune_groups(mask, lambda n: None)
    assert [(r["cell"], r["node"]) for r in records] == [("normal", 2), ("reduce", 1), ("reduce", 2)]
    assert new[:, 0:2].any(-1).all() and new[N, 3:5].any(-1).all()
    assert len(stub.kernel_calls) == 4 + 3 + 4


def test_a_search_with_a_stub_scorer_ends_in_a_valid_genotype_in_six_rounds():
    from metantk_nas.nas.ops import OP_NAMES

    cfg = replace(_cfg(), ops=OP_NAMES)
    # designed: the op with the highest index on each edge is always the most prunable
    def top_op(o, c):   # the highest op index removed (in the group stage a stale origin differs by more)
        return float(np.nonzero(o & ~c)[2].max())
    stub = StubScorer(top_op, lambda o, c: -top_op(o, c))
    genotype, state = PruningSearch(cfg, stub, progress=False).run()
    assert [len(r["candidates"]) for r in state.rounds] == [18 * k for k in (7, 6, 5, 4, 3, 2)]
    for k, rnd in enumerate(state.rounds):   # round k removes op 6 - k everywhere
        assert {p[2] for p in rnd["pruned"]} == {OP_NAMES[6 - k]} and len(rnd["pruned"]) == 18
    assert {op for node in genotype.normal + genotype.reduce for op, _ in node} == {OP_NAMES[0]}


# -- checkpoints and resumes, with the stub scorer (the real scorer's: test_search.py) ------------------------------
THREE_OPS = ("max_pool_3x3", "conv_3x3", "skip_connect")


def _hashed_dk(o, c) -> float:
    """A designed dK that differs between candidates: the removed ops' flat positions, modulo 7."""
    return float(np.flatnonzero((o & ~c).ravel()).sum() % 7)


def test_total_candidates_by_hand():
    """18 edges x (k + (k-1) + ... + 2) op removals for k ops, then per cell 3 + 4 edges of nodes 1 and 2 (node
    0's two edges are never scored): 7 ops 18 x 27 + 14 = 500, 3 ops 18 x 5 + 14 = 104, 2 ops 36 + 14 = 50."""
    from metantk_nas.search.pruning import initial_mask

    search = PruningSearch(_cfg(), StubScorer(_hashed_dk, lambda o, c: 0.0), progress=False)
    for ops, total in ((OP_NAMES, 500), (THREE_OPS, 104), (THREE_OPS[:2], 50)):
        assert search.total_candidates(initial_mask(ops)) == total
    stub = StubScorer(_hashed_dk, lambda o, c: 0.0)
    PruningSearch(replace(_cfg(), ops=THREE_OPS), stub, progress=False).run()
    assert len(stub.kernel_calls) == len(stub.region_calls) == 104


@pytest.mark.parametrize("at,where", [(5, "5 candidates of round 0"), (54 + 4, "4 candidates of round 1"),
                                      (90 + 3, "0 node groups and 3 candidates of the group stage"),
                                      (90 + 5, "1 node groups and 2 candidates of the group stage")])
def test_a_signalled_search_saves_what_it_finished_and_resumes_with_the_rest(tmp_path, at, where):
    """3 ops: round 0 scores 54 candidates, round 1 36, the group stage 14 (node 1's 3 edges, then node 2's 4, per
    cell).  A SIGUSR1 during candidate ``at`` lets it finish, saves it and raises Preempted; the rerun scores
    the 104 - ``at`` others only and ends where the uninterrupted search ends."""
    import os
    import signal

    from metantk_nas.preemption import Preempted

    cfg = replace(_cfg(), ops=THREE_OPS, checkpoint_seconds=3600)
    ref_genotype, ref = PruningSearch(cfg, StubScorer(_hashed_dk, _hashed_dk), progress=False).run()
    calls = [0]

    def signalling(o, c):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return _hashed_dk(o, c)

    path = tmp_path / "search_state.json"
    with pytest.raises(Preempted, match=f"checkpointed after {where}; rerun to resume"):
        PruningSearch(cfg, StubScorer(signalling, _hashed_dk), progress=False).run(path)
    stub = StubScorer(_hashed_dk, _hashed_dk)
    genotype, state = PruningSearch(cfg, stub, progress=False).run(path)
    assert len(stub.kernel_calls) == len(stub.region_calls) == 104 - at
    assert state.resumes == [where] and state.partial is None
    assert genotype == ref_genotype and state.rounds == ref.rounds and state.group == ref.group
    assert (state.mask == ref.mask).all()


@pytest.mark.parametrize("saved,reason", [({"mask": np.ones((2, 14, 7), int).tolist()}, "mask of shape (2, 14, 7)"),
                                          ({"networks_per_pass": 4}, "scored with 4 networks per kernel pass")])
def test_a_state_of_another_supernet_or_pass_size_is_a_logged_fresh_start(tmp_path, caplog, saved, reason):
    import json

    from metantk_nas.search.pruning import SearchState, initial_mask

    path = tmp_path / "search_state.json"
    state = SearchState(initial_mask(THREE_OPS), networks_per_pass=1).to_json()
    path.write_text(json.dumps({**state, "rounds": [{"round": 0}], **saved}))
    stub = StubScorer(_hashed_dk, _hashed_dk)
    _, out = PruningSearch(replace(_cfg(), ops=THREE_OPS), stub, progress=False).run(path)
    assert len(stub.kernel_calls) == 104 and out.resumes == []
    assert f"unreadable search state (ValueError: {reason}" in caplog.text and str(path) in caplog.text


# -- what the search asks its scorer for: keys, shared origins, chunks (a recording stub) ---------------------------
TWO_OPS = THREE_OPS[:2]


class RecordingStub(StubScorer):
    """Records every call with its keys; the shared origin of (key...) is the tuple ("shared", key...); masks must
    reach the scorer as booleans."""

    def __init__(self, dk, dr, batchable=False, pass_size=1, kernel_net=True):
        super().__init__(dk, dr)
        self.kernel_net = object() if kernel_net else None
        self._batchable, self._pass = batchable, pass_size
        self.calls: list[tuple] = []

    def reinit_kernel_net(self, *key):
        self.calls.append(("reinit_kernel_net", key))

    def reinit_thin(self, *key):
        self.calls.append(("reinit_thin", key))

    def batchable(self):
        return self._batchable

    def pass_size(self):
        return self._pass

    def shared_origin(self, origin, *key):
        assert origin.dtype == bool
        self.calls.append(("shared_origin", key))
        return ("shared",) + key

    def kernel_delta(self, origin, cand, *key, shared=None):
        assert origin.dtype == bool and cand.dtype == bool
        self.calls.append(("kernel_delta", key, shared))
        return super().kernel_delta(origin, cand)

    def kernel_deltas(self, work, shared):
        self.calls.append(("kernel_deltas", [key for _, _, key in work], shared))
        return [self.dk(o, c) for o, c, _ in work]

    def region_delta(self, origin, cand, *key):
        self.calls.append(("region_delta", key))
        return super().region_delta(origin, cand)


def test_every_candidate_gets_its_keys_and_the_stages_shared_origins():
    """2 ops, 2 repeats, one batch per repeat per stage (fresh_batch_per_candidate false): round 0 re-initialises the
    kernel network with key (0,), draws the shared origins (0, SHARED_KEY, r) and scores candidate k with keys
    (0, k, r) against them; the group stage uses key space 10000: network (10000,), shared origins (10000, c, g,
    SHARED_KEY, r) per node group, candidates (10000, c, g, e, r); the thin network is re-drawn per candidate."""
    from metantk_nas.search.pruning import SHARED_KEY

    cfg = replace(_cfg(fresh_batch_per_candidate=False), ops=TWO_OPS, repeats=2)
    stub = RecordingStub(_hashed_dk, _hashed_dk)
    PruningSearch(cfg, stub, progress=False).run()
    round0 = [("reinit_kernel_net", (0,))] + [("shared_origin", (0, SHARED_KEY, r)) for r in (0, 1)]
    for k in range(36):
        round0 += [("kernel_delta", (0, k, r), ("shared", 0, SHARED_KEY, r)) for r in (0, 1)]
        round0 += [("reinit_thin", (0, k))] + [("region_delta", (0, k, r)) for r in (0, 1)]
    group = [("reinit_kernel_net", (10_000,))]
    for c in (0, 1):
        for g, edges in ((1, range(2, 5)), (2, range(5, 9))):
            group += [("shared_origin", (10_000, c, g, SHARED_KEY, r)) for r in (0, 1)]
            for e in edges:
                group += [("kernel_delta", (10_000, c, g, e, r), ("shared", 10_000, c, g, SHARED_KEY, r))
                          for r in (0, 1)]
                group += [("reinit_thin", (10_000, c, g, e))] + [("region_delta", (10_000, c, g, e, r)) for r in (0, 1)]
    assert stub.calls == round0 + group
    # a fresh batch per candidate (the original): nothing shared, every candidate's repeats draw their own
    stub = RecordingStub(_hashed_dk, _hashed_dk)
    PruningSearch(replace(cfg, fidelity=FidelitySwitches(fresh_batch_per_candidate=True)), stub, progress=False).run()
    assert not [c for c in stub.calls if c[0] == "shared_origin"]
    assert {c[2] for c in stub.calls if c[0] == "kernel_delta"} == {None}


@pytest.mark.parametrize("fresh,pass_size,chunk", [(True, 5, 2), (False, 5, 5), (True, 1, 1)])
def test_batched_candidates_go_to_the_scorer_in_chunks_of_one_pass(fresh, pass_size, chunk):
    """A batchable scorer gets a stage's candidates in chunks of pass_size // 2 networks (origin and candidate
    each draw a batch) or pass_size // 1 (one shared batch per repeat), at least 1; round 0's 36, then each node
    group's 3 or 4 edges, each group cut on its own."""
    cfg = replace(_cfg(fresh_batch_per_candidate=fresh), ops=TWO_OPS)
    stub = RecordingStub(_hashed_dk, _hashed_dk, batchable=True, pass_size=pass_size)
    search = PruningSearch(cfg, stub, progress=False)
    assert search.networks_per_pass() == pass_size
    search.run()
    sizes = [len(keys) for name, keys, _ in (c for c in stub.calls if c[0] == "kernel_deltas")]

    def cut(n):
        return [min(chunk, n - i) for i in range(0, n, chunk)]
    assert sizes == cut(36) + (cut(3) + cut(4)) * 2
    keys = [k for name, ks, _ in (c for c in stub.calls if c[0] == "kernel_deltas") for k in ks]
    assert keys[:36] == [(0, k) for k in range(36)] and keys[36:39] == [(10_000, 0, 1, e) for e in (2, 3, 4)]


def test_linreg_and_random_compute_no_kernel():
    """linreg: every dK is 0 (the original's --only_lrs: every condition number 1), the scorer is never asked for
    one, and no network per pass is reported (nor for random, which has no scorer). random: the seed's random
    cell over the configured ops, with its mask as the state."""
    from metantk_nas.nas.genotype import random_genotype

    cfg = replace(_cfg(), method="linreg", kernel=None, ops=TWO_OPS)
    stub = RecordingStub(_hashed_dk, _hashed_dk, batchable=True, pass_size=4, kernel_net=False)
    search = PruningSearch(cfg, stub, progress=False)
    assert search.networks_per_pass() is None
    _, state = search.run()
    assert {c["dK"] for r in state.rounds for c in r["candidates"]} == {0.0}
    assert {c["dK"] for g in state.group for c in g["candidates"]} == {0.0}
    assert not [c for c in stub.calls if c[0] in ("kernel_delta", "kernel_deltas", "shared_origin")]
    ops = ("sep_conv_3x3", "avg_pool_3x3")
    rnd = replace(_cfg(), method="random", kernel=None, ops=ops, seed=7)
    genotype, state = PruningSearch(rnd, None, progress=False).run()
    assert PruningSearch(rnd, None).networks_per_pass() is None
    assert genotype == random_genotype(7, 5, ops) and (state.mask == genotype.to_mask()).all()
    assert {op for node in genotype.normal + genotype.reduce for op, _ in node} <= set(ops)


def test_records_logs_and_progress_of_a_search(tmp_path, caplog, capsys):
    """The log lines name each stage's result and time; every candidate of the group stage is recorded with its
    edge, scores and ranks (rank_sum = rank_K + rank_R); the state file names its seconds; the progress bar counts
    all 50 candidates, and a resumed run starts it at what was done."""
    import json
    import logging
    import os
    import signal

    from metantk_nas.preemption import Preempted

    cfg = replace(_cfg(), ops=TWO_OPS, checkpoint_seconds=3600)
    calls = [0]

    def signalling(o, c):
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGUSR1)
        return _hashed_dk(o, c)

    path = tmp_path / "search_state.json"
    with pytest.raises(Preempted):
        PruningSearch(cfg, StubScorer(signalling, _hashed_dk), progress=True).run(path)
    saved = json.loads(path.read_text())
    assert set(saved) >= {"mask", "rounds", "group", "seconds", "partial", "resumes"}
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="metantk_nas.search.pruning"):
        _, state = PruningSearch(cfg, StubScorer(_hashed_dk, _hashed_dk), progress=True).run(path)
    bar = capsys.readouterr().err
    assert " 5/50 " in bar and " 50/50 " in bar
    pruned = ", ".join(f"{c}[{e}].{o}" for c, e, o in state.rounds[0]["pruned"][:4])
    assert f"resuming 5 candidates of round 0 from {path}" in caplog.messages
    assert f"round 0: 36 candidates, pruned {pruned} ...; {state.seconds[0]:.1f}s" in caplog.messages
    assert f"edge groups: kept 2 edges per node; {state.seconds[1]:.1f}s" in caplog.messages
    for g in state.group:
        assert [c["edge"] for c in g["candidates"]] == list(range(2, 5) if g["node"] == 1 else range(5, 9))
        for c in g["candidates"]:
            assert set(c) == {"edge", "dK", "dR", "rank_K", "rank_R", "rank_sum"}
            assert c["rank_sum"] == c["rank_K"] + c["rank_R"]


def test_with_checkpoint_seconds_zero_the_state_is_saved_after_every_candidate(tmp_path):
    """checkpoint_seconds 0: before candidate k (k >= 2) is scored, the state file holds the k - 1 before it."""
    import json

    path = tmp_path / "search_state.json"
    seen = []

    def reading(o, c):
        if path.exists():
            partial = json.loads(path.read_text())["partial"]
            seen.append(len(partial["scores"]) if partial and partial["stage"] == "round" else None)
        return _hashed_dk(o, c)

    cfg = replace(_cfg(), ops=TWO_OPS, checkpoint_seconds=0)
    PruningSearch(cfg, StubScorer(reading, _hashed_dk), progress=False).run(path)
    assert seen[:35] == list(range(1, 36))   # the first candidate finds no file yet


def test_describe_names_where_a_search_stands():
    from metantk_nas.search.pruning import SearchState, initial_mask

    s = SearchState(initial_mask(TWO_OPS))
    assert PruningSearch._describe(s) == "round 0"
    s.rounds = [{}]
    assert PruningSearch._describe(s) == "round 1"
    s.group = []
    assert PruningSearch._describe(s) == "the group stage"
    s.partial = {"stage": "group", "records": [{}], "scores": [1, 2]}
    assert PruningSearch._describe(s) == "1 node groups and 2 candidates of the group stage"
