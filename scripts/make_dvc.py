#!/usr/bin/env python
"""make_dvc: write dvc.yaml for a config: the same stages as the Snakemake DAG, generated over the grid with
`foreach` (stage names like train@synthetic-metantk-5-0), and the score-vs-accuracy study (`dvc repro study`). Each stage's `params` names exactly the config sections
it reads (metantk_nas.config.STAGE_PARAMS), so changing e.g. train.recipes reruns only train, evaluate and tables.

Example (the checked-in dvc.yaml is generated for the smoke config):
  python scripts/make_dvc.py --configfile config/config.yaml config/smoke.yaml --out dvc.yaml
For the paper grid: --configfile config/config.yaml (then `dvc add` the raw dataset directories, see README).
"""
import sys
from pathlib import Path

import yaml

from metantk_nas import cli
from metantk_nas.config import (STUDY_METHODS, comparisons, iter_runs, present_params, study_reuses_grid,
                                study_run_root, study_runs)
from metantk_nas.provenance import write_text_atomic

PY = "python"


def stage_params(parsed, stage):
    """Per config file ({path: its parsed YAML}), the keys of STAGE_PARAMS[stage] that the file sets (DVC
    refuses keys a file lacks)."""
    return [{f: keys} for f, content in parsed.items() if (keys := present_params(content, stage))]


def build(cfg, configfiles):
    cf = " ".join(configfiles)
    res = f"results/{cfg['experiment']}"
    prep = cfg["data"]["prepared_root"]
    runs = list(iter_runs(cfg))
    study = study_runs(cfg)
    reuse = study_reuses_grid(cfg)
    datasets = sorted({r.dataset for r in [*runs, *study]})

    def items(rs, tree=None):
        return {r.tag: {"dataset": r.dataset, "method": r.method, "cells": r.cells, "seed": r.seed,
                        "dir": f"{res}/{r.path}", **({"sdir": f"{tree}/{r.path}"} if tree else {})} for r in rs}

    # the study's random cells are runs of the grid's tree (searched, and with the full recipe trained there too)
    by = items(dict.fromkeys([*runs, *study]) if reuse else runs)
    searched = {k: v for k, v in items(dict.fromkeys([*runs, *study])).items() if v["method"] != "metanas"}
    published = {k: v for k, v in by.items() if v["method"] == "metanas"}
    title = "--title '${item.dataset}, ${item.method}, ${item.cells} cells, seed ${item.seed}'"
    run_args = "--dataset ${item.dataset} --method ${item.method} --cells ${item.cells} --seed ${item.seed} --no-progress"
    parsed = {f: yaml.safe_load(Path(f).read_text()) or {} for f in configfiles}
    prepared = [f"{prep}/${{item}}/{s}_{k}.npy" for s in ("train", "val", "test") for k in ("images", "labels")]
    stages = {
        "prepare_data": {"foreach": datasets, "do": {
            "cmd": f"{PY} scripts/prepare_data.py --configfile {cf} --dataset ${{item}} --out {prep}/${{item}}",
            "deps": ["scripts/prepare_data.py", "src/metantk_nas/data"],
            "params": stage_params(parsed, "prepare_data"),
            "outs": [f"{prep}/${{item}}/manifest.json", *prepared]}},
        "search": {"foreach": searched, "do": {
            "cmd": f"{PY} scripts/search.py --configfile {cf} {run_args} --prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
            "deps": ["scripts/search.py", "src/metantk_nas/search", "src/metantk_nas/kernels", "src/metantk_nas/nas",
                     f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "search"),
            "outs": ["${item.dir}/search.json", "${item.dir}/cost.json"]}},
        "export_genotype": {"foreach": searched, "do": {
            "cmd": f"{PY} scripts/export_genotype.py --configfile {cf} --search ${{item.dir}}/search.json "
                   f"--prepared {prep}/${{item.dataset}} --out ${{item.dir}} {title}",
            "deps": ["scripts/export_genotype.py", "${item.dir}/search.json", f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "export_genotype"),
            "outs": ["${item.dir}/genotype.json", "${item.dir}/genotype.txt", "${item.dir}/cell_normal.png"]}},
        "train": {"foreach": by, "do": {
            "cmd": f"{PY} scripts/train.py --configfile {cf} {run_args} --genotype ${{item.dir}}/genotype.json "
                   f"--prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
            "deps": ["scripts/train.py", "src/metantk_nas/fsl/train.py", "${item.dir}/genotype.json",
                     f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "train"),
            "outs": ["${item.dir}/model.pt", "${item.dir}/train_curve.png", "${item.dir}/metrics.json"],
            "plots": [{"${item.dir}/train_log.csv": {"x": "epoch", "y": "loss"}}]}},
        "evaluate": {"foreach": by, "do": {
            "cmd": f"{PY} scripts/evaluate.py --configfile {cf} {run_args} --model ${{item.dir}}/model.pt "
                   f"--genotype ${{item.dir}}/genotype.json --prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
            "deps": ["scripts/evaluate.py", "src/metantk_nas/fsl/evaluate.py", "${item.dir}/model.pt",
                     "${item.dir}/genotype.json", f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "evaluate"),
            "metrics": ["${item.dir}/fewshot.json"]}},
        "tables": {
            "cmd": f"{PY} scripts/tables.py --configfile {cf} --results {res} --out {res}/tables",
            "deps": ["scripts/tables.py", "src/metantk_nas/report/tables.py", cfg["tables"]["literature"],
                     *[f"{v['dir']}/fewshot.json" for v in by.values()], *[f"{v['dir']}/metrics.json" for v in by.values()]],
            "params": stage_params(parsed, "tables"),
            "outs": [f"{res}/tables"]},
    }
    stages |= study_stages(cfg, cf, parsed, res, prep, study, items, run_args)
    for c in comparisons(cfg):   # unrolled: a foreach item cannot give a stage a list of deps of its own length
        genotypes = {m: f"{res}/{c.dataset}/{m}/cells{c.cells}/seed{c.seed}/genotype.json" for m in c.methods}
        stem = f"{res}/{c.stem}"
        stages[f"compare_cells-{c.dataset}-{c.cells}-{c.seed}"] = {
            "cmd": f"{PY} scripts/compare_cells.py --configfile {cf} --genotypes "
                   + " ".join(f"{m}={p}" for m, p in genotypes.items())
                   + f" --title '{c.dataset}, {c.cells} cells, seed {c.seed}: every method' --out {stem}",
            "deps": ["scripts/compare_cells.py", "src/metantk_nas/nas/diagram.py", *genotypes.values()],
            "outs": [f"{stem}.png", f"{stem}.pdf"]}
    if published:
        stages["published_genotype"] = {"foreach": published, "do": {
            "cmd": f"{PY} scripts/export_genotype.py --configfile {cf} --published metanas_in_v2 --out ${{item.dir}} {title}",
            "deps": ["scripts/export_genotype.py", cfg["tables"]["genotypes"]],
            "outs": ["${item.dir}/genotype.json", "${item.dir}/genotype.txt", "${item.dir}/cell_normal.png"]}}
    return {"stages": stages}


def study_stages(cfg, cf, parsed, res, prep, study, items, run_args):
    """The score-vs-accuracy study (`dvc repro study`): scores per architecture, the study's own training and
    evaluation when it does not reuse the grid's runs, and the analysis."""
    tree = f"{res}/{study_run_root(cfg)}".rstrip("/")
    out = f"{res}/study"
    grid = [r for r in iter_runs(cfg) if r.method in STUDY_METHODS]
    stages = {"study_score": {"foreach": items(study), "do": {
        "cmd": f"{PY} scripts/study_score.py --configfile {cf} {run_args} --genotype ${{item.dir}}/genotype.json "
               f"--prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
        "deps": ["scripts/study_score.py", "src/metantk_nas/search", "src/metantk_nas/kernels", "src/metantk_nas/nas",
                 "${item.dir}/genotype.json", f"{prep}/${{item.dataset}}/manifest.json"],
        "params": stage_params(parsed, "study_score"),
        "outs": ["${item.dir}/scores.json"]}}}
    if not study_reuses_grid(cfg):
        runs = items(study, tree)
        stages["study_train"] = {"foreach": runs, "do": {
            "cmd": f"{PY} scripts/train.py --configfile {cf} {run_args} --genotype ${{item.dir}}/genotype.json "
                   f"--prepared {prep}/${{item.dataset}} --out ${{item.sdir}} --study",
            "deps": ["scripts/train.py", "src/metantk_nas/fsl/train.py", "${item.dir}/genotype.json",
                     f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "study_train"),
            "outs": ["${item.sdir}/model.pt", "${item.sdir}/train_log.csv", "${item.sdir}/train_curve.png",
                     "${item.sdir}/metrics.json"]}}
        stages["study_evaluate"] = {"foreach": runs, "do": {
            "cmd": f"{PY} scripts/evaluate.py --configfile {cf} {run_args} --model ${{item.sdir}}/model.pt "
                   f"--genotype ${{item.dir}}/genotype.json --prepared {prep}/${{item.dataset}} --out ${{item.sdir}} --study",
            "deps": ["scripts/evaluate.py", "src/metantk_nas/fsl/evaluate.py", "${item.sdir}/model.pt",
                     "${item.dir}/genotype.json", f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "study_evaluate"),
            "outs": ["${item.sdir}/fewshot.json"]}}
    stages["study"] = {
        "cmd": f"{PY} scripts/study.py --configfile {cf} --results {res} --out {out}",
        "deps": ["scripts/study.py", "src/metantk_nas/report/study.py",
                 *[f"{res}/{r.path}/scores.json" for r in study], *[f"{tree}/{r.path}/fewshot.json" for r in study],
                 *[f"{res}/{r.path}/genotype.json" for r in grid]],
        "params": stage_params(parsed, "study"),
        "outs": [out]}
    return stages


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def main(args, cfg):
    header = ("# Generated by scripts/make_dvc.py from " + " ".join(args.configfile) + "; do not edit by hand.\n"
              "# The same DAG as the Snakefile (tests/test_workflow.py checks they agree).\n")
    write_text_atomic(args.out, header + yaml.dump(build(cfg, args.configfile), Dumper=_NoAliasDumper, sort_keys=False, width=120))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--out", default="dvc.yaml")
    sys.exit(cli.run(main, p))
