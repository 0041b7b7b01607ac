#!/usr/bin/env python
"""study_score: the training-free scores of one architecture (its genotype.json) for the score-vs-accuracy study.

Writes scores.json: the MetaNTK condition number with the MAML and with the ANIL kernel, the plain NTK condition
number, the number of linear regions (each the mean over search.repeats, with the per-repeat values) and the
evaluation network's parameter count. The scores come from the search's own scorers on the single-path network;
each architecture is scored as the search scores a candidate of one round (docs/study.md).

Example (an architecture of the demo's study):
  .venv/bin/python scripts/study_score.py --configfile config/config.yaml config/smoke.yaml \\
      --dataset synthetic --method random --cells 5 --seed 100 \\
      --genotype results/smoke/synthetic/random/cells5/seed100/genotype.json \\
      --prepared data/prepared-smoke/synthetic --out results/smoke/synthetic/random/cells5/seed100
"""
import sys
from pathlib import Path

from metantk_nas import cli
from metantk_nas.config import kernel_spec, stage_config_subset
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.genotype import load_genotype
from metantk_nas.provenance import Provenance, write_json_atomic
from metantk_nas.search.arch_scores import score_architecture


def main(args, cfg):
    cli.set_threads(args.threads)
    device = cli.resolve_device(cfg)
    kernel_spec(cfg, args.dataset, args.cells)   # a missing kernel entry: the one-line config error, before any work
    prepared, out = Path(args.prepared), Path(args.out)
    genotype = load_genotype(args.genotype)
    train = load_split(prepared, "train")
    prov = Provenance("study_score", {"run": {k: getattr(args, k) for k in ("dataset", "method", "cells", "seed")},
                                      **stage_config_subset(cfg, "study_score")})
    prov.add_inputs([args.genotype, prepared / "manifest.json", prepared / "train_images.npy",
                     prepared / "train_labels.npy"])
    result = score_architecture(cfg, args.dataset, args.cells, genotype, train, device)
    record = {"dataset": args.dataset, "method": args.method, "cells": args.cells, "seed": args.seed,
              "genotype_string": genotype.to_darts(), **result}
    write_json_atomic(out / "scores.json", record)
    prov.write([out / "scores.json"])


if __name__ == "__main__":
    p = cli.parser(__doc__)
    cli.add_run_args(p)
    p.add_argument("--genotype", required=True, help="genotype.json of the architecture")
    p.add_argument("--prepared", required=True, help="prepared dataset directory (its train split is used)")
    p.add_argument("--out", required=True, help="output directory (scores.json goes there)")
    sys.exit(cli.run(main, p))
