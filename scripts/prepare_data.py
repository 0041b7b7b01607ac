#!/usr/bin/env python
"""prepare_data: raw RFS files (or the synthetic generator) -> the prepared, memory-mappable format.

Reads data.datasets.<dataset> from the config, validates every file (a restricted unpickler admits only numpy
arrays and builtin containers), remaps labels to 0..C-1 per split and writes {out}/{split}_images.npy,
{split}_labels.npy and manifest.json (sha256 of every source and output, classes, counts, normalisation).
Re-running on unchanged input changes nothing.

Example:
  .venv/bin/python scripts/prepare_data.py --configfile config/config.yaml config/smoke.yaml \\
      --dataset synthetic --out data/prepared/synthetic
"""
import sys

from metantk_nas import cli
from metantk_nas.data.prepared import prepare_dataset
from metantk_nas.errors import ConfigError


def main(args, cfg):
    datasets = cfg["data"]["datasets"]
    if args.dataset not in datasets:
        raise ConfigError(f"config: data.datasets: no dataset {args.dataset!r} (have {', '.join(datasets)})")
    prepare_dataset(args.dataset, datasets[args.dataset], args.out)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True, help="a key of data.datasets")
    p.add_argument("--out", required=True, help="output directory, e.g. data/prepared/mini")
    sys.exit(cli.run(main, p))
