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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from ..config import SearchConfig
from ..methods import method
from ..nas.genotype import CELL_TYPES, Genotype, edge_groups, from_mask, random_genotype
from ..nas.networks import full_mask
from ..nas.space import OP_NAMES
from ..preemption import Preempted, SignalFlag
from ..provenance import write_json_atomic
from ..ranking import dense_ranks, round_sig
from .scoring import Scorer

log = logging.getLogger(__name__)
GROUP_KEEP = 2
SHARED_KEY = 99_999  # key of the per-round shared origin batches


def rank_candidates(dk: list[float], dr: list[float], figures: int) -> tuple[list[int], list[int], list[int]]:
    """(rank_k, rank_r, processing order): the order is a stable sort by rank sum over the dK-sorted list."""
    rk = dense_ranks(dk, True, figures)
    rr = dense_ranks(dr, False, figures)
    by_k = sorted(range(len(dk)), key=lambda i: round_sig(dk[i], figures), reverse=True)
    order = sorted(by_k, key=lambda i: rk[i] + rr[i])
    return rk, rr, order


@dataclass
class SearchState:
    """Everything needed to resume: the mask, the finished rounds, and the scores of the candidates finished so
    far in the stage under way (``partial``), so a signalled search resumes after its last candidate."""

    mask: np.ndarray
    rounds: list[dict[str, Any]] = field(default_factory=list)
    group: list[dict[str, Any]] | None = None
    seconds: list[float] = field(default_factory=list)
    # the stage under way: {"stage": "round" | "group", "scores": [[dK, dR], ...], "seconds": float} and, for the
    # group stage, "start" (the mask at its start: the stale origin) and "records" (finished node groups)
    partial: dict[str, Any] | None = None
    resumes: list[str] = field(default_factory=list)   # where each resume started ("3 candidates of round 0")
    # networks per kernel pass (Scorer.pass_size; None: no kernels): the scores are reproducible for this pass size
    # only, so a state saved under another one is not resumed
    networks_per_pass: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"mask": self.mask.astype(int).tolist(), "rounds": self.rounds, "group": self.group,
                "seconds": self.seconds, "partial": self.partial, "resumes": self.resumes,
                "networks_per_pass": self.networks_per_pass}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "SearchState":
        return SearchState(np.array(d["mask"], dtype=bool), d["rounds"], d["group"], d.get("seconds", []),
                           d.get("partial"), list(d.get("resumes", [])), d.get("networks_per_pass"))


def initial_mask(ops: tuple[str, ...]) -> np.ndarray:
    """The full supernet restricted to the candidate ops ``ops`` (all seven by default)."""
    mask = full_mask()
    mask[:, :, [i for i, name in enumerate(OP_NAMES) if name not in ops]] = False
    return mask


def is_single_path(mask: np.ndarray) -> bool:
    return bool((mask.sum(-1) <= 1).all())


class PruningSearch:
    def __init__(self, cfg: SearchConfig, scorer: Scorer | None, progress: bool = True,
                 on_candidate: Callable[[], None] | None = None):
        """``on_candidate()`` is called after every scored candidate (``--stop-after`` signals the run from it)."""
        self.cfg, self.scorer, self.progress, self.on_candidate = cfg, scorer, progress, on_candidate
        self.method = method(cfg.method)   # what it scores (methods.REGISTRY)
        self._state: SearchState | None = None   # bound by run(): the state to checkpoint ...
        self._path: Path | None = None           # ... and where (None: no checkpoints, e.g. a round run alone)
        self._signals: SignalFlag | None = None
        self._last_save = self._clock = 0.0
        self._group_mask = np.zeros(0, dtype=bool)

    # -- scores of one candidate ------------------------------------------------------------------------------------
    def _shared(self, origin: np.ndarray, *key: int) -> list[Any] | None:
        """Per-repeat origin kernels shared by all candidates (only when fresh_batch_per_candidate is false)."""
        assert self.scorer is not None
        if self.method.kernel is None or self.cfg.fidelity.fresh_batch_per_candidate:
            return None
        return [self.scorer.shared_origin(origin, *key, SHARED_KEY, r) for r in range(self.cfg.repeats)]

    def _kernel_scores(self, work: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]],
                       shared: list[Any] | None) -> list[float]:
        """dK of each (origin_k, origin_r, cand, key): round-batched when the scorer can, else one by one."""
        assert self.scorer is not None
        if self.method.kernel is None:
            return [0.0] * len(work)  # the original's --only_lrs: every condition number is 1, so every dK is 0
        if self.scorer.batchable():
            return self.scorer.kernel_deltas([(o, c, key) for o, _, c, key in work], shared)
        return [float(np.mean([self.scorer.kernel_delta(o, c, *key, r, shared=shared[r] if shared else None)
                               for r in range(self.cfg.repeats)])) for o, _, c, key in work]

    def _region_score(self, origin_r: np.ndarray, cand: np.ndarray, key: tuple[int, ...]) -> float:
        assert self.scorer is not None
        self.scorer.reinit_thin(*key)
        return float(np.mean([self.scorer.region_delta(origin_r, cand, *key, r) for r in range(self.cfg.repeats)]))

    def _scores(self, origin_k: np.ndarray, origin_r: np.ndarray, cand: np.ndarray, key: tuple[int, ...],
                shared: list[Any] | None = None) -> tuple[float, float]:
        """(dK, dR) of one candidate."""
        return self._kernel_scores([(origin_k, origin_r, cand, key)], shared)[0], self._region_score(origin_r, cand, key)

    def networks_per_pass(self) -> int | None:
        """Networks per kernel pass (1: one by one); None when the method computes no kernel (linreg, random)."""
        if self.scorer is None or self.scorer.kernel_net is None:   # linreg and random build no kernel network
            return None
        return self.scorer.pass_size()

    def _chunk(self) -> int:
        """Candidates scored together: as many as one batched pass holds (1 when the scorer scores one by one).
        Fixed per config, so a resumed stage cuts its candidates into the same chunks."""
        assert self.scorer is not None
        if self.method.kernel is None or not self.scorer.batchable():
            return 1
        per_candidate = 2 if self.cfg.fidelity.fresh_batch_per_candidate else 1
        return max(1, self.scorer.pass_size() // per_candidate)

    # -- scores of many candidates, resumable -----------------------------------------------------------------------
    def _score_all(self, cands: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]],
                   shared: list[Any] | None, scores: list[list[float]], bar: Callable[[int], None]
                   ) -> tuple[list[float], list[float]]:
        """dK, dR of every candidate (origin_k, origin_r, cand, key); ``scores`` holds those already finished (a
        resumed stage) and grows by one per candidate.  Candidates go in chunks of :meth:`_chunk` (the kernels of
        a chunk in shared passes); a checkpoint comes after a chunk, at most every checkpoint_seconds, or after a
        signal, so a resumed stage starts at a chunk boundary and batches exactly as the uninterrupted one."""
        step = self._chunk()
        while len(scores) < len(cands):
            start = len(scores) - len(scores) % step
            chunk = cands[start:start + step]
            dks = self._kernel_scores(chunk, shared)
            for (_, origin_r, cand, key), dk in list(zip(chunk, dks))[len(scores) - start:]:
                scores.append([dk, self._region_score(origin_r, cand, key)])
                bar(1)
            self._tick(len(scores) < len(cands))
        return [d for d, _ in scores], [r for _, r in scores]

    def _tick(self, more: bool) -> None:
        """After a chunk of candidates: checkpoint if it is time (or a signal came), and stop after a signal."""
        if self._path is None or self._state is None:
            return
        now = time.perf_counter()
        hit = self._signals is not None and self._signals.hit is not None
        if hit or (more and now - self._last_save >= self.cfg.checkpoint_seconds):
            self._save(self._state, partial=True)   # (the last candidate of a stage: its record is written next)
            self._last_save = now
        if hit:
            raise Preempted(f"signal {self._signals.hit}: search checkpointed after {self._where()}; rerun to resume")

    # -- one round --------------------------------------------------------------------------------------------------
    def prune_round(self, mask: np.ndarray, rnd: int, bar: Callable[[int], None],
                    scores: list[list[float]] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        assert self.scorer is not None
        if self.scorer.kernel_net is not None:
            self.scorer.reinit_kernel_net(rnd)  # the original builds network_origin anew each round
        cands = [(c, e, o) for c in range(2) for e in range(mask.shape[1]) if mask[c, e].sum() > 1
                 for o in np.flatnonzero(mask[c, e])]
        work = []
        for k, (c, e, o) in enumerate(cands):
            cand = mask.copy()
            cand[c, e, o] = False
            work.append((mask, mask, cand, (rnd, k)))
        shared = self._shared(mask, rnd)
        dks, drs = self._score_all(work, shared, [] if scores is None else scores, bar)
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
    def prune_groups(self, mask: np.ndarray, bar: Callable[[int], None],
                     progress: dict[str, Any] | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """``progress`` (a resumed stage, updated in place): "start" (the stage's first mask), "records" (the node
        groups finished) and "scores" (the candidates finished in the group under way); ``mask`` is the mask
        after the finished groups."""
        assert self.scorer is not None
        rnd = 10_000  # key space of the group stage
        if self.scorer.kernel_net is not None:
            self.scorer.reinit_kernel_net(rnd)
        progress = {"start": mask.astype(int).tolist(), "records": [], "scores": []} if progress is None else progress
        stale_origin = np.array(progress["start"], dtype=bool)
        records = progress["records"]
        finished = {(r["cell"], r["node"]) for r in records}
        mask = mask.copy()
        for c in range(2):
            for g, (a, b) in enumerate(edge_groups()):
                if (CELL_TYPES[c], g) in finished:
                    continue
                edges = [e for e in range(a, b) if mask[c, e].any()]
                if len(edges) <= GROUP_KEEP:
                    continue
                origin_k = stale_origin if self.cfg.fidelity.stale_group_origin else mask
                work = []
                for e in edges:
                    cand = mask.copy()
                    cand[c, e] = False
                    work.append((origin_k, mask, cand, (rnd, c, g, e)))
                dks, drs = self._score_all(work, self._shared(origin_k, rnd, c, g), progress["scores"], bar)
                rk, rr, order = rank_candidates(dks, drs, self.cfg.precision)
                removed = [edges[i] for i in order[:-GROUP_KEEP]]
                for e in removed:
                    mask[c, e] = False
                records.append({"cell": CELL_TYPES[c], "node": g, "candidates": [
                    {"edge": int(e), "dK": dks[i], "dR": drs[i], "rank_K": rk[i], "rank_R": rr[i],
                     "rank_sum": rk[i] + rr[i]} for i, e in enumerate(edges)], "removed": [int(e) for e in removed]})
                progress["scores"] = []
                self._group_mask = mask
        return mask, records

    # -- the whole search -------------------------------------------------------------------------------------------
    def total_candidates(self, mask: np.ndarray) -> int:
        alive = int(mask[0, 0].sum())
        edges = mask.shape[0] * mask.shape[1]
        rounds = sum(edges * k for k in range(2, alive + 1))
        group = mask.shape[0] * sum(b - a for a, b in edge_groups() if b - a > GROUP_KEEP)
        return rounds + group

    def run(self, state_path: Path | None = None) -> tuple[Genotype, SearchState]:
        """The search, resumed from ``state_path`` when it holds a state.  With a state path, a checkpoint is
        written after every round and the group stage, and within them at most every checkpoint_seconds of
        candidates; SIGTERM/SIGUSR1 finish the current candidate, checkpoint and raise :class:`Preempted`."""
        if not self.method.pruned:
            g = random_genotype(self.cfg.seed, self.cfg.cells, self.cfg.ops)
            return g, SearchState(g.to_mask())
        fresh = SearchState(initial_mask(self.cfg.ops), networks_per_pass=self.networks_per_pass())
        state = _load_state(state_path, fresh) or fresh
        if state.rounds or state.partial:
            state.resumes.append(self._describe(state))
            log.info("resuming %s from %s", state.resumes[-1], state_path)
        total = self.total_candidates(initial_mask(self.cfg.ops))
        done = sum(len(r["candidates"]) for r in state.rounds) + sum(
            len(g["candidates"]) for g in (state.group or (state.partial or {}).get("records", [])))
        done += len((state.partial or {}).get("scores", []))
        with SignalFlag() as sig, tqdm(total=total, initial=done, desc=f"search {self.cfg.method}", unit="cand",
                                       disable=not self.progress, dynamic_ncols=True) as pbar:
            self._bind(state, state_path, sig)

            def advance(n: int) -> None:
                pbar.update(n)
                if self.on_candidate is not None:
                    self.on_candidate()
            while not is_single_path(state.mask):
                rnd = len(state.rounds)
                if not state.partial or state.partial["stage"] != "round":
                    state.partial = {"stage": "round", "scores": [], "seconds": 0.0}
                t0 = time.perf_counter() - state.partial["seconds"]
                self._clock = t0
                state.mask, record = self.prune_round(state.mask, rnd, advance, state.partial["scores"])
                state.rounds.append(record)
                state.seconds.append(round(time.perf_counter() - t0, 3))
                state.partial = None
                log.info("round %d: %d candidates, pruned %s; %.1fs", rnd, len(record["candidates"]),
                         ", ".join(f"{c}[{e}].{o}" for c, e, o in record["pruned"][:4]) + " ...", state.seconds[-1])
                self._save(state)
            if state.group is None:
                if not state.partial:
                    state.partial = {"stage": "group", "start": state.mask.astype(int).tolist(), "records": [],
                                     "scores": [], "seconds": 0.0, "mask": state.mask.astype(int).tolist()}
                t0 = time.perf_counter() - state.partial["seconds"]
                self._clock = t0
                self._group_mask = np.array(state.partial["mask"], dtype=bool)
                state.mask, state.group = self.prune_groups(self._group_mask, advance, state.partial)
                state.seconds.append(round(time.perf_counter() - t0, 3))
                state.partial = None
                log.info("edge groups: kept %d edges per node; %.1fs", GROUP_KEEP, state.seconds[-1])
                self._save(state)
        self._path = None
        return from_mask(state.mask), state

    def _bind(self, state: SearchState, path: Path | None, sig: SignalFlag) -> None:
        self._signals = sig
        self._last_save = time.perf_counter()
        self._state, self._path = state, path

    def _save(self, state: SearchState, partial: bool = False) -> None:
        if partial and state.partial is not None:
            state.partial["seconds"] = round(time.perf_counter() - self._clock, 3)
            if state.partial["stage"] == "group":
                state.partial["mask"] = self._group_mask.astype(int).tolist()
        _save_state(self._path, state)

    def _where(self) -> str:
        assert self._state is not None
        return self._describe(self._state)

    @staticmethod
    def _describe(state: SearchState) -> str:
        p = state.partial
        if p is None:
            return f"round {len(state.rounds)}" if state.group is None else "the group stage"
        if p["stage"] == "round":
            return f"{len(p['scores'])} candidates of round {len(state.rounds)}"
        return f"{len(p['records'])} node groups and {len(p['scores'])} candidates of the group stage"


def _load_state(path: Path | None, fresh: SearchState) -> SearchState | None:
    """The saved state, or None (a fresh start, logged as a warning naming the file) when there is none or it is
    unreadable: not JSON, not a search state, a mask of another supernet (search state of another config), or
    scores made with another number of networks per kernel pass (not reproducible by this search)."""
    if path is None or not path.exists():
        return None
    try:
        state = SearchState.from_json(json.loads(path.read_text()))
        if state.mask.shape != fresh.mask.shape:
            raise ValueError(f"mask of shape {state.mask.shape}, this search's is {fresh.mask.shape}")
        if state.networks_per_pass != fresh.networks_per_pass:
            raise ValueError(f"scored with {state.networks_per_pass} networks per kernel pass, this search uses "
                             f"{fresh.networks_per_pass}")
        return state
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: unreadable search state (%s: %s); starting the search from scratch", path,
                    type(e).__name__, str(e)[:120])
        return None


def _save_state(path: Path | None, state: SearchState) -> None:
    if path is not None:
        write_json_atomic(path, state.to_json())
