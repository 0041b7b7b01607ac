#!/usr/bin/env python
"""params: #parameters of the evaluation network (AugmentCNN, C=48 by default) for a genotype, cell counts and
numbers of classes, next to Table 1's figures for the MetaNAS(retrained) cell.

Examples:
  .venv/bin/python scripts/params.py --published metanas_in_v2 --cells 5 8 --classes 64 351
  .venv/bin/python scripts/params.py --genotype results/paper/mini/metantk/cells5/seed0/genotype.json --cells 5 --classes 64
"""
import argparse
import sys
from pathlib import Path

import yaml

from metantk_nas.nas.genotype import Genotype, load_genotype
from metantk_nas.nas.networks import eval_net_parameters

TABLE1_METANAS = {(5, 64): 2.01, (5, 351): 2.17, (8, 64): 3.53, (8, 351): 3.70}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--published", help="a key of config/genotypes.yaml")
    src.add_argument("--genotype", help="a genotype.json")
    p.add_argument("--cells", type=int, nargs="+", default=[5, 8])
    p.add_argument("--classes", type=int, nargs="+", default=[64, 351], help="64 = mini-ImageNet, 351 = tiered")
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--genotypes-file", default="config/genotypes.yaml")
    args = p.parse_args(argv)
    if args.published:
        table = yaml.safe_load(Path(args.genotypes_file).read_text())
        if args.published not in table:
            print(f"error: {args.genotypes_file}: no genotype {args.published!r}", file=sys.stderr)
            return 2
        g = Genotype.from_darts(table[args.published]["genotype"])
    else:
        g = load_genotype(args.genotype)
    print(f"{'cells':>5} {'classes':>7} {'#params':>10}  Table 1 (MetaNAS retrained)")
    for c in args.cells:
        for n in args.classes:
            count = eval_net_parameters(g, args.channels, c, n)
            ref = TABLE1_METANAS.get((c, n)) if args.published == "metanas_in_v2" and args.channels == 48 else None
            print(f"{c:>5} {n:>7} {count / 1e6:>9.3f}M  {'' if ref is None else f'{ref:.2f}M'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
