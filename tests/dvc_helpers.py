"""Helpers of the DVC integration tests (test_dvc.py: one shared repository reproduced by `dvc repro`;
test_dvc_repos.py: the repositories of their own): the venv's dvc called by its path with no venv on PATH, as a user
whose shell never activated it, and a fresh git + DVC repository of the pipeline."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import BIN, ROOT, copy_tree, run_script

VENV = Path(sys.executable).parent.parent
# no venv on PATH, no VIRTUAL_ENV: as a user's shell that never activated it
BARE_ENV = {**{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
            "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN),
            "SLURM_CONF": "/dev/null"}
STUDY = "study/dvc.yaml"


def dvc(wd, *args, check=True, env=None):
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=wd, env={**BARE_ENV, **(env or {})}, capture_output=True,
                          text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)}: " + proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def ran_stages(proc) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout))


def bare(stage: str) -> str:
    """A stage's name without its file (study/dvc.yaml:search@x -> search@x)."""
    return stage.split(":")[-1]


DVC_RUN = ("tests/configs/tiny.yaml", "tests/configs/dvc-run.yaml")   # the config of the repository that is reproduced


def _dvc_repo(dest: Path, configs=DVC_RUN, study=True) -> Path:
    """A fresh git + DVC repository holding the pipeline, with dvc.yaml (and, if ``study``, study/dvc.yaml) generated
    for ``configs`` (over the paper's), and a .venv as `make install` leaves one (a link to this suite's)."""
    dest.mkdir(parents=True, exist_ok=True)
    wd = copy_tree(dest)
    shutil.copytree(ROOT / "src", wd / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (wd / ".venv").symlink_to(VENV)
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q",
                                          "--allow-empty", "-m", "init"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=wd, check=True, env=BARE_ENV, capture_output=True)
    run_script(ROOT / "scripts/make_dvc.py", "--configfile", "config/config.yaml", *configs, "--out", "dvc.yaml",
               "--force", *(["--study"] if study else []), cwd=wd)   # over the copied smoke dvc.yaml
    return wd


def _stages(wd) -> set[str]:
    """Every stage of dvc.yaml and study/dvc.yaml, named as DVC prints them."""
    out = set()
    for path, prefix in (("dvc.yaml", ""), (STUDY, f"{STUDY}:")):
        for name, st in yaml.safe_load((wd / path).read_text())["stages"].items():
            out |= {f"{prefix}{name}@{k}" for k in st["foreach"]} if "foreach" in st else {prefix + name}
    return out


