#!/usr/bin/env python
"""Where the time of one search kernel goes: torch.profiler over the MetaNTK kernel of one paper-size network
(C=48, 5 cells, all 7 ops, 30 images at 32x32, the fast backend as the search runs it), its operators grouped
into convolution forward, convolution backward (activation gradients), per-sample weight gradients, gram matrix
products, normalisation and elementwise work, and the rest; the wall time not inside any operator is Python
overhead.  Optionally the same for a round-batched pass of --networks networks.

  .venv/bin/python bench/profile_kernel.py                  # one network, one by one
  .venv/bin/python bench/profile_kernel.py --networks 2     # and a batched pass of 2 networks
"""
import argparse
from collections import defaultdict

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from metantk_nas.config import load_config, search_config
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.networks import full_mask
from metantk_nas.search.scoring import Scorer

GROUPS = [  # (group, substrings of operator names), first match wins
    ("convolution backward (activation gradients)", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "_convolution", "conv2d", "convolution")),
    ("per-sample weight gradients", ("bmm", "einsum", "conv2d_weight", "sum", "stack", "pad")),
    ("gram products", ("aten::mm", "matmul")),
    ("normalisation", ("group_norm", "native_group_norm", "batch_norm")),
    ("pooling", ("pool",)),
    ("elementwise", ("mul", "add", "relu", "threshold", "div", "copy_", "cat", "fill_", "zero_", "empty")),
]


def group_of(name):
    for g, keys in GROUPS:
        if any(k in name for k in keys):
            return g
    return "other operators"


def profiled(fn):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = clock()
        fn()
        wall = clock() - t0
    by = defaultdict(float)
    for e in prof.key_averages():
        by[group_of(e.key)] += e.self_cpu_time_total / 1e6
    return wall, by


def report(title, wall, by):
    inside = sum(by.values())
    print(f"\n{title}: {wall:.2f} s wall")
    for g, t in sorted(by.items(), key=lambda kv: -kv[1]):
        print(f"  {g:<46} {t:7.2f} s  {100 * t / wall:5.1f}%")
    print(f"  {'outside operators (Python overhead)':<46} {max(wall - inside, 0):7.2f} s  "
          f"{100 * max(wall - inside, 0) / wall:5.1f}%")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default="data/prepared-smoke/synthetic")
    p.add_argument("--networks", type=int, default=0, help="also profile a batched pass of this many networks")
    args = p.parse_args()
    cfg = search_config(load_config(["config/config.yaml"]), "mini", "metantk", 5, 0)
    scorer = Scorer(cfg, load_split(args.prepared, "train"), torch.device("cpu"))
    scorer.reinit_kernel_net(0)
    mask = full_mask()
    inputs, head = scorer.kernel_inputs(0, 0, 0), scorer.new_head(0, 0, 0, 0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, C={cfg.channels}, 5 cells, "
          f"{len(inputs.x)} images, ntk_chunk {cfg.ntk_chunk}")
    scorer.kernel_condition(mask, inputs, head)   # warm-up
    report("one network, one by one (fast backend)", *profiled(lambda: scorer.kernel_condition(mask, inputs, head)))
    if args.networks:
        scorer._pass_networks = args.networks
        nets = [(mask, scorer.kernel_inputs(0, k, 0), scorer.new_head(0, k, 0, 1)) for k in range(args.networks)]
        wall, by = profiled(lambda: scorer.batched_conditions(nets))
        report(f"{args.networks} networks in one batched pass (per network: {wall / args.networks:.2f} s)", wall, by)


if __name__ == "__main__":
    main()
