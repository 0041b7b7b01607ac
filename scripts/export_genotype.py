#!/usr/bin/env python
"""export_genotype: search.json (or a published cell from config/genotypes.yaml) -> genotype.json, the DARTS
Genotype(...) string (genotype.txt) and Fig. 2-style diagrams of the normal and reduction cells (PDF + PNG).
With a parameter budget (--param-budget or export.param_budget_millions) the final edges and ops are chosen by an
integer program (PuLP/CBC) maximising the search's importance under the #params limit; without one the result
is exactly the rank-based genotype.

Examples:
  .venv/bin/python scripts/export_genotype.py --search results/smoke/.../search.json --out results/smoke/.../
  .venv/bin/python scripts/export_genotype.py --published metanas_in_v2 --out /tmp/metanas   # diagram of the MetaNAS v2 cell
"""
import json
import sys
from pathlib import Path

import yaml

from metantk_nas import cli
from metantk_nas.methods import method
from metantk_nas.config import stage_config_subset
from metantk_nas.data.prepared import load_manifest
from metantk_nas.errors import PipelineError
from metantk_nas.search.budget import solve
from metantk_nas.nas.diagram import draw_cell
from metantk_nas.nas.genotype import Genotype
from metantk_nas.provenance import Provenance, write_json_atomic, write_text_atomic


def published(cfg, name):
    table = yaml.safe_load(Path(cfg["tables"]["genotypes"]).read_text())
    if name not in table:
        raise PipelineError(f"{cfg['tables']['genotypes']}: no genotype {name!r} (have {', '.join(table)})")
    entry = table[name]
    return Genotype.from_darts(entry["genotype"]), entry.get("source", "")


def main(args, cfg):
    out = Path(args.out)
    prov = Provenance("export_genotype", {"published": args.published, **stage_config_subset(cfg, "export_genotype")})
    budget = cfg["export"]["param_budget_millions"] if args.param_budget is None else args.param_budget
    extra = {}
    if args.search:
        rec = json.loads(Path(args.search).read_text())
        genotype, source = Genotype.from_dict(rec["genotype"]), f"search {args.search}"
        prov.add_inputs([args.search])
        if budget is not None and method(rec["method"]).pruned:   # a random cell is drawn, not chosen
            if not args.prepared:
                raise PipelineError("a parameter budget needs --prepared (for the number of training classes)")
            n_classes = len(load_manifest(args.prepared)["splits"]["train"]["classes"])
            genotype, extra = solve(rec, cfg["train"]["channels"], rec["cells"], n_classes, budget)
            source += f" under a {budget}M parameter budget"
    else:
        genotype, source = published(cfg, args.published)
        prov.add_inputs([cfg["tables"]["genotypes"]])
    write_json_atomic(out / "genotype.json", {"genotype": genotype.to_dict(), "source": source, **extra})
    write_text_atomic(out / "genotype.txt", genotype.to_darts() + "\n")
    diagrams = [f for cell in ("normal", "reduce") for f in draw_cell(genotype, cell, out / f"cell_{cell}", args.title)]
    prov.write([out / "genotype.json", out / "genotype.txt", *diagrams])


if __name__ == "__main__":
    p = cli.parser(__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--search", help="search.json of a finished search")
    src.add_argument("--published", help="a key of config/genotypes.yaml, e.g. metanas_in_v2")
    p.add_argument("--param-budget", type=float, default=None, metavar="MILLIONS",
                   help="choose edges/ops by an integer program under this #params limit (default: "
                        "export.param_budget_millions; none = the rank-based genotype)")
    p.add_argument("--prepared", help="prepared dataset (needed with a budget: number of training classes)")
    p.add_argument("--title", default="", help="the run, for the diagrams' titles (e.g. 'mini, metantk, 5 cells, seed 0')")
    p.add_argument("--out", required=True, help="output directory")
    sys.exit(cli.run(main, p))
