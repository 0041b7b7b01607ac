#!/usr/bin/env python
"""Benchmark the scores the search computes, ours vs the original's procedure, in one run; prints ratios.

On the supernet (C=48, 5 cells MAML / 8 cells ANIL, 30 samples at 32x32 by default):
  (a) one candidate as the search evaluates it: a mask change + MetaNTK of origin and candidate with the `fast`
      backend (and with the origin shared across candidates), vs the original's procedure mirrored with the
      `opacus` backend: build the candidate network with BatchNorm, convert its norms to GroupNorm, copy the
      origin's weights, wrap with GradSampleModule, compute origin and candidate;
  (b) the backends alone on one kernel: fast vs opacus;
  (c) the floor: one forward + backward pass of the same batch;
plus the linear-region count of one candidate. Peak memory per item: growth of the resident set on CPU (sampled),
max allocated on CUDA.

  .venv/bin/python bench/kernels.py                 # paper size (slow on CPU: minutes)
  .venv/bin/python bench/kernels.py --channels 8    # quick
"""
import argparse
import ctypes
import gc
import os
import threading

import benchlib  # first: src/ on the path

import numpy as np
import torch
import torch.nn as nn

from metantk_nas.kernels.linear_regions import activation_patterns, count_unique_patterns, relu_modules
from metantk_nas.kernels.metantk import condition_number, metantk
from metantk_nas.kernels.ntk import gram_from_grads, kernel_parameter_names, ntk_fast, ntk_opacus, per_sample_grads
from metantk_nas.nas.networks import LogitsNet, SuperNet, full_mask, thin_supernet




class PeakMemory:
    """Peak memory of one item: max allocated on CUDA; on CPU the peak growth of the process's resident set over
    its value at entry (after returning freed heap to the OS), sampled every 5 ms by a thread (torch releases the
    GIL inside its kernels)."""

    def __init__(self, device):
        self.device, self.peak = device, 0.0

    @staticmethod
    def _rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss_mb() - self._base)
            self._stop.wait(0.005)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated() / 2**20
        else:
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)   # hand freed heap back, so the baseline is the live set
            self._base, self._stop = self._rss_mb(), threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() / 2**20 - self._base
        else:
            self._stop.set()
            self._thread.join()


def convert_bn_to_gn(module):
    """What the original does with Opacus' convert_batchnorm_modules: BatchNorm2d -> GroupNorm(min(16, C), C)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(min(16, child.num_features), child.num_features))
        else:
            convert_bn_to_gn(child)
    return module


def metantk_cond(net, mask, head, x, inner, backend, chunk):
    """As the search: the NTK over the live weights; the ANIL kernel from the head-weight part of the same pass
    (the original's Opacus "NNGP" is that part too)."""
    ln = LogitsNet(net, mask, head)
    grads = per_sample_grads(ln, x, kernel_parameter_names(ln, ln.live_parameter), backend, chunk)
    theta = gram_from_grads(grads)
    k = theta if inner == "maml" else gram_from_grads([grads["head.weight"]])
    return condition_number(metantk(theta, k, 3, float("inf") if inner == "maml" else 1.0, 1e-3))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--chunk", type=int, default=16, help="search.ntk_chunk for the fast backend (0: all at once)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    print(f"device {dev} ({torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'CPU'}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, C={args.channels}, {args.samples} samples at {args.size}x{args.size}, "
          f"fast chunk {args.chunk or 'all'}")
    torch.manual_seed(0)
    x = torch.randn(args.samples, 3, args.size, args.size, device=dev)
    for cells, inner in ((5, "maml"), (8, "anil")):
        origin = SuperNet(args.channels, cells, 64, "groupnorm16").to(dev)
        head = nn.Linear(origin.feature_dim, 5).to(dev)
        mask = full_mask()
        cand = mask.copy()
        cand[0, 3, 2] = False

        def ours():  # mask change; origin and candidate share the weights
            return (metantk_cond(origin, mask, head, x, inner, "fast", args.chunk), metantk_cond(origin, cand, head, x, inner, "fast", args.chunk))

        def ours_shared():  # origin kernel computed once per round (fidelity.fresh_batch_per_candidate: false)
            return metantk_cond(origin, cand, head, x, inner, "fast", args.chunk)

        def original():
            net = convert_bn_to_gn(SuperNet(args.channels, cells, 64, "batchnorm")).to(dev)
            net.load_state_dict(origin.state_dict())
            with torch.no_grad():  # its kernel function first runs the queries through network 0 for the width
                origin.features(x[: len(x) // 2], mask)
            return (metantk_cond(origin, mask, head, x, inner, "opacus", 0), metantk_cond(net, cand, head, x, inner, "opacus", 0))

        ln = LogitsNet(origin, mask, head)
        names = kernel_parameter_names(ln, ln.live_parameter)

        def floor():
            ln.zero_grad()
            ln(x).sum().backward()

        rows = {}
        for name, fn in (("(a) ours: mask + fast, origin+candidate", ours), ("(a) ours, origin shared", ours_shared),
                         ("(a) original procedure (opacus)", original),
                         ("(b) backend fast, one kernel", lambda: ntk_fast(ln, x, names, args.chunk)),
                         ("(b) backend opacus, one kernel", lambda: ntk_opacus(ln, x, names)),
                         ("(c) floor: forward+backward", floor)):
            with PeakMemory(dev) as mem:
                t = benchlib.timed(fn, args.reps)[0]
            rows[name] = (t.mean_s, mem.peak, t.warmup_s)
        thin = thin_supernet(1, 64).to(dev).train()
        xs = [torch.randn(1000, 1, 3, 3, device=dev) for _ in range(3)]
        lr_t, _ = benchlib.timed(lambda: [count_unique_patterns(activation_patterns(lambda z: thin(z, m), relu_modules(thin), xs))
                                 for m in (mask, cand)], args.reps)
        print(f"\n{cells} cells, {inner.upper()} kernel")
        for name, (t, mem, warm) in rows.items():
            print(f"  {name:<42} {t:8.3f} s   peak +{mem:7.0f} MB   (warm-up call {warm:.3f} s, not counted)")
        print(f"  {'linear regions, origin+candidate (3000 inputs)':<42} {lr_t.mean_s:8.3f} s   "
              f"(warm-up call {lr_t.warmup_s:.3f} s, not counted)")
        o = rows["(a) original procedure (opacus)"][0]
        print(f"  ratio original/ours (a): {o / rows['(a) ours: mask + fast, origin+candidate'][0]:.2f}x; "
              f"with shared origin: {o / rows['(a) ours, origin shared'][0]:.2f}x")
        f, op, fl = (rows[k][0] for k in ("(b) backend fast, one kernel", "(b) backend opacus, one kernel",
                                          "(c) floor: forward+backward"))
        print(f"  ratio opacus/fast (b): {op / f:.2f}x; fast/floor: {f / fl:.2f}x")


if __name__ == "__main__":
    main()
