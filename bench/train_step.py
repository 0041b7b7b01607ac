#!/usr/bin/env python
"""Benchmark one RFS training step at paper size, ours against the original's loop, in one run: the same network
(EvalNet of the published MetaNAS cell, C=48, 5 cells, 64 classes, drop-path of the first epoch), the same batch
size and data, each timed over --steps steps after one warm-up step.

  ours       the training loop's step (metantk_nas.fsl.train): a sorted batch of uint8 images from the memory-mapped
             prepared array, the batched tensor transform A, channels_last, the step's SGD
  original   RFS's loop: a Dataset applying transform A per image with PIL (bench/input_pipeline.py's mirror:
             RandomCrop(84, pad 8), ColorJitter(0.4, 0.4, 0.4), RandomHorizontalFlip, ToTensor, Normalize), a
             shuffling DataLoader (--workers, the config's train.num_workers: 0), NCHW, torch.optim.SGD

Prints seconds per step for each and the ratio original/ours.

  .venv/bin/python bench/train_step.py                                    # random images, CPU
  .venv/bin/python bench/train_step.py --prepared /tmp/metantk-rehearsal-paper/prepared/mini --device cuda --steps 20
"""
from __future__ import annotations

import argparse
import random
import sys

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU

from metantk_nas.cli import use_huge_pages  # noqa: E402

use_huge_pages()   # before torch loads, as the training and evaluation scripts do (for both sides)
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from input_pipeline import pil_transform_a  # noqa: E402  (the original's per-image transform, mirrored with PIL)

from metantk_nas.data.readers import RFS_MEAN, RFS_STD  # noqa: E402
from metantk_nas.data.transforms import TrainAugment  # noqa: E402
from metantk_nas.fsl.train import SGD, drop_path_probability  # noqa: E402
from metantk_nas.nas.genotype import Genotype  # noqa: E402
from metantk_nas.nas.networks import EvalNet  # noqa: E402


class PilDataset(torch.utils.data.Dataset):
    """The original's training set: one image at a time through the PIL transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels, self.rng = images, labels, random.Random(0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return pil_transform_a(np.asarray(self.images[i]), 84, 8, 0.4, self.rng), int(self.labels[i])


def network(classes: int, device: torch.device, channels_last: bool) -> EvalNet:
    table = yaml.safe_load((ROOT / "config/genotypes.yaml").read_text())
    torch.manual_seed(0)   # the same weights for ours and the original
    model = EvalNet(Genotype.from_darts(table["metanas_in_v2"]["genotype"]), 48, 5, classes).to(device)
    model.set_drop_path(drop_path_probability(0.2, 1, 100))
    model.train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def step(model, opt, x, y) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def ours(images, labels, device, batch, steps) -> float:
    model = network(int(labels.max()) + 1, device, channels_last=True)
    opt = SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    aug = TrainAugment(84, 8, 0.4, RFS_MEAN, RFS_STD)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
    lab = torch.as_tensor(labels)
    t0 = 0.0
    for s in range(steps + 1):
        if s == 1:   # after the warm-up step
            t0 = clock()
        idx = np.sort(perm[s * batch:(s + 1) * batch])
        x = aug(images[idx], torch.Generator().manual_seed(s), device).contiguous(memory_format=torch.channels_last)
        step(model, opt, x, lab[idx].to(device))
    return (clock() - t0) / steps


def original(images, labels, device, batch, steps, workers) -> float:
    model = network(int(labels.max()) + 1, device, channels_last=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(PilDataset(images, labels), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    t0 = 0.0
    for s, (x, y) in enumerate(loader):
        if s == 1:
            t0 = clock()
        step(model, opt, x.to(device), y.to(device))
        if s == steps:
            break
    return (clock() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default=None, help="a prepared dataset (its train split); default: random images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64, help="the paper's batch at 5 cells (default 64)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (default 3)")
    p.add_argument("--workers", type=int, default=0, help="the original's DataLoader workers (default 0)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.prepared:
        from metantk_nas.data.prepared import load_split
        split = load_split(args.prepared, "train")
        images, labels = split.images, np.asarray(split.labels)
    else:
        n = args.batch * (args.steps + 1)
        images = np.random.default_rng(0).integers(0, 256, (n, 84, 84, 3), dtype=np.uint8)
        labels = np.arange(n) % 64
    mine = ours(images, labels, device, args.batch, args.steps)
    theirs = original(images, labels, device, args.batch, args.steps, args.workers)
    print(f"training step (C=48, 5 cells, batch {args.batch}, 84x84, {device.type}, torch threads "
          f"{torch.get_num_threads()}, {args.steps} steps each after a warm-up)")
    print(f"  ours (batched transform, channels_last):        {mine:8.3f} s per step")
    print(f"  original (PIL per image, DataLoader, NCHW):      {theirs:8.3f} s per step")
    print(f"ratio original/ours: {theirs / mine:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
