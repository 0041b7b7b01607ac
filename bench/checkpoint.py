#!/usr/bin/env python
"""Benchmark the mid-epoch checkpoint at the paper's network size: what a preempted training job pays between the
signal and its exit.  The evaluation network (C=48, 84x84 inputs, 64 mini-ImageNet classes, the published MetaNAS
cell) with SGD momentum buffers, at 5 and 8 cells: one training step (forward, backward, update; the unit of work
a signal waits for) and one checkpoint as training writes it (model, optimiser, scaler, epoch/step state,
serialised, then written atomically: temporary file, fsync, rename), against a bare ``torch.save`` of the same
dictionaries to a file (the reference).  Prints seconds, megabytes and the ratios.

  .venv/bin/python bench/checkpoint.py                    # both cell counts, the paper's batch sizes (64 / 40)
  .venv/bin/python bench/checkpoint.py --cells 5 --batch 16
"""
import argparse
import tempfile
from pathlib import Path

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU
import torch
import torch.nn.functional as F
import yaml

from metantk_nas.fsl.train import SGD, TrainState, _save_checkpoint, build_model
from metantk_nas.config import load_config, train_config
from metantk_nas.nas.genotype import Genotype

PAPER_BATCH = {5: 64, 8: 40}


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[5, 8])
    p.add_argument("--batch", type=int, default=None, help="training batch (default: the paper's, 64 / 40)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    cfg = load_config(["config/config.yaml"])
    published = yaml.safe_load(Path("config/genotypes.yaml").read_text())
    genotype = Genotype.from_darts(published["metanas_in_v2"]["genotype"])
    print(f"device: {dev}, torch threads {torch.get_num_threads()}")
    for cells in args.cells:
        tc = train_config(cfg, "mini", cells, 0)
        model = build_model(genotype, tc, 64).to(dev).to(memory_format=torch.channels_last)
        opt = SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        batch = args.batch or PAPER_BATCH[cells]
        x = torch.randn(batch, 3, tc.image_size, tc.image_size, device=dev).contiguous(
            memory_format=torch.channels_last)
        y = torch.randint(0, 64, (batch,), device=dev)

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        step()   # momentum buffers exist from the first step on
        t_step = best_of(args.repeats, step)
        state = TrainState(epoch=3, step=117, loss_sum=1.0, correct=10)
        with tempfile.TemporaryDirectory() as tmp:
            ours = best_of(args.repeats, lambda: _save_checkpoint(Path(tmp), model, opt, scaler, state))
            size = (Path(tmp) / "ckpt_last.pt").stat().st_size / 1e6
            plain = Path(tmp) / "plain.pt"
            ref = best_of(args.repeats, lambda: torch.save(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict()}, plain))
        n = sum(q.numel() for q in model.parameters())
        print(f"{cells} cells, C={tc.channels}, {n / 1e6:.2f}M parameters, batch {batch}: "
              f"training step {t_step:.3f} s; checkpoint {ours:.3f} s ({size:.1f} MB; bare torch.save {ref:.3f} s, "
              f"ratio {ours / ref:.2f}x); checkpoint / step {ours / t_step:.4f}")


if __name__ == "__main__":
    main()
