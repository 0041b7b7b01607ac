# Shared definitions of the DAG: config validation, paths, and the helpers the rules call.
import re
import sys
from pathlib import Path

# The package imports from this tree's src/ when it is not installed (an interpreter of the user's own, such as a
# GPU machine's, run by make gpu-check, which gives the jobs PYTHONPATH=src).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from metantk_nas.config import (
    comparison,
    comparisons,
    iter_runs,
    STUDY_METHODS,
    study_figures,
    study_run_root,
    study_runs,
    stage_config_subset,
    validate_config,
)
from metantk_nas.data.prepared import raw_files
from metantk_nas.errors import ConfigError, DataError
from metantk_nas.methods import PUBLISHED_METHOD, SEARCHED_METHODS
from metantk_nas.provenance import sha256_json
from snakemake.settings.types import DeploymentMethod

try:
    validate_config(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None
if workflow.config_settings.config:
    # the scripts re-read the config files: an override would plan jobs under values they never see
    raise WorkflowError(
        "--config "
        + " ".join(sorted(workflow.config_settings.config))
        + ": overrides are not supported (the stage scripts read the config files); put the keys in an "
        "overlay YAML and add it with --configfile"
    )


def _configfiles():
    """The files Snakemake merged, which the scripts re-read (use config files, not --config overrides)."""
    files = ["config/config.yaml"]
    for p in workflow.overwrite_configfiles:
        path = Path(p).resolve()
        files.append(
            str(path.relative_to(Path.cwd()))
            if path.is_relative_to(Path.cwd())
            else str(p)
        )
    return " ".join(files)


CONFIGFILES = _configfiles()
# The interpreter of the stage scripts: the venv Snakemake runs in, or the rule's conda environment (which has the
# dependencies; the package itself is imported from src/).
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PY = (
    f"env PYTHONPATH={Path(workflow.basedir) / 'src'} python"
    if CONDA
    else sys.executable
)
RES = f"results/{config['experiment']}"
PREP = config["data"]["prepared_root"]
RUNS = list(iter_runs(config))
COMPARISONS = comparisons(config)
RUN_DIR = f"{RES}/{{dataset}}/{{method}}/cells{{cells}}/seed{{seed}}"
SEARCHED = "|".join(SEARCHED_METHODS)  # the methods with a search of their own
CPU_ENV = "../envs/pipeline.yaml"
GPU_ENV = "../envs/pipeline-cuda.yaml"


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    method="[a-z]+",
    cells="[0-9]+",
    seed="[0-9]+",


# Stages that checkpoint and exit 75 on SIGTERM/SIGUSR1 (metantk_nas.preemption).  Their shell commands `exec` the
# script, so the signal and the exit status 75 reach it and Snakemake without a shell in between (bash dies on
# SIGTERM, and its death would end the job step before the script has written its checkpoint).
CHECKPOINTING_STAGES = ("search", "train")


def raw_inputs(wildcards):
    """The raw files of a dataset (none for the synthetic generator, whose config is in the params hash): a changed
    byte reruns prepare_data and everything after it; a missing directory or file stops the DAG, dry run included,
    with one line naming it and the config key that sets it."""
    try:
        return [
            str(p)
            for p in raw_files(
                config["data"]["datasets"][wildcards.dataset], wildcards.dataset
            )
        ]
    except DataError as e:
        raise WorkflowError(str(e)) from None


def stage_resources(stage):
    """The rule's resources, for the SLURM executor plugin and for local runs: partition, runtime, memory, CPUs;
    on GPU stages `gpu: 1` (sbatch --gpus=1, or --gpus=<type>:1 with resources.gpu_type; locally,
    `--resources gpu=K` runs at most K of them at once); the account; and slurm_extra: the early-warning signal
    followed by the stage's own sbatch flags (resources.stages.<stage>.extra), so that neither replaces the other.
    """
    res_cfg = config["resources"]
    r = res_cfg["stages"][stage]
    res = {
        "runtime": r["runtime"],
        "mem_mb": r["mem_mb"],
        "cpus_per_task": r["cpus"],
        "slurm_partition": res_cfg["gpu_partition" if r["gpu"] else "cpu_partition"],
    }
    if res_cfg["account"]:
        res["slurm_account"] = res_cfg["account"]
    if r["gpu"]:
        res["gpu"] = 1
        if res_cfg["gpu_type"]:
            res["gpu_model"] = res_cfg["gpu_type"]
    extra = []
    warn = res_cfg["signal_before_limit"]
    if warn and stage in CHECKPOINTING_STAGES:
        # SLURM signals every process of the job step: the inner Snakemake (under srun) and the script.  SIGTERM,
        # not SIGUSR1: Snakemake handles SIGTERM by waiting for its running job, SIGUSR1 would kill it (and with
        # it the step) mid-checkpoint.  The script checkpoints and exits 75; Snakemake's retry resumes it.
        extra.append(f"--signal=TERM@{warn}")
    if r.get("extra"):
        _check_sbatch_extra(stage, r["extra"])
        extra.append(r["extra"])
    if extra:
        res["slurm_extra"] = " ".join(extra)
    return res


def _check_sbatch_extra(stage, extra):
    """One line naming the key when resources.stages.<stage>.extra sets a flag the SLURM plugin manages itself."""
    try:
        from snakemake_executor_plugin_slurm.validation import (
            get_forbidden_slurm_options,
        )
    except ImportError:  # no SLURM plugin: the flags are never used
        return
    for pattern, name in get_forbidden_slurm_options().items():
        if re.search(pattern, extra):
            raise WorkflowError(
                f"config: resources.stages.{stage}.extra: {extra!r} sets the {name}, which the SLURM executor "
                "plugin sets itself (account: resources.account; GPU type: resources.gpu_type; other plugin "
                "resources such as constraint or qos: set-resources in your profile)"
            )


def stage_threads(stage):
    return config["resources"]["stages"][stage]["cpus"]


def stage_env(stage):
    """The rule's software environment for --software-deployment-method conda (GPU stages: a CUDA torch)."""
    return GPU_ENV if config["resources"]["stages"][stage]["gpu"] else CPU_ENV


def params_hash(stage, dataset=None):
    """Changes to the config keys a stage reads rerun it (Snakemake's params rerun trigger)."""
    return sha256_json(stage_config_subset(config, stage, dataset))[:16]


def run_dir(wildcards):
    return RUN_DIR.format(**wildcards)


def prepared_dir(wildcards, input):
    """The prepared dataset directory, from the rule's manifest input (no hard-coded path prefix)."""
    return str(Path(input.data).parent)


def output_dir(wildcards, output):
    return str(Path(output[0]).parent)


def results_dir(wildcards, output):
    """results/{experiment}, the parent of the tables' directory."""
    return str(Path(output[0]).parents[1])


def compared(wildcards):
    """The methods of the grid at the figure's (dataset, cells, seed)."""
    try:
        return comparison(
            config, wildcards.dataset, int(wildcards.cells), int(wildcards.seed)
        )
    except ConfigError as e:
        raise WorkflowError(str(e)) from None


# The score-vs-accuracy study (study.smk; docs/study.md)
STUDY_RUNS = study_runs(config)
STUDY_GRID = [r for r in RUNS if r.method in STUDY_METHODS]
STUDY_TREE = f"{RES}/{study_run_root(config)}".rstrip("/")
STUDY_OUT = f"{RES}/study"
STUDY_RUN_DIR = f"{RES}/study-runs/{{dataset}}/{{method}}/cells{{cells}}/seed{{seed}}"
STUDY_TABLES = [
    *(f"{n}.{e}" for n in ("study", "stability") for e in ("tex", "md")),
    "architectures.csv",
    "study.json",
]


def study_run_dir(wildcards):
    return STUDY_RUN_DIR.format(**wildcards)


def scatter_subcategory(figure):
    """The report subcategory of figures/scatter-{dataset}-{cells}-{score}.png: "{dataset} {cells} cells"."""
    _, dataset, cells, _ = Path(figure).stem.split("-", 3)
    return f"{dataset} {cells} cells"
