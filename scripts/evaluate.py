#!/usr/bin/env python
"""evaluate: few-shot evaluation of a trained network on the test classes -> fewshot.json.

For each shot setting: `evaluate.episodes` 5-way episodes fixed by `evaluate.seed`, L2-normalised penultimate
features of the frozen network, logistic regression (C) on the augmented support set, accuracy on the queries.
fewshot.json holds mean, std and 95% CI (in %), the settings and every episode's accuracy.

Example:
  .venv/bin/python scripts/evaluate.py --configfile config/config.yaml config/smoke.yaml \\
      --dataset synthetic --method metantk --cells 5 --seed 0 --model results/smoke/synthetic/metantk/cells5/seed0/model.pt \\
      --genotype results/smoke/synthetic/metantk/cells5/seed0/genotype.json --prepared data/prepared-smoke/synthetic --out results/smoke/synthetic/metantk/cells5/seed0
"""
import json
import sys
from pathlib import Path

from metantk_nas.cli import use_huge_pages

use_huge_pages()   # before torch loads: huge pages for the activations (docs/scaling.md)

import torch  # noqa: E402
from metantk_nas import cli  # noqa: E402
from metantk_nas.config import eval_config, stage_config_subset
from metantk_nas.data.prepared import load_manifest, load_split
from metantk_nas.errors import PipelineError
from metantk_nas.fsl.evaluate import evaluate
from metantk_nas.nas.genotype import load_genotype
from metantk_nas.nas.networks import EvalNet
from metantk_nas.provenance import Provenance, device_name, write_json_atomic


def load_model(path, genotype, channels, cells, n_classes):
    model = EvalNet(genotype, channels, cells, n_classes)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise PipelineError(f"{path}: cannot load model weights ({type(e).__name__}: {str(e)[:160]})") from None
    return model


SHAPE = ("channels", "cells", "n_classes")   # what rebuilds the network, as the training recorded it


def network_shape(model, cfg, cells, n_classes):
    """The network's shape as its training recorded it (metrics.json beside model.pt): the evaluation rebuilds it
    from there; where the run's config disagrees (another train.channels, --cells or number of training classes),
    one line naming both values."""
    path = Path(model).with_name("metrics.json")
    try:
        rec = json.loads(path.read_text())
        shape = {k: int(rec[k]) for k in SHAPE}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{path}: no record of the network's shape ({', '.join(SHAPE)}) beside {model} "
                            f"({type(e).__name__}: {str(e)[:120]}); rerun its training") from None
    ours = {"channels": cfg["train"]["channels"], "cells": cells, "n_classes": n_classes}
    differ = [f"{k} {shape[k]} (metrics.json) vs {ours[k]} ({where})" for k, where in
              (("channels", "train.channels"), ("cells", "--cells"), ("n_classes", "the prepared training classes"))
              if shape[k] != ours[k]]
    if differ:
        raise PipelineError(f"{model}: trained as another network than this run's: {'; '.join(differ)}; rerun its "
                            "training for this config")
    return shape


def main(args, cfg):
    cli.set_threads(args.threads)
    device = cli.resolve_device(cfg)
    ec = eval_config(cfg, cfg["study"]["episodes"] if args.study else None)
    prepared, out = Path(args.prepared), Path(args.out)
    n_classes = len(load_manifest(prepared)["splits"]["train"]["classes"])
    shape = network_shape(args.model, cfg, args.cells, n_classes)
    model = load_model(args.model, load_genotype(args.genotype), shape["channels"], shape["cells"],
                       shape["n_classes"]).to(device)
    test = load_split(prepared, "test")
    prov = Provenance("evaluate", {"run": {k: getattr(args, k) for k in ("dataset", "method", "cells", "seed")},
                                   **stage_config_subset(cfg, "study_evaluate" if args.study else "evaluate")},
                      seed=ec.seed)
    prov.add_inputs([args.model, Path(args.model).with_name("metrics.json"), args.genotype,
                     prepared / "manifest.json", prepared / "test_images.npy",
                     prepared / "test_labels.npy"])
    try:
        result = evaluate(model, test, ec, device, progress=not args.no_progress)
    except FloatingPointError as e:
        raise PipelineError(f"{args.model}: {e}") from None
    summary = {f"acc_{k}": v["mean"] for k, v in result.items()} | {f"ci95_{k}": v["ci95"] for k, v in result.items()}
    write_json_atomic(out / "fewshot.json", summary | {"device": device_name(), "results": result})
    prov.write([out / "fewshot.json"])


if __name__ == "__main__":
    p = cli.parser(__doc__)
    cli.add_run_args(p)
    p.add_argument("--model", required=True, help="model.pt (state_dict)")
    p.add_argument("--genotype", required=True, help="genotype.json")
    p.add_argument("--prepared", required=True, help="prepared dataset directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--study", action="store_true",
                   help="a run of the score-vs-accuracy study: study.episodes episodes (null: evaluate.episodes)")
    sys.exit(cli.run(main, p))
