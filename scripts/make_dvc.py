#!/usr/bin/env python
"""make_dvc: write dvc.yaml for a config: the same stages as the Snakemake DAG, generated over the grid with
`foreach` (stage names like train@synthetic-metantk-5-0): dvc.yaml holds the tables DAG (`dvc repro`). With --study
it also writes study/dvc.yaml, the score-vs-accuracy study (`dvc repro study/dvc.yaml`); the study is opt-in because
DVC's `dvc status` and `dvc repro --all-pipelines` take in every dvc.yaml of the repository, so a study pipeline
that exists before it has run keeps them from ever being clean. Once study/dvc.yaml exists, every later run
rewrites it for its config too. Each stage's `params` names the config keys that decide its results
(metantk_nas.config.STAGE_PARAMS), so changing e.g. train.recipes reruns only train, evaluate and tables.

Example (the checked-in dvc.yaml is generated for the smoke config):
  .venv/bin/python scripts/make_dvc.py --configfile config/config.yaml config/smoke.yaml --out dvc.yaml
  .venv/bin/python scripts/make_dvc.py --configfile config/config.yaml config/smoke.yaml --study   # and the study's
For the paper grid: --configfile config/config.yaml --force (each prepare_data stage depends on its raw dataset
directory; --force: the checked-in dvc.yaml, generated from the smoke config, is replaced only when asked).
"""
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from metantk_nas import cli
from metantk_nas.methods import method
from metantk_nas.errors import PipelineError
from metantk_nas.config import (STUDY_METHODS, comparisons, iter_runs, present_params, study_reuses_grid,
                                study_run_root, study_runs)
from metantk_nas.provenance import PROV_SUFFIX, write_text_atomic

log = logging.getLogger("make_dvc")

# The stages run through scripts/py, the project's interpreter found without PATH (however DVC is started).
PY = "scripts/py"


def kept(*paths, **flags):
    """Outputs that ``dvc repro`` never deletes before it runs their stage (``persist``): DVC removes a stage's
    outputs before its command starts, so a command that cannot start (no interpreter, a missing package, a bad
    config) would otherwise lose finished work that is not in DVC's cache (e.g. made by Snakemake).  Every stage
    writes its outputs atomically, so a kept output is replaced only by a finished one."""
    return [{p: {"persist": True, **flags}} for p in paths]


def with_provenance(*files):
    """``files`` and the provenance record beside each (``<file>.prov.json``), all kept: DVC caches and pushes the
    records with the artifacts, so a clone that pulls them can audit every number (scripts/audit.py)."""
    return kept(*files) + provenance(*files)


def provenance(*files):
    return kept(*(f"{f}{PROV_SUFFIX}" for f in files))


def stage_params(parsed, stage):
    """Per config file ({path: its parsed YAML}), the keys of STAGE_PARAMS[stage] that the file sets (DVC
    refuses keys a file lacks)."""
    return [{f: keys} for f, content in parsed.items() if (keys := present_params(content, stage))]


def build(cfg, configfiles) -> tuple[dict, dict]:
    """(dvc.yaml, study/dvc.yaml): the tables DAG, the stages of Snakemake's default target, and the study's own
    stages (the random cells it adds, their training where the study reuses the grid's tree, the scores and the
    analysis).  Plain `dvc repro` reproduces ./dvc.yaml; `dvc repro study/dvc.yaml` the study."""
    cf = " ".join(configfiles)
    res = f"results/{cfg['experiment']}"
    prep = cfg["data"]["prepared_root"]
    runs = list(iter_runs(cfg))
    study = study_runs(cfg)
    extra = [r for r in study if r not in runs]   # the study's own architectures (its random cells)
    reuse = study_reuses_grid(cfg)
    grid_datasets = sorted({r.dataset for r in runs})
    parsed = {f: yaml.safe_load(Path(f).read_text()) or {} for f in configfiles}
    ctx = Context(cfg, cf, res, prep, parsed)

    main = run_stages(ctx, grid_datasets, runs, runs, metrics=True)
    main["tables"] = {
        "cmd": f"{PY} scripts/tables.py --configfile {cf} --results {res} --out {res}/tables",
        "deps": ["scripts/tables.py", "src/metantk_nas/report/tables.py", cfg["tables"]["literature"],
                 *[f"{res}/{r.path}/fewshot.json" for r in runs], *[f"{res}/{r.path}/metrics.json" for r in runs]],
        "params": stage_params(parsed, "tables"),
        "outs": kept(f"{res}/tables")}
    for c in comparisons(cfg):   # unrolled: a foreach item cannot give a stage a list of deps of its own length
        genotypes = {m: f"{res}/{c.dataset}/{m}/cells{c.cells}/seed{c.seed}/genotype.json" for m in c.methods}
        stem = f"{res}/{c.stem}"
        main[f"compare_cells-{c.dataset}-{c.cells}-{c.seed}"] = {
            "cmd": f"{PY} scripts/compare_cells.py --configfile {cf} --genotypes "
                   + " ".join(f"{m}={p}" for m, p in genotypes.items())
                   + f" --title '{c.dataset}, {c.cells} cells, seed {c.seed}: every method' --out {stem}",
            "deps": ["scripts/compare_cells.py", "src/metantk_nas/nas/diagram.py", *genotypes.values()],
            "outs": with_provenance(f"{stem}.png", f"{stem}.pdf")}
    study_datasets = sorted({r.dataset for r in study} - set(grid_datasets))
    side = run_stages(ctx, study_datasets, extra, extra if reuse else [], metrics=False)
    side |= study_stages(ctx, study)
    for stage in side.values():   # study/dvc.yaml's stages run from the repository root, as the others
        (stage["do"] if "foreach" in stage else stage)["wdir"] = ".."
    return {"stages": main}, {"stages": side}


@dataclass(frozen=True)
class Context:
    cfg: dict
    cf: str          # the config files, as the scripts take them
    res: str         # results/{experiment}
    prep: str        # the prepared-data root
    parsed: dict     # {config file: its parsed YAML}

    def items(self, runs, tree=None):
        return {r.tag: {"dataset": r.dataset, "method": r.method, "cells": r.cells, "seed": r.seed,
                        "dir": f"{self.res}/{r.path}", **({"sdir": f"{tree}/{r.path}"} if tree else {})} for r in runs}


TITLE = "--title '${item.dataset}, ${item.method}, ${item.cells} cells, seed ${item.seed}'"
RUN_ARGS = "--dataset ${item.dataset} --method ${item.method} --cells ${item.cells} --seed ${item.seed} --no-progress"


def raw_dep(ds_cfg) -> str:
    """What prepare_data reads: the raw dataset directory, or for the synthetic generator its code (its config is
    in the stage's params)."""
    return "src/metantk_nas/data/synthetic.py" if ds_cfg["format"] == "synthetic" else ds_cfg["source"]


def raw_key(ds_cfg, name: str) -> str:
    """The config key that sets what prepare_data reads (DVC's own messages name only the path)."""
    return f"data.datasets.{name}" if ds_cfg["format"] == "synthetic" else f"data.datasets.{name}.source"


def run_stages(ctx: Context, datasets, searched_runs, trained_runs, metrics: bool) -> dict:
    """prepare_data of ``datasets``; search and export of ``searched_runs`` (the published cell for metanas);
    train and evaluate of ``trained_runs`` (evaluate's fewshot.json a DVC metric when ``metrics``)."""
    cf, prep, parsed = ctx.cf, ctx.prep, ctx.parsed
    searched = {k: v for k, v in ctx.items(searched_runs).items() if method(v["method"]).searched}
    trained = ctx.items(trained_runs)
    published = {k: v for k, v in trained.items() if not method(v["method"]).searched}
    prepared = [f"{prep}/${{key}}/{s}_{k}.npy" for s in ("train", "val", "test") for k in ("images", "labels")]
    stages = {}
    if datasets:
        stages["prepare_data"] = {"foreach": {d: {"raw": raw_dep(ctx.cfg["data"]["datasets"][d]),
                                                  "key": raw_key(ctx.cfg["data"]["datasets"][d], d)} for d in datasets},
                                  "do": {
            "desc": "reads ${item.raw} (config key ${item.key})",   # `dvc stage list` prints it
            "cmd": f"{PY} scripts/prepare_data.py --configfile {cf} --dataset ${{key}} --out {prep}/${{key}}",
            "deps": ["scripts/prepare_data.py", "src/metantk_nas/data", "${item.raw}"],
            "params": stage_params(parsed, "prepare_data"),
            "outs": with_provenance(f"{prep}/${{key}}/manifest.json", *prepared)}}
    if searched:
        stages["search"] = {"foreach": searched, "do": {
            "cmd": f"{PY} scripts/search.py --configfile {cf} {RUN_ARGS} --prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
            "deps": ["scripts/search.py", "src/metantk_nas/search", "src/metantk_nas/kernels", "src/metantk_nas/nas",
                     f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "search"),
            "outs": with_provenance("${item.dir}/search.json", "${item.dir}/cost.json")}}
        stages["export_genotype"] = {"foreach": searched, "do": {
            "cmd": f"{PY} scripts/export_genotype.py --configfile {cf} --search ${{item.dir}}/search.json "
                   f"--prepared {prep}/${{item.dataset}} --out ${{item.dir}} {TITLE}",
            "deps": ["scripts/export_genotype.py", "${item.dir}/search.json", f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "export_genotype"),
            "outs": with_provenance("${item.dir}/genotype.json", "${item.dir}/genotype.txt", "${item.dir}/cell_normal.png")}}
    if trained:
        stages["train"] = {"foreach": trained, "do": {
            "cmd": f"{PY} scripts/train.py --configfile {cf} {RUN_ARGS} --genotype ${{item.dir}}/genotype.json "
                   f"--prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
            "deps": ["scripts/train.py", "src/metantk_nas/fsl/train.py", "${item.dir}/genotype.json",
                     f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "train"),
            "outs": with_provenance("${item.dir}/model.pt", "${item.dir}/train_curve.png", "${item.dir}/metrics.json")
            + provenance("${item.dir}/train_log.csv"),
            "plots": kept("${item.dir}/train_log.csv", x="epoch", y="loss")}}
        fewshot = kept("${item.dir}/fewshot.json")
        stages["evaluate"] = {"foreach": trained, "do": {
            "cmd": f"{PY} scripts/evaluate.py --configfile {cf} {RUN_ARGS} --model ${{item.dir}}/model.pt "
                   f"--genotype ${{item.dir}}/genotype.json --prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
            "deps": ["scripts/evaluate.py", "src/metantk_nas/fsl/evaluate.py", "${item.dir}/model.pt",
                     "${item.dir}/metrics.json", "${item.dir}/genotype.json", f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "evaluate"),
            **({"metrics": fewshot, "outs": provenance("${item.dir}/fewshot.json")} if metrics
               else {"outs": with_provenance("${item.dir}/fewshot.json")})}}
    if published:
        stages["published_genotype"] = {"foreach": published, "do": {
            "cmd": f"{PY} scripts/export_genotype.py --configfile {cf} --published metanas_in_v2 --out ${{item.dir}} {TITLE}",
            "deps": ["scripts/export_genotype.py", ctx.cfg["tables"]["genotypes"]],
            "outs": with_provenance("${item.dir}/genotype.json", "${item.dir}/genotype.txt", "${item.dir}/cell_normal.png")}}
    return stages


def study_stages(ctx: Context, study) -> dict:
    """The score-vs-accuracy study (`dvc repro study/dvc.yaml`): scores per architecture, the study's own training
    and evaluation when it does not reuse the grid's runs, and the analysis."""
    cfg, cf, res, prep, parsed = ctx.cfg, ctx.cf, ctx.res, ctx.prep, ctx.parsed
    tree = f"{res}/{study_run_root(cfg)}".rstrip("/")
    out = f"{res}/study"
    grid = [r for r in iter_runs(cfg) if r.method in STUDY_METHODS]
    stages = {"study_score": {"foreach": ctx.items(study), "do": {
        "cmd": f"{PY} scripts/study_score.py --configfile {cf} {RUN_ARGS} --genotype ${{item.dir}}/genotype.json "
               f"--prepared {prep}/${{item.dataset}} --out ${{item.dir}}",
        "deps": ["scripts/study_score.py", "src/metantk_nas/search", "src/metantk_nas/kernels", "src/metantk_nas/nas",
                 "${item.dir}/genotype.json", f"{prep}/${{item.dataset}}/manifest.json"],
        "params": stage_params(parsed, "study_score"),
        "outs": with_provenance("${item.dir}/scores.json")}}}
    if not study_reuses_grid(cfg):
        runs = ctx.items(study, tree)
        stages["study_train"] = {"foreach": runs, "do": {
            "cmd": f"{PY} scripts/train.py --configfile {cf} {RUN_ARGS} --genotype ${{item.dir}}/genotype.json "
                   f"--prepared {prep}/${{item.dataset}} --out ${{item.sdir}} --study",
            "deps": ["scripts/train.py", "src/metantk_nas/fsl/train.py", "${item.dir}/genotype.json",
                     f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "study_train"),
            "outs": with_provenance("${item.sdir}/model.pt", "${item.sdir}/train_log.csv",
                                    "${item.sdir}/train_curve.png", "${item.sdir}/metrics.json")}}
        stages["study_evaluate"] = {"foreach": runs, "do": {
            "cmd": f"{PY} scripts/evaluate.py --configfile {cf} {RUN_ARGS} --model ${{item.sdir}}/model.pt "
                   f"--genotype ${{item.dir}}/genotype.json --prepared {prep}/${{item.dataset}} --out ${{item.sdir}} --study",
            "deps": ["scripts/evaluate.py", "src/metantk_nas/fsl/evaluate.py", "${item.sdir}/model.pt",
                     "${item.sdir}/metrics.json", "${item.dir}/genotype.json",
                     f"{prep}/${{item.dataset}}/manifest.json"],
            "params": stage_params(parsed, "study_evaluate"),
            "outs": with_provenance("${item.sdir}/fewshot.json")}}
    stages["study"] = {
        "cmd": f"{PY} scripts/study.py --configfile {cf} --results {res} --out {out}",
        "deps": ["scripts/study.py", "src/metantk_nas/report/study.py",
                 *[f"{res}/{r.path}/scores.json" for r in study], *[f"{tree}/{r.path}/fewshot.json" for r in study],
                 *[f"{res}/{r.path}/genotype.json" for r in grid]],
        "params": stage_params(parsed, "study"),
        "outs": kept(out)}
    return stages


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def generated_from(path: Path) -> list[str] | None:
    """The config files an existing dvc.yaml was generated from (its first line), or None."""
    if not path.exists():
        return None
    first = path.read_text().split("\n", 1)[0]
    m = re.match(r"# Generated by scripts/make_dvc\.py from (.+); do not edit by hand\.$", first)
    return m.group(1).split() if m else None


def main(args, cfg):
    """Writes --out (the tables DAG) and, with --study or when it already exists, study/dvc.yaml beside it."""
    main_stages, study = build(cfg, args.configfile)
    out = Path(args.out)
    made_from = generated_from(out)
    if made_from is not None and made_from != list(args.configfile) and not args.force:
        raise PipelineError(f"{out} was generated from {' '.join(made_from)}, this run's config is "
                            f"{' '.join(args.configfile)}: add --force to replace it, or write another file (--out)")
    study_path = out.parent / "study" / "dvc.yaml"
    header = ("# Generated by scripts/make_dvc.py from " + " ".join(args.configfile) + "; do not edit by hand.\n"
              "# The same DAG as the Snakefile (tests/test_dvc.py checks they agree).\n")
    files = [(out, main_stages, "# The tables DAG (Snakemake's default target): `dvc repro`.\n")]
    if args.study or study_path.exists():
        files.append((study_path, study,
                      "# The score-vs-accuracy study (`snakemake study`): `dvc repro study/dvc.yaml`.\n"))
    for path, stages, note in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, header + note + yaml.dump(stages, Dumper=_NoAliasDumper, sort_keys=False, width=120))
        log.info("wrote %s (%d stages)", path, len(stages["stages"]))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--out", default="dvc.yaml", help="the tables DAG's dvc.yaml (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="replace an --out generated from other config files (the checked-in dvc.yaml is the smoke "
                        "config's)")
    p.add_argument("--study", action="store_true",
                   help="also write study/dvc.yaml beside --out: the score-vs-accuracy study's stages (rewritten "
                        "without this flag too once it exists)")
    sys.exit(cli.run(main, p))
