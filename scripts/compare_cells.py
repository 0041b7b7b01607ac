#!/usr/bin/env python
"""compare_cells: the cells of several genotypes side by side, one row per genotype (normal and reduction cell),
e.g. every method of one (dataset, cells, seed); PDF + PNG, for the Snakemake report.

Example:
  .venv/bin/python scripts/compare_cells.py --title "synthetic, 5 cells, seed 0" --out results/smoke/figures/cells-synthetic-5-0 \\
      --genotypes metantk=results/smoke/synthetic/metantk/cells5/seed0/genotype.json \\
                  metanas=results/smoke/synthetic/metanas/cells5/seed0/genotype.json
"""
import sys

from metantk_nas import cli
from metantk_nas.errors import PipelineError
from metantk_nas.nas.diagram import draw_cells
from metantk_nas.nas.genotype import load_genotype
from metantk_nas.provenance import Provenance


def panels(specs):
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise PipelineError(f"--genotypes {spec!r}: expected NAME=PATH/genotype.json")
        out.append((name, load_genotype(path), path))
    return out


def main(args, cfg):
    rows = panels(args.genotypes)
    prov = Provenance("compare_cells", {"title": args.title, "names": [n for n, _, _ in rows]})
    prov.add_inputs([p for _, _, p in rows])
    written = draw_cells([(n, g) for n, g, _ in rows], args.out, args.title)
    prov.write(written)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--genotypes", nargs="+", required=True, metavar="NAME=PATH",
                   help="one row per genotype, in this order: a name (the method) and its genotype.json")
    p.add_argument("--title", default="", help="the figure's title (dataset, cells, seed)")
    p.add_argument("--out", required=True, help="output path without extension (.pdf and .png are written)")
    sys.exit(cli.run(main, p))
