#!/usr/bin/env python
"""Benchmark the whole few-shot evaluation at paper size, ours against the original's per-episode loop, in one run:
the same network (EvalNet of the published MetaNAS cell, C=48, 5 cells), the same test images and episodes (the
paper config: 5-way, 1 and 5 shots, 50 queries per class, supports augmented 5x, C = 1).

  ours       the stage function (metantk_nas.fsl.evaluate.evaluate): query features once per queried test image,
             the augmented supports of consecutive episodes in shared forwards (channels_last), the batched
             Newton solver over all episodes
  original   fewshot_test.py's loop: per episode, its supports through the PIL transform A 5 times and its queries
             through the test transform, one forward each (NCHW), then scikit-learn's LogisticRegression with the
             original's stopping rule (fit_predict_sklearn)

Both run --episodes episodes per shot setting; prints seconds per episode of each and the ratio. Ours extracts a
query image's features once however many episodes query it, so its lead grows with the episodes: at the paper's
1000, 12,000 test images against 250,000 query forwards (bench/rehearsal.py extrapolates the stage itself).

  .venv/bin/python bench/evaluate_stage.py --prepared /tmp/metantk-rehearsal-paper/prepared/mini --episodes 2
"""
from __future__ import annotations

import argparse
import random
import sys

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU

from metantk_nas.cli import use_huge_pages  # noqa: E402

use_huge_pages()   # before torch loads, as the training and evaluation scripts do (for both sides)
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from input_pipeline import pil_transform_a  # noqa: E402
from train_step import network  # noqa: E402

from metantk_nas.config import eval_config, load_config  # noqa: E402
from metantk_nas.data.prepared import load_split  # noqa: E402
from metantk_nas.data.transforms import TestTransform  # noqa: E402
from metantk_nas.fsl.evaluate import episode_sampler, evaluate, fit_predict_sklearn, l2_normalise  # noqa: E402


@torch.no_grad()
def original(model, test, cfg, device) -> float:
    """fewshot_test.py's loop over the same episodes; the mean accuracy over all of them (for the record)."""
    model = model.eval()
    tt = TestTransform(cfg.image_size, test.mean, test.std)
    rng = random.Random(0)
    accs = []
    for shots in cfg.shots:
        sampler = episode_sampler(test, cfg, shots)
        for i in range(cfg.episodes):
            ep = sampler.episode(i)
            tiled = np.tile(ep.support, cfg.support_augmentations)
            sup = torch.stack([pil_transform_a(np.asarray(test.images[j]), cfg.image_size, cfg.crop_padding,
                                               cfg.color_jitter, rng) for j in tiled])
            fs = l2_normalise(model.features(sup.to(device)).float().cpu())
            fq = l2_normalise(model.features(tt(test.images[np.sort(ep.query)]).to(device)).float().cpu())
            order = np.argsort(ep.query)
            pred = fit_predict_sklearn(fs.double().numpy(), np.tile(ep.support_labels, cfg.support_augmentations),
                                       fq.double().numpy(), cfg.C)
            accs.append(float((pred == np.asarray(ep.query_labels)[order]).mean()))
    return float(np.mean(accs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", required=True, help="a prepared dataset at 84x84 (its test split)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--episodes", type=int, default=2, help="episodes per shot setting (default 2)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cfg = replace(eval_config(load_config([ROOT / "config/config.yaml"])), episodes=args.episodes)
    test = load_split(args.prepared, "test")
    model = network(64, device, channels_last=False)
    t0 = clock()
    out = evaluate(model, test, cfg, device, progress=False)
    ours = (clock() - t0) / (args.episodes * len(cfg.shots))
    model = network(64, device, channels_last=False)
    t0 = clock()
    acc = original(model, test, cfg, device)
    theirs = (clock() - t0) / (args.episodes * len(cfg.shots))
    mine = np.mean([v["mean"] for v in out.values()])
    print(f"evaluation (C=48, 5 cells, {cfg.ways}-way {'/'.join(map(str, cfg.shots))}-shot, {cfg.queries} queries, "
          f"supports x{cfg.support_augmentations}, {args.episodes} episodes per setting, {device.type}, torch threads "
          f"{torch.get_num_threads()}; untrained weights, mean accuracy ours {mine:.1f}%, original {100 * acc:.1f}%)")
    print(f"  ours (the stage: shared query features, batched solver): {ours:8.2f} s per episode")
    print(f"  original (per-episode forwards, scikit-learn):           {theirs:8.2f} s per episode")
    print(f"ratio original/ours: {theirs / ours:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
