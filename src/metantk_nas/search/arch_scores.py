"""The training-free scores of one architecture for the score-vs-accuracy study (docs/study.md).

The scores come from the search's own :class:`~metantk_nas.search.scoring.Scorer`, on the single-path network of
the genotype (its mask on the supernet), with the config's repeats:

* ``metantk_maml`` / ``metantk_anil``: the MetaNTK condition number with the MAML and with the ANIL inner kernel
  (the config's kernel for the (dataset, cells) for the score with its inner; ``study.kernels.<inner>`` for the
  other: ``metantk_nas.config.study_kernel_spec``);
* ``ntk``: the plain NTK condition number (what ``tenas`` scores);
* ``regions``: the number of linear regions of the thin network;
* ``params``: the parameter count of the evaluation network (``train.channels``), as Table 1 counts it.

A kernel score's value is the mean over the repeats whose condition number is valid (finite, at least 1: a
positive-definite kernel, and not the NaN sentinel ``search.fidelity.nan_condition``); the repeats left out are
counted in ``invalid``, and a score with no valid repeat is null (the study excludes that architecture from that
score's correlations and says how many).

Every architecture is scored as the search scores a candidate of one round (stream ``(0, cells)``, round
:data:`STUDY_KEY`, candidate :func:`architecture_key`): the round's supernet weights, shared by every architecture
as by a round's candidates; the candidate's own task batch and head where the search draws them per candidate
(``search.fidelity.fresh_batch_per_candidate``, ``fresh_head_per_network``), else the round's shared ones; the
thin network's weights and the region inputs of that candidate.  The key comes from the genotype's mask, so a
genotype gets the same draws wherever it appears (a cell found by two seeds has one set of scores).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Any, Mapping

import numpy as np
import torch

from ..config import search_config, study_kernel_spec
from ..data.prepared import PreparedSplit
from ..kernels.metantk import valid_condition
from ..nas.genotype import Genotype
from ..nas.networks import eval_net_parameters
from ..methods import KERNEL_METHODS
from .pruning import SHARED_KEY
from .scoring import Scorer

log = logging.getLogger(__name__)
STUDY_KEY = 0x57D7   # the study's "round" (a search's rounds are keys 0..13 and 10_000)
# each kernel score: the method whose search computes that kernel (methods.KERNEL_METHODS), and its inner kernel
KERNEL_SCORES = {"metantk_maml": (KERNEL_METHODS["MetaNTK"], "maml"), "metantk_anil": (KERNEL_METHODS["MetaNTK"], "anil"),
                 "ntk": (KERNEL_METHODS["NTK"], None)}


def _scorer(cfg: Mapping[str, Any], dataset: str, cells: int, method: str, inner: str | None,
            train: PreparedSplit, device: torch.device) -> Scorer:
    sc = search_config(cfg, dataset, method, cells, 0)
    if inner is not None:
        sc = dataclasses.replace(sc, kernel=study_kernel_spec(cfg, dataset, cells, inner))
    scorer = Scorer(sc, train, device)
    if scorer.kernel_net is not None:
        scorer.reinit_kernel_net(STUDY_KEY)   # one round's weights (the search draws them per round)
    return scorer


def architecture_key(mask: np.ndarray) -> int:
    """The candidate key of a genotype's mask: 31 bits of its SHA-256, above the search's own keys (its candidate
    indices and SHARED_KEY), so distinct genotypes draw independent batches, heads and thin weights."""
    digest = hashlib.sha256(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).digest()
    return SHARED_KEY + 1 + int.from_bytes(digest[:4], "big") % (2 ** 31 - SHARED_KEY - 1)


def kernel_conditions(scorer: Scorer, mask: np.ndarray) -> list[float]:
    """The condition number of the network ``mask`` in each repeat, with the batch and head the search draws for a
    candidate (:meth:`Scorer.candidate_draws`) of round :data:`STUDY_KEY`."""
    key, fid = architecture_key(mask), scorer.cfg.fidelity
    out = []
    for r in range(scorer.cfg.repeats):
        shared = None if fid.fresh_batch_per_candidate else scorer.origin_draws(STUDY_KEY, SHARED_KEY, r)
        inputs, _, head = scorer.candidate_draws(STUDY_KEY, key, r, shared=shared)
        out.append(scorer.kernel_condition(mask, inputs, head))
    return out


def region_counts(scorer: Scorer, mask: np.ndarray) -> list[int]:
    """The thin network's region count in each repeat, with the weights and inputs the search draws for a
    candidate of round :data:`STUDY_KEY`."""
    key = architecture_key(mask)
    scorer.reinit_thin(STUDY_KEY, key)
    return [scorer.regions(mask, scorer.keyed_region_inputs(STUDY_KEY, key, r)) for r in range(scorer.cfg.repeats)]


def score_architecture(cfg: Mapping[str, Any], dataset: str, cells: int, genotype: Genotype, train: PreparedSplit,
                       device: torch.device) -> dict[str, Any]:
    """{"scores": mean over the valid repeats per score (None: none valid), "repeats": the per-repeat values,
    "invalid": per score the repeats left out} (the timings are logged)."""
    mask = genotype.to_mask()
    per_repeat: dict[str, list[float]] = {}
    scorer = None
    for name, (method, inner) in KERNEL_SCORES.items():
        t0 = time.time()
        scorer = _scorer(cfg, dataset, cells, method, inner, train, device)
        per_repeat[name] = kernel_conditions(scorer, mask)
        log.info("%s: %s (%.2f s)", name, per_repeat[name], time.time() - t0)
    assert scorer is not None
    t0 = time.time()
    per_repeat["regions"] = [float(n) for n in region_counts(scorer, mask)]
    log.info("regions: %s (%.2f s)", per_repeat["regions"], time.time() - t0)
    sentinel = scorer.cfg.fidelity.nan_condition
    valid = {k: [x for x in v if valid_condition(x, sentinel)] for k, v in per_repeat.items() if k in KERNEL_SCORES}
    valid["regions"] = per_repeat["regions"]
    scores: dict[str, float | None] = {k: float(np.mean(v)) if v else None for k, v in valid.items()}
    invalid = {k: len(per_repeat[k]) - len(v) for k, v in valid.items()}
    if any(invalid.values()):
        log.warning("invalid condition numbers left out (of %d repeats): %s", scorer.cfg.repeats, invalid)
    scores["params"] = float(eval_net_parameters(genotype, cfg["train"]["channels"], cells, train.n_classes))
    return {"scores": scores, "repeats": per_repeat, "invalid": invalid}
