#!/usr/bin/env python
"""study: the score-vs-accuracy analysis -> Table 3 (study.{tex,md}: 3a, the random sample's correlations, in
study.csv; 3b, the searched cells within the random sample, in searched.csv), the search's stability against
chance (stability.{tex,md,csv}), every distinct architecture's scores and accuracies (architectures.csv), the
correlations with their bootstrap CIs (study.json) and a scatter plot per (dataset, cells, score)
(figures/scatter-*.png).

Reads each study architecture's scores.json (scripts/study_score.py) and fewshot.json (the train and evaluate
stages), and the grid's genotype.json files for the stability table. `snakemake study` runs everything it needs.

Example:
  .venv/bin/python scripts/study.py --configfile config/config.yaml config/smoke.yaml --results results/smoke --out results/smoke/study
"""
import json
import logging
import math
import sys
from pathlib import Path

from metantk_nas import cli
from metantk_nas.methods import RANDOM_METHOD
from metantk_nas.config import (STUDY_METHODS, Run, iter_runs, kernel_spec, stage_config_subset, study_figures,
                                study_run_root, study_runs)
from metantk_nas.nas.genotype import load_genotype
from metantk_nas.provenance import Provenance, write_json_atomic, write_text_atomic
from metantk_nas.report.study import (collect, correlations, distinct, scatter, searched, searched_table, stability,
                                      stability_table, table3, with_rank_sum)

log = logging.getLogger("study")


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def main(args, cfg):
    results, out = Path(args.results), Path(args.out)
    st = cfg["study"]
    shots = cfg["evaluate"]["shots"]
    runs = study_runs(cfg)
    sampled = {Run(d, RANDOM_METHOD, c, st["first_seed"] + i) for d in st["datasets"] for c in st["cells"]
               for i in range(st["architectures"])}
    grid = [r for r in iter_runs(cfg) if r.method in STUDY_METHODS]
    inner = {(r.dataset, r.cells): kernel_spec(cfg, r.dataset, r.cells).inner for r in [*runs, *grid]}
    root = results / study_run_root(cfg)
    df = collect(results, runs, root, shots, sampled)
    arch = with_rank_sum(distinct(df, shots), inner)
    corr = correlations(arch, shots, st["bootstrap"], st["bootstrap_seed"], inner)
    synthetic = any(cfg["data"]["datasets"][d]["format"] == "synthetic" for d in st["datasets"])
    written = []
    genotypes = {}
    for r in grid:
        path = results / r.path / "genotype.json"
        genotypes.setdefault((r.dataset, r.method, r.cells), []).append(load_genotype(path))
    table_a = table3(corr, shots, st["bootstrap"], synthetic)
    table_b = searched_table(searched(arch, shots, inner), shots)
    write_text_atomic(out / "study.tex", table_a.latex() + "\n" + table_b.latex())
    write_text_atomic(out / "study.md", "\n".join(f"**{t.caption}**\n\n{t.markdown()}" for t in (table_a, table_b)))
    write_text_atomic(out / "study.csv", table_a.frame().to_csv(index=False))
    write_text_atomic(out / "searched.csv", table_b.frame().to_csv(index=False))
    stab = stability_table(stability(genotypes, df, inner, len(cfg["search"]["ops"])))
    write_text_atomic(out / "stability.tex", stab.latex())
    write_text_atomic(out / "stability.md", stab.markdown())
    write_text_atomic(out / "stability.csv", stab.frame().to_csv(index=False))
    written += [out / f for f in ("study.tex", "study.md", "study.csv", "searched.csv", "stability.tex",
                                  "stability.md", "stability.csv")]
    plain = arch[[c for c in arch.columns if not c.startswith("repeats_")]]
    write_text_atomic(out / "architectures.csv", plain.to_csv(index=False))
    records = [{k: _finite(v) for k, v in row.items()} for row in corr.to_dict(orient="records")]
    write_json_atomic(out / "study.json", {"study": st, "runs": len(df), "architectures": len(arch),
                                           "correlations": records})
    written += [out / "architectures.csv", out / "study.json"]
    for fig in study_figures(cfg):
        _, d, c, score = Path(fig).stem.split("-", 3)
        scatter(arch, corr, d, int(c), score, shots, out / fig)
        written.append(out / fig)
    prov = Provenance("study", stage_config_subset(cfg, "study"))
    prov.add_inputs([*(results / r.path / "scores.json" for r in runs), *(root / r.path / "fewshot.json" for r in runs),
                     *(results / r.path / "genotype.json" for r in grid)])
    prov.write(written)
    log.info("study written: %s (%d distinct architectures of %d runs)", out, len(arch), len(df))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--results", required=True, help="results/{experiment}")
    p.add_argument("--out", required=True, help="output directory, e.g. results/{experiment}/study")
    sys.exit(cli.run(main, p))
