#!/usr/bin/env python
"""Measure the scoring cost of the score-vs-accuracy study at paper size, and extrapolate it to the paper's study.

Scores one random cell per cell count with the paper config's search settings (C=48, 3 repeats, 30 images per
kernel, 3000 linear-region inputs): the MetaNTK kappa with the MAML and the ANIL kernel, the NTK kappa, the
linear regions, #params (scripts/study_score.py does the same). Prints the seconds per architecture, then the
scoring hours of the configured study (N random cells + the grid's searched cells per (dataset, cells)). Training
and evaluation reuse the grid's stages; docs/scaling.md counts them.

  .venv/bin/python bench/study_cost.py                        # CPU, on the smoke data's train split
  .venv/bin/python bench/study_cost.py --device cuda
"""
import argparse

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU

import torch

from metantk_nas.config import STUDY_METHODS, load_config, study_runs
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.genotype import random_genotype
from metantk_nas.provenance import device_name
from metantk_nas.search.arch_scores import score_architecture


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default="data/prepared-smoke/synthetic", help="any prepared dataset (train split)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cells", type=int, nargs="+", default=[5, 8])
    args = p.parse_args()
    cfg = load_config(["config/config.yaml"])
    train = load_split(args.prepared, "train")
    dev = torch.device(args.device)
    per = {}
    for cells in args.cells:
        t0 = clock()
        out = score_architecture(cfg, "mini", cells, random_genotype(1000, cells), train, dev)
        per[cells] = clock() - t0
        print(f"{cells} cells: {per[cells]:.1f} s per architecture on {device_name()} "
              f"(kappa MAML {out['scores']['metantk_maml']:.4g}, ANIL {out['scores']['metantk_anil']:.4g}, "
              f"NTK {out['scores']['ntk']:.4g}, regions {out['scores']['regions']:.0f})")
    runs = study_runs(cfg)
    hours = sum(per.get(r.cells, 0.0) for r in runs) / 3600
    n_sampled = cfg["study"]["architectures"] * len(cfg["study"]["datasets"]) * len(cfg["study"]["cells"])
    print(f"paper study ({len(runs)} architectures: {n_sampled} random + {len(runs) - n_sampled} of the grid's "
          f"{', '.join(STUDY_METHODS)} runs): scoring {hours:.2f} {args.device.upper()}-hours")


if __name__ == "__main__":
    main()
