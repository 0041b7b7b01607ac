#!/usr/bin/env python
"""Benchmark the search, in one run: the whole smoke search one by one and round-batched, then candidates of
the first round on the paper-size supernet (C=48, 5 cells, MAML, 3 repeats, all 7 ops, 30 images per kernel, a
fresh batch per candidate: the paper config's defaults) scored three ways:

  one by one      each candidate's repeat: its own batch, the origin's kernel and the candidate's (fast backend)
  round-batched   the same networks, --networks of them per forward/backward pass with per-sample masks
                  (search.batch_candidates; the pass size that search.batch_memory_mb gives is printed)
  original        the original's procedure mirrored with Opacus: per repeat a BatchNorm candidate converted to
                  GroupNorm, the origin's weights copied in, GradSampleModule on origin and candidate

plus the linear-region score of a candidate (the same in every mode).  Per candidate time, ratios, peak memory,
and the full search extrapolated next to the paper's 1.54 GPU-hours (mini-ImageNet, 5 cells, V100).  A
paper-size round is 126 candidates; on a CPU time a few (--candidates).  The first round is the most expensive
(all 7 ops alive), so the extrapolation is an upper bound.

  .venv/bin/python bench/search.py --candidates 4                      # CPU
  .venv/bin/python bench/search.py --candidates 16 --device cuda       # GPU (README: GPU bench)
"""
import argparse
import dataclasses
import sys
from pathlib import Path

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU
import numpy as np
import torch

from metantk_nas.config import load_config, search_config
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.networks import full_mask
from metantk_nas.provenance import device_name
from metantk_nas.search.pruning import PruningSearch
from metantk_nas.search.scoring import Scorer

sys.path.insert(0, str(Path(__file__).parent))
from kernels import PeakMemory  # noqa: E402

PAPER_GPU_HOURS = 1.54


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default="data/prepared-smoke/synthetic", help="any prepared dataset (train split)")
    p.add_argument("--candidates", type=int, default=4, help="paper-size candidates of round 0 to time")
    p.add_argument("--memory-mb", type=int, default=4096, help="search.batch_memory_mb of the round-batched mode")
    p.add_argument("--networks", type=int, default=0, help="networks per batched pass (0: from --memory-mb)")
    p.add_argument("--channels", type=int, default=48, help="C of the 'paper-size' supernet (make gpu-check's CPU run: 4)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    train = load_split(args.prepared, "train")
    print(f"device: {device_name() if dev.type == 'cuda' else 'CPU'}, torch threads {torch.get_num_threads()}")

    smoke = load_config(["config/config.yaml", "config/smoke.yaml"])
    sc = dataclasses.replace(search_config(smoke, "synthetic", "metantk", 5, 0), batch_candidates=False)
    t0 = clock()
    PruningSearch(sc, Scorer(sc, train, dev), progress=False).run()
    print(f"smoke search (metantk, 5 cells, C={sc.channels}, {len(sc.ops)} ops), one by one: "
          f"{clock() - t0:.1f} s")

    t0 = clock()
    batched = dataclasses.replace(sc, batch_candidates=True)
    PruningSearch(batched, Scorer(batched, train, dev), progress=False).run()
    print(f"smoke search, round-batched: {clock() - t0:.1f} s")

    paper = load_config(["config/config.yaml"])
    pc = dataclasses.replace(search_config(paper, "mini", "metantk", 5, 0), channels=args.channels)
    mask = full_mask()
    work = []
    for k in range(args.candidates):   # the first candidates of round 0, as prune_round enumerates them
        cand = mask.copy()
        cand[0, k // 7, k % 7] = False
        work.append((mask, mask, cand, (0, k)))
    rows, dks = {}, {}
    for mode, cfg in (("one by one", dataclasses.replace(pc, batch_candidates=False)),
                      ("round-batched", dataclasses.replace(pc, batch_candidates=True, batch_memory_mb=args.memory_mb))):
        search = PruningSearch(cfg, Scorer(cfg, train, dev), progress=False)
        search.scorer.reinit_kernel_net(0)
        if mode == "round-batched":
            search.scorer._pass_networks = args.networks or None
            per_pass = search.scorer.networks_per_pass()
            mode = f"round-batched ({per_pass} networks per pass)"
        with PeakMemory(dev) as mem:
            t0 = clock()
            dks[mode] = search._kernel_scores(work, None)
            rows[mode] = ((clock() - t0) / len(work), mem.peak)
    t0 = clock()
    for _, origin_r, cand, key in work[:2]:
        search._region_score(origin_r, cand, key)
    regions = (clock() - t0) / 2
    with PeakMemory(dev) as mem:
        t0 = clock()
        for _, _, cand, _ in work[:2]:
            for _ in range(pc.repeats):
                original_pair(pc, train.n_classes, cand, dev)
        rows["original procedure (opacus)"] = ((clock() - t0) / 2, mem.peak)
    same = len({tuple(v) for v in dks.values()}) == 1
    print(f"\npaper-size round 0 ({len(work)} candidates; C={pc.channels}, 5 cells, MAML, {pc.repeats} repeats, "
          f"fresh batch per candidate, {pc.grad_dtype}); dK of one by one and round-batched identical: {same}")
    for name, (t, peak) in rows.items():
        print(f"  {name:<42} {t:8.2f} s per candidate (dK)   peak +{peak:7.0f} MB")
    print(f"  {'linear-region score (dR), any mode':<42} {regions:8.2f} s per candidate")
    base = rows["original procedure (opacus)"][0]
    total = PruningSearch(pc, None, progress=False).total_candidates(mask)
    for name, (t, _) in rows.items():
        hours = (t + regions) * total / 3600
        print(f"  {name:<42} original/this {base / t:5.2f}x   full search ({total} candidates, upper bound): "
              f"{hours:6.2f} device-hours (paper: {PAPER_GPU_HOURS} GPU-hours on a V100)")


def original_pair(pc, n_classes, cand, dev):
    """One repeat of one candidate as the original computes it (bench/kernels.py's procedure)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from kernels import convert_bn_to_gn, metantk_cond

    from metantk_nas.nas.networks import SuperNet

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, 32, 32, generator=gen).to(dev)
    origin = SuperNet(pc.channels, 5, n_classes, "groupnorm16").to(dev)
    head = torch.nn.Linear(origin.feature_dim, 5).to(dev)
    net = convert_bn_to_gn(SuperNet(pc.channels, 5, n_classes, "batchnorm")).to(dev)
    net.load_state_dict(origin.state_dict())
    return (metantk_cond(origin, full_mask(), head, x, "maml", "opacus", 0),
            metantk_cond(net, np.asarray(cand), head, x, "maml", "opacus", 0))


if __name__ == "__main__":
    main()
