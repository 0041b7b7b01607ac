#!/usr/bin/env python
"""train: RFS supervised pre-training of the evaluation network of a genotype on all base classes.

Writes model.pt (a state_dict; load with torch.load(weights_only=True)), train_log.csv (epoch, loss, accuracy,
lr, seconds), train_curve.png and metrics.json (#params, training time, device). Checkpoints go to {out}/checkpoints/ every epoch;
a killed or preempted run (SIGTERM/SIGUSR1 -> checkpoint and exit 75) resumes to identical weights.

Example:
  .venv/bin/python scripts/train.py --configfile config/config.yaml config/smoke.yaml \\
      --dataset synthetic --method metantk --cells 5 --seed 0 --genotype results/smoke/synthetic/metantk/cells5/seed0/genotype.json \\
      --prepared data/prepared-smoke/synthetic --out results/smoke/synthetic/metantk/cells5/seed0
"""
import sys
from pathlib import Path

from metantk_nas.cli import use_huge_pages

use_huge_pages()   # before torch loads: huge pages for the activations (docs/scaling.md)

from metantk_nas import cli  # noqa: E402
from metantk_nas.config import stage_config_subset, train_config
from metantk_nas.data.prepared import load_split
from metantk_nas.fsl.train import train_model, write_outputs
from metantk_nas.nas.genotype import load_genotype
from metantk_nas.provenance import Provenance, device_name, write_json_atomic


def main(args, cfg):
    cli.set_threads(args.threads)
    device = cli.resolve_device(cfg)
    budget = cfg["study"]["recipe"] if args.study else "full"
    tc = train_config(cfg, args.dataset, args.cells, args.seed, budget)
    prepared, out = Path(args.prepared), Path(args.out)
    data = load_split(prepared, "train")
    prov = Provenance("train", {"run": {k: getattr(args, k) for k in ("dataset", "method", "cells", "seed")},
                                **stage_config_subset(cfg, "study_train" if args.study else "train")}, seed=args.seed)
    prov.add_inputs([args.genotype, prepared / "manifest.json", prepared / "train_images.npy",
                     prepared / "train_labels.npy"])
    model, state = train_model(load_genotype(args.genotype), tc, data, out / "checkpoints", device,
                               progress=not args.no_progress,
                               on_step=cli.stop_after(args.stop_after, "training step"))
    title = f"{args.dataset}, {args.method}, {args.cells} cells, seed {args.seed}: RFS pre-training" + \
        ("" if budget == "full" else f" ({budget} budget)")
    metrics = write_outputs(model, state, out, device, title) | {"device": device_name(), "n_classes": data.n_classes,
                                                          "cells": tc.cells, "channels": tc.channels}
    write_json_atomic(out / "metrics.json", metrics)
    prov.write([out / "model.pt", out / "train_log.csv", out / "train_curve.png", out / "metrics.json"])


if __name__ == "__main__":
    p = cli.parser(__doc__)
    cli.add_run_args(p)
    p.add_argument("--genotype", required=True, help="genotype.json")
    p.add_argument("--prepared", required=True, help="prepared dataset directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--study", action="store_true",
                   help="a run of the score-vs-accuracy study: train with study.recipe (full, or a study.budgets entry)")
    cli.add_stop_after(p, "training step")
    sys.exit(cli.run(main, p))
