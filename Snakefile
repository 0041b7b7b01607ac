# MetaNTK-NAS reproduction DAG. What runs is decided by the config (see config/README.md), never by editing rules:
#   snakemake --cores 2 --configfile config/smoke.yaml     # the embedded synthetic demo (what `make demo` runs)
#   snakemake --profile slurm                               # the paper grid on a SLURM cluster
import sys
from pathlib import Path

from metantk_nas.config import iter_runs, stage_config_subset, validate_config
from metantk_nas.errors import ConfigError
from metantk_nas.provenance import sha256_json

configfile: "config/config.yaml"
report: "workflow/report/workflow.rst"

try:
    validate_config(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

# The scripts re-read exactly the files Snakemake merged (use config files, not --config overrides).
CONFIGFILES = " ".join(["config/config.yaml"] + [str(Path(p).resolve().relative_to(Path.cwd()))
                        if Path(p).resolve().is_relative_to(Path.cwd()) else str(p)
                        for p in workflow.overwrite_configfiles])
PY = sys.executable
RES = f"results/{config['experiment']}"
PREP = config["data"]["prepared_root"]
RUNS = list(iter_runs(config))
RUN_DIR = RES + "/{dataset}/{method}/cells{cells}/seed{seed}"
SEARCHED = "metantk|tenas|linreg|random"

wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    cells="[0-9]+",
    seed="[0-9]+",


def stage_resources(stage):
    r = config["resources"]["stages"][stage]
    res = {"runtime": r["runtime"], "mem_mb": r["mem_mb"], "cpus_per_task": r["cpus"],
           "slurm_partition": config["resources"]["gpu_partition" if r["gpu"] else "cpu_partition"]}
    if r["gpu"]:
        res["gres"] = "gpu:1"
    return res


def stage_threads(stage):
    return config["resources"]["stages"][stage]["cpus"]


def params_hash(stage, dataset=None):
    """Changes to the config keys a stage reads rerun it (Snakemake's params rerun trigger)."""
    return sha256_json(stage_config_subset(config, stage, dataset))[:16]


include: "workflow/rules/data.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RES}/tables/table1.tex",
        f"{RES}/tables/table2.tex",
