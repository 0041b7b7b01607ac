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

Every architecture of one (dataset, cells) is scored with the same draws (stream ``(0, cells)``, key
:data:`STUDY_KEY`): the same supernet weights, task batches, heads and region inputs, so that the scores differ
only by the architecture, as a search's origin and candidates do.
"""
from __future__ import annotations

import dataclasses
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
from .scoring import Scorer

log = logging.getLogger(__name__)
STUDY_KEY = 0x57D7   # the key of every study draw (a search's keys are its rounds, >= 0 and small)
KERNEL_SCORES = {"metantk_maml": ("metantk", "maml"), "metantk_anil": ("metantk", "anil"), "ntk": ("tenas", None)}


def _scorer(cfg: Mapping[str, Any], dataset: str, cells: int, method: str, inner: str | None,
            train: PreparedSplit, device: torch.device) -> Scorer:
    sc = search_config(cfg, dataset, method, cells, 0)
    if inner is not None:
        sc = dataclasses.replace(sc, kernel=study_kernel_spec(cfg, dataset, cells, inner))
    scorer = Scorer(sc, train, device)
    if scorer.kernel_net is not None:
        scorer.reinit_kernel_net(STUDY_KEY)
    scorer.reinit_thin(STUDY_KEY)
    return scorer


def kernel_conditions(scorer: Scorer, mask: np.ndarray) -> list[float]:
    """The condition number of the network ``mask`` in each repeat (its batch and head drawn from the repeat)."""
    return [scorer.kernel_condition(mask, scorer.kernel_inputs(STUDY_KEY, r), scorer.new_head(STUDY_KEY, r, 0))
            for r in range(scorer.cfg.repeats)]


def region_counts(scorer: Scorer, mask: np.ndarray) -> list[int]:
    return [scorer.regions(mask, scorer.keyed_region_inputs(STUDY_KEY, r)) for r in range(scorer.cfg.repeats)]


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
