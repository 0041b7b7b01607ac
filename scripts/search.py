#!/usr/bin/env python
"""search: MetaNTK-NAS pruning search for one (dataset, method, cells, seed) -> search.json + cost.json.

Methods: metantk (MetaNTK condition number + linear regions), tenas (NTK condition number + linear regions),
linreg (linear regions only), random (a uniformly sampled valid cell). The search resumes from
{out}/search_state.json after a kill and ends with the same result as an uninterrupted run; SIGTERM/SIGUSR1 (SLURM
preemption, the time-limit warning) finish the current candidate, checkpoint and exit 75 (retried by Snakemake). search.json is
byte-identical for the same config and seed on CPU; timings go to cost.json (Table 1's search cost).

Example (one run of the demo grid; `make demo` prepares the data first):
  .venv/bin/python scripts/search.py --configfile config/config.yaml config/smoke.yaml \\
      --dataset synthetic --method metantk --cells 5 --seed 0 \\
      --prepared data/prepared-smoke/synthetic --out results/smoke/synthetic/metantk/cells5/seed0
"""
import sys
import time
from pathlib import Path

from metantk_nas import cli
from metantk_nas.methods import method
from metantk_nas.config import SEARCHED_METHODS, search_config, stage_config_subset
from metantk_nas.data.prepared import load_split
from metantk_nas.provenance import Provenance, device_name, write_json_atomic
from metantk_nas.search.pruning import PruningSearch
from metantk_nas.search.scoring import Scorer


def main(args, cfg):
    cli.set_threads(args.threads)
    device = cli.resolve_device(cfg)
    sc = search_config(cfg, args.dataset, args.method, args.cells, args.seed)
    out = Path(args.out)
    prov = Provenance("search", {"run": vars(args) | {"configfile": None}, **stage_config_subset(cfg, "search")},
                      seed=args.seed)
    scorer = None
    if method(sc.method).pruned:
        prepared = Path(args.prepared)
        train = load_split(prepared, "train")
        prov.add_inputs([prepared / "manifest.json", prepared / "train_images.npy", prepared / "train_labels.npy"])
        scorer = Scorer(sc, train, device)
    t0 = time.time()
    state_path = out / "search_state.json"
    genotype, state = PruningSearch(sc, scorer, progress=not args.no_progress,
                                     on_candidate=cli.stop_after(args.stop_after, "candidate")).run(state_path)
    prov.extra["networks_per_pass"] = state.networks_per_pass   # the numbers are reproducible for this pass size
    wall = time.time() - t0
    result = {"dataset": args.dataset, "method": sc.method, "cells": sc.cells, "seed": sc.seed,
              "kernel": None if sc.kernel is None else {"inner": sc.kernel.inner, "inner_time": str(sc.kernel.inner_time),
                                                        "reg": sc.kernel.reg},
              "search_config": stage_config_subset(cfg, "search")["search"],
              "networks_per_pass": state.networks_per_pass, "rounds": state.rounds,
              "group": state.group, "mask": state.mask.astype(int).tolist(), "genotype": genotype.to_dict(),
              "genotype_string": genotype.to_darts()}
    write_json_atomic(out / "search.json", result)
    seconds = sum(state.seconds) if state.seconds else wall
    backend = None if method(sc.method).kernel is None else ("coupled" if sc.norm == "batchnorm" else sc.ntk_backend)
    write_json_atomic(out / "cost.json", {"wall_seconds": round(seconds, 3), "device": device_name(),
                                          "ntk_backend": backend,
                                          "device_hours": round(seconds / 3600, 6), "round_seconds": state.seconds,
                                          "resumed_at": state.resumes})
    prov.write([out / "search.json", out / "cost.json"])
    state_path.unlink(missing_ok=True)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    cli.add_run_args(p, SEARCHED_METHODS)
    p.add_argument("--prepared", required=True, help="prepared dataset directory (its train split is used)")
    p.add_argument("--out", required=True, help="output directory")
    cli.add_stop_after(p, "candidate")
    sys.exit(cli.run(main, p))
