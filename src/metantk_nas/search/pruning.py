"""The pruning search (paper Algorithm 1; research/metantk-nas-original.md §6).

Round k: every live op o on every edge with more than one live op is a candidate (the supernet without o).  Its
scores are the mean over repeats of the relative changes dK = round((K_origin - K_cand)/K_origin, 3) of the
condition number and dR of the number of linear regions.  Candidates are dense-ranked by dK descending (sort key:
3 significant figures; ties: exact equality) and by dR ascending; the op with the smallest rank sum on each edge is
removed (stable sorts: ties keep the dK order, then the enumeration order cell type -> edge -> op).  After 6
rounds every edge has one op; then for each node with more than 2 incoming edges the 2 edges whose removal hurts
most (largest rank sums) are kept.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from ..config import SearchConfig
from ..nas.genotype import CELL_TYPES, Genotype, edge_groups, from_mask, random_genotype
from ..nas.networks import full_mask
from ..nas.ops import OP_NAMES
from ..provenance import write_json_atomic
from .scoring import Scorer

log = logging.getLogger(__name__)
GROUP_KEEP = 2
SHARED_KEY = 99_999  # key of the per-round shared origin batches


def round_sig(x: float, figures: int) -> float:
    """Round to significant figures (TE-NAS's ``round_to``), NaN-safe."""
    if not math.isfinite(x) or x == 0:
        return 0.0
    power = math.floor(math.log10(abs(x) + 1e-8)) + 1
    return math.copysign(round(abs(x) * 10 ** (-power), figures) * 10 ** power, x)


def dense_ranks(values: list[float], descending: bool, figures: int) -> list[int]:
    """Dense ranks (0 = most prunable) after a stable sort by the significant-figure key; ties need exact equality."""
    order = sorted(range(len(values)), key=lambda i: round_sig(values[i], figures), reverse=descending)
    ranks = [0] * len(values)
    prev, rank = None, -1
    for i in order:
        if prev is None or values[i] != prev:
            rank += 1
        ranks[i] = rank
        prev = values[i]
    return ranks


def rank_candidates(dk: list[float], dr: list[float], figures: int) -> tuple[list[int], list[int], list[int]]:
    """(rank_k, rank_r, processing order): the order is a stable sort by rank sum over the dK-sorted list."""
    rk = dense_ranks(dk, True, figures)
    rr = dense_ranks(dr, False, figures)
    by_k = sorted(range(len(dk)), key=lambda i: round_sig(dk[i], figures), reverse=True)
    order = sorted(by_k, key=lambda i: rk[i] + rr[i])
    return rk, rr, order


@dataclass
class SearchState:
    """Everything needed to resume: the mask and the finished rounds (deterministic per round)."""

    mask: np.ndarray
    rounds: list[dict[str, Any]] = field(default_factory=list)
    group: list[dict[str, Any]] | None = None
    seconds: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"mask": self.mask.astype(int).tolist(), "rounds": self.rounds, "group": self.group,
                "seconds": self.seconds}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "SearchState":
        return SearchState(np.array(d["mask"], dtype=bool), d["rounds"], d["group"], d.get("seconds", []))


def initial_mask(ops: tuple[str, ...]) -> np.ndarray:
    """The full supernet restricted to the candidate ops ``ops`` (all seven by default)."""
    mask = full_mask()
    mask[:, :, [i for i, name in enumerate(OP_NAMES) if name not in ops]] = False
    return mask


def is_single_path(mask: np.ndarray) -> bool:
    return bool((mask.sum(-1) <= 1).all())


class PruningSearch:
    def __init__(self, cfg: SearchConfig, scorer: Scorer | None, progress: bool = True):
        self.cfg, self.scorer, self.progress = cfg, scorer, progress

    # -- scores of one candidate ------------------------------------------------------------------------------------
    def _shared(self, origin: np.ndarray, *key: int) -> list[Any] | None:
        """Per-repeat origin kernels shared by all candidates (only when fresh_batch_per_candidate is false)."""
        assert self.scorer is not None
        if self.cfg.method == "linreg" or self.cfg.fidelity.fresh_batch_per_candidate:
            return None
        return [self.scorer.shared_origin(origin, *key, SHARED_KEY, r) for r in range(self.cfg.repeats)]

    def _scores(self, origin_k: np.ndarray, origin_r: np.ndarray, cand: np.ndarray, key: tuple[int, ...],
                shared: list[Any] | None = None) -> tuple[float, float]:
        assert self.scorer is not None
        reps = self.cfg.repeats
        if self.cfg.method == "linreg":
            dk = 0.0  # the original's --only_lrs: every condition number is 1, so every dK is 0
        else:
            dk = float(np.mean([self.scorer.kernel_delta(origin_k, cand, *key, r, shared=shared[r] if shared else None)
                                for r in range(reps)]))
        self.scorer.reinit_thin(*key)
        dr = float(np.mean([self.scorer.region_delta(origin_r, cand, *key, r) for r in range(reps)]))
        return dk, dr

    # -- one round --------------------------------------------------------------------------------------------------
    def prune_round(self, mask: np.ndarray, rnd: int, bar: Callable[[int], None]) -> tuple[np.ndarray, dict[str, Any]]:
        assert self.scorer is not None
        if self.scorer.kernel_net is not None:
            self.scorer.reinit_kernel_net(rnd)  # the original builds network_origin anew each round
        cands = [(c, e, o) for c in range(2) for e in range(mask.shape[1]) if mask[c, e].sum() > 1
                 for o in np.flatnonzero(mask[c, e])]
        dks, drs = [], []
        shared = self._shared(mask, rnd)
        for k, (c, e, o) in enumerate(cands):
            cand = mask.copy()
            cand[c, e, o] = False
            dk, dr = self._scores(mask, mask, cand, (rnd, k), shared)
            dks.append(dk)
            drs.append(dr)
            bar(1)
        rk, rr, order = rank_candidates(dks, drs, self.cfg.precision)
        new = mask.copy()
        done: set[tuple[int, int]] = set()
        pruned = []
        for i in order:
            c, e, o = cands[i]
            if (c, e) not in done:
                done.add((c, e))
                new[c, e, o] = False
                pruned.append([CELL_TYPES[c], int(e), OP_NAMES[o]])
        record = {"round": rnd, "candidates": [
            {"cell": CELL_TYPES[c], "edge": int(e), "op": OP_NAMES[o], "dK": dks[i], "dR": drs[i],
             "rank_K": rk[i], "rank_R": rr[i], "rank_sum": rk[i] + rr[i]} for i, (c, e, o) in enumerate(cands)],
            "pruned": pruned}
        return new, record

    # -- keep 2 incoming edges per node -----------------------------------------------------------------------------
    def prune_groups(self, mask: np.ndarray, bar: Callable[[int], None]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        assert self.scorer is not None
        rnd = 10_000  # key space of the group stage
        if self.scorer.kernel_net is not None:
            self.scorer.reinit_kernel_net(rnd)
        stale_origin = mask.copy()
        records = []
        mask = mask.copy()
        for c in range(2):
            for g, (a, b) in enumerate(edge_groups()):
                edges = [e for e in range(a, b) if mask[c, e].any()]
                if len(edges) <= GROUP_KEEP:
                    continue
                origin_k = stale_origin if self.cfg.fidelity.stale_group_origin else mask
                shared = self._shared(origin_k, rnd, c, g)
                dks, drs = [], []
                for e in edges:
                    cand = mask.copy()
                    cand[c, e] = False
                    dk, dr = self._scores(origin_k, mask, cand, (rnd, c, g, e), shared)
                    dks.append(dk)
                    drs.append(dr)
                    bar(1)
                rk, rr, order = rank_candidates(dks, drs, self.cfg.precision)
                removed = [edges[i] for i in order[:-GROUP_KEEP]]
                for e in removed:
                    mask[c, e] = False
                records.append({"cell": CELL_TYPES[c], "node": g, "candidates": [
                    {"edge": int(e), "dK": dks[i], "dR": drs[i], "rank_K": rk[i], "rank_R": rr[i],
                     "rank_sum": rk[i] + rr[i]} for i, e in enumerate(edges)], "removed": [int(e) for e in removed]})
        return mask, records

    # -- the whole search -------------------------------------------------------------------------------------------
    def total_candidates(self, mask: np.ndarray) -> int:
        alive = int(mask[0, 0].sum())
        edges = mask.shape[0] * mask.shape[1]
        rounds = sum(edges * k for k in range(2, alive + 1))
        group = mask.shape[0] * sum(b - a for a, b in edge_groups() if b - a > GROUP_KEEP)
        return rounds + group

    def run(self, state_path: Path | None = None) -> tuple[Genotype, SearchState]:
        if self.cfg.method == "random":
            g = random_genotype(self.cfg.seed, self.cfg.cells)
            return g, SearchState(g.to_mask())
        state = _load_state(state_path) or SearchState(initial_mask(self.cfg.ops))
        if state.rounds:
            log.info("resuming after round %d from %s", len(state.rounds), state_path)
        total = self.total_candidates(initial_mask(self.cfg.ops))
        done = sum(len(r["candidates"]) for r in state.rounds)
        with tqdm(total=total, initial=done, desc=f"search {self.cfg.method}", unit="cand",
                  disable=not self.progress, dynamic_ncols=True) as pbar:
            while not is_single_path(state.mask):
                rnd = len(state.rounds)
                t0 = time.perf_counter()
                state.mask, record = self.prune_round(state.mask, rnd, pbar.update)
                state.rounds.append(record)
                state.seconds.append(round(time.perf_counter() - t0, 3))
                log.info("round %d: %d candidates, pruned %s; %.1fs", rnd, len(record["candidates"]),
                         ", ".join(f"{c}[{e}].{o}" for c, e, o in record["pruned"][:4]) + " ...", state.seconds[-1])
                _save_state(state_path, state)
            if state.group is None:
                t0 = time.perf_counter()
                state.mask, state.group = self.prune_groups(state.mask, pbar.update)
                state.seconds.append(round(time.perf_counter() - t0, 3))
                log.info("edge groups: kept %d edges per node; %.1fs", GROUP_KEEP, state.seconds[-1])
                _save_state(state_path, state)
        return from_mask(state.mask), state


def _load_state(path: Path | None) -> SearchState | None:
    if path is None or not path.exists():
        return None
    try:
        return SearchState.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        log.warning("%s: unreadable search state; starting from scratch", path)
        return None


def _save_state(path: Path | None, state: SearchState) -> None:
    if path is not None:
        write_json_atomic(path, state.to_json())
