#!/usr/bin/env python
"""Benchmark the search: the whole smoke search, and candidates of the first round on the paper-size supernet
(C=48, 5 cells, MAML, 3 repeats, all 7 ops), extrapolated to a full search and printed next to the paper's
1.54 GPU-hours (mini-ImageNet, 5 cells, V100).

A full paper-size round is 126 candidates; on a CPU time a few (--candidates) and extrapolate.  The first round
is the most expensive (all 7 ops alive), so the extrapolation is an upper bound.

  python bench/search.py --prepared data/prepared-smoke/synthetic --candidates 2
"""
import argparse
import time

import torch

from metantk_nas.config import load_config, search_config
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.networks import full_mask
from metantk_nas.provenance import device_name
from metantk_nas.search.pruning import PruningSearch
from metantk_nas.search.scoring import Scorer

PAPER_GPU_HOURS = 1.54


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default="data/prepared-smoke/synthetic", help="any prepared dataset (train split)")
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    train = load_split(args.prepared, "train")
    print(f"device: {device_name() if dev.type == 'cuda' else 'CPU'}, torch threads {torch.get_num_threads()}")

    smoke = load_config(["config/config.yaml", "config/smoke.yaml"])
    sc = search_config(smoke, "synthetic", "metantk", 5, 0)
    t0 = time.perf_counter()
    PruningSearch(sc, Scorer(sc, train, dev), progress=False).run()
    print(f"smoke search (metantk, 5 cells, C={sc.channels}, {len(sc.ops)} ops): {time.perf_counter() - t0:.1f} s")

    paper = load_config(["config/config.yaml"])
    pc = search_config(paper, "mini", "metantk", 5, 0)
    search = PruningSearch(pc, Scorer(pc, train, dev), progress=False)
    search.scorer.reinit_kernel_net(0)
    mask = full_mask()
    t0 = time.perf_counter()
    for k in range(args.candidates):
        cand = mask.copy()
        cand[k // 7, 0, k % 7] = False
        search._scores(mask, mask, cand, (0, k))
    per = (time.perf_counter() - t0) / args.candidates
    total = search.total_candidates(mask)
    hours = per * total / 3600
    print(f"paper-size candidate (C=48, 5 cells, MAML, {pc.repeats} repeats, fresh batch per candidate): {per:.1f} s")
    print(f"extrapolated full search ({total} candidates, upper bound): {hours:.2f} device-hours on this device; "
          f"paper: {PAPER_GPU_HOURS} GPU-hours on a V100 (ratio {hours / PAPER_GPU_HOURS:.1f}x)")


if __name__ == "__main__":
    main()
