#!/usr/bin/env python
"""tables: aggregate every fewshot.json / metrics.json / cost.json of the grid into copies of the paper's
Table 1 and Table 2 (LaTeX booktabs + markdown + CSV) and comparison.{md,csv} (ours vs the paper's numbers).

A run that is missing renders as "--" and is listed in a warning; quoted rows come from config/literature.yaml.

Example:
  .venv/bin/python scripts/tables.py --configfile config/config.yaml config/smoke.yaml --results results/smoke --out results/smoke/tables
"""
import logging
import sys
from pathlib import Path

import yaml

from metantk_nas import cli
from metantk_nas.config import iter_runs, stage_config_subset
from metantk_nas.provenance import Provenance, write_text_atomic
from metantk_nas.report.tables import collect, comparison, table1, table2

log = logging.getLogger("tables")


def main(args, cfg):
    results = Path(args.results)
    out = Path(args.out)
    runs = list(iter_runs(cfg))
    lit_path = Path(cfg["tables"]["literature"])
    lit = yaml.safe_load(lit_path.read_text())
    col = collect(results, runs, cfg["evaluate"]["shots"])
    if col.missing:
        log.warning("missing runs (rendered as --): %s", ", ".join(col.missing))
    datasets = cfg["tables"]["datasets"]
    cells = sorted({r.cells for r in runs})
    written = []
    for name, table in (("table1", table1(col, lit, datasets, cells)), ("table2", table2(col, datasets[0], cells))):
        write_text_atomic(out / f"{name}.tex", table.latex())
        write_text_atomic(out / f"{name}.md", table.markdown())
        write_text_atomic(out / f"{name}.csv", table.frame().to_csv(index=False))
        written += [out / f"{name}.{ext}" for ext in ("tex", "md", "csv")]
    comp = comparison(col, lit, datasets, cells)
    write_text_atomic(out / "comparison.csv", comp.to_csv(index=False))
    write_text_atomic(out / "comparison.md", comp.to_markdown(index=False) + "\n")
    written += [out / "comparison.csv", out / "comparison.md"]
    summary = f"Table 1: {out / 'table1.tex'}\nTable 2: {out / 'table2.tex'}\n\n{(out / 'table2.md').read_text()}"
    write_text_atomic(out / "summary.txt", summary)
    written.append(out / "summary.txt")
    prov = Provenance("tables", stage_config_subset(cfg, "tables"))
    prov.add_inputs([lit_path, *col.inputs])
    prov.write(written)
    log.info("tables written: %s", out)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--results", required=True, help="results/{experiment}")
    p.add_argument("--out", required=True, help="output directory, e.g. results/{experiment}/tables")
    sys.exit(cli.run(main, p))
