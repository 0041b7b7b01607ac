"""The test suite's helpers, in one module (fixtures and pytest's hooks stay in conftest.py): paths and
interpreters, fabricated raw files, the pipeline's tree in a scratch folder, Snakemake, DVC and stage scripts run as a
user runs them, small search configs, a LaTeX compile, the geometry of drawn figures."""
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip locally when a system tool is missing; under CI=true integration tests never skip, they fail."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def write_pickle(path: Path, obj, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def fake_images(rng, n, size):
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


BIN = Path(sys.executable).parent           # the venv's snakemake, dvc, snakefmt
# Snakemake and DVC run locally here (test_slurm.py has its own environment).  SLURM_CONF=/dev/null: the SLURM executor
# plugin runs `scontrol show config` whenever Snakemake starts, and where SLURM's client is installed but no
# controller is up (CI, outside test_slurm.py) that call waits 9 s for one; with an empty config it fails at once.
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "SLURM_CONF": "/dev/null"}
TREE = ["Snakefile", "workflow", "config", "scripts", "tests/configs", "dvc.yaml", ".dvcignore"]


def copy_tree(dest: Path) -> Path:
    """The pipeline's files (not the package: the venv's editable install, or PYTHONPATH) under ``dest``."""
    for name in TREE:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def placeholder_raw(wd: Path) -> Path:
    """Empty files where the paper config expects the raw RFS datasets (data/raw/...): a dry run of the paper grid
    checks that they exist (prepare_data's input), and reads none."""
    from metantk_nas.data.readers import MINI_FILES, SPLITS

    names = {"miniImageNet": list(MINI_FILES.values()),
             "tieredImageNet": [f"{s}_{k}" for s in SPLITS for k in ("images.npz", "labels.pkl")]}
    for folder, files in names.items():
        (wd / "data/raw" / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            (wd / "data/raw" / folder / f).touch()
    return wd


def snakemake(*args, cwd=ROOT, check=True):
    proc = subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def git_dirty() -> bool:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                         text=True).stdout
    return bool(out.strip())


def audit(wd, target, *extra):
    flags = ["--allow-dirty"] if git_dirty() else []
    return run_script(ROOT / "scripts/audit.py", target, "--quiet", *flags, *extra, cwd=wd, check=False)


def run_scripts(jobs, cwd=ROOT, tmp=None) -> list[subprocess.CompletedProcess]:
    """Several stage scripts, each ``(script, *args)``, in one subprocess (tests/script_driver.py): as run_script
    would run each, with its own return code, stdout and stderr, but one interpreter start and one torch import."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp) as d:
        spec, results = Path(d) / "jobs.json", Path(d) / "results.json"
        spec.write_text(json.dumps([[str(job[0]), [str(a) for a in job[1:]]] for job in jobs]))
        run_script(ROOT / "tests/script_driver.py", spec, results, cwd=cwd)
        return [subprocess.CompletedProcess([str(a) for a in job], r["returncode"], r["stdout"], r["stderr"])
                for job, r in zip(jobs, json.loads(results.read_text()))]


def run_script(*args, cwd=ROOT, check=True, env=None):
    """A stage script in a subprocess, importing the package of this tree (ROOT/src; in a mutation run, the
    mutated copy)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([PY, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# ---------------------------------------------------------------------------------------------------------------
# DVC (test_dvc.py: one shared repository reproduced by `dvc repro`; test_dvc_repos.py: repositories of their own):
# the venv's dvc called by its path with no venv on PATH, as a user whose shell never activated it
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# small searches, LaTeX, figures
# ---------------------------------------------------------------------------------------------------------------
def small_cfg(method="metantk", seed=0, ops=("sep_conv_3x3", "max_pool_3x3", "conv_3x3"), **kw):
    """A search of seconds: C=4 at 8x8, one task or 6 images per kernel, one repeat, 40 linear-region inputs."""
    from metantk_nas.config import FidelitySwitches, KernelSpec, LinearRegionSpec, SearchConfig

    return SearchConfig(method=method, cells=5, seed=seed,
                        kernel=KernelSpec("maml", float("inf"), 1e-3) if method == "metantk" else None,
                        channels=4, image_size=8, tasks_per_batch=1, ntk_batch=6, task_pool=20, repeats=1,
                        ops=ops, linear_regions=LinearRegionSpec(batch=40, batches=1),
                        fidelity=FidelitySwitches(fresh_batch_per_candidate=False), **kw)


TWO_OPS = ("max_pool_3x3", "conv_3x3")   # one pruning round of 28 candidates instead of two (70): for the tests that
                                        # need a whole search but not two rounds


def compile_latex(tmp_path: Path, tables: dict) -> None:
    """Each ``name: table`` (a report table with ``.latex()``) compiled by pdflatex into a PDF of its own."""
    require(shutil.which("pdflatex") is not None, "pdflatex is not installed (texlive-latex-recommended)")
    for name, t in tables.items():
        doc = tmp_path / f"{name}.tex"
        doc.write_text("\\documentclass{article}\\usepackage[margin=1cm,landscape]{geometry}\\usepackage{booktabs}"
                       "\\usepackage{amssymb}\\usepackage[utf8]{inputenc}\\begin{document}\n" + t.latex() +
                       "\n\\end{document}\n")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert (tmp_path / f"{name}.pdf").stat().st_size > 1000


def overlap(a, b) -> bool:
    """Do two matplotlib bounding boxes overlap?"""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def masks_of_a_round(cfg_ops) -> list[np.ndarray]:
    """The origin, op removals (a round) and a whole-edge removal (the group stage), mixed."""
    from metantk_nas.nas.ops import OP_NAMES
    from metantk_nas.search.pruning import initial_mask

    origin = initial_mask(cfg_ops)
    live = [i for i, n in enumerate(OP_NAMES) if n in cfg_ops]
    out = [origin]
    for c, e, o in [(0, 0, live[0]), (1, 4, live[-1]), (0, 8, live[1])]:
        m = origin.copy()
        m[c, e, o] = False
        out.append(m)
    m = origin.copy()
    m[1, 6] = False   # an edge with no live op for this network only
    out.append(m)
    return out


def networks_of_a_round(scorer, cfg, n, fresh_inputs=True):
    """(mask, inputs, head) of origin/candidate pairs, each with its own batch and heads, as a fresh-batch round."""
    nets = []
    for k, m in enumerate(masks_of_a_round(cfg.ops)[:n]):
        inputs = scorer.kernel_inputs(0, k if fresh_inputs else 0, 0)
        nets.append((m, inputs, scorer.new_head(0, k, 0, 1)))
    return nets


# ---------------------------------------------------------------------------------------------------------------
# training and evaluation (test_train.py, test_evaluate.py)
# ---------------------------------------------------------------------------------------------------------------
def tcfg(**kw):
    """A training of seconds on the tiny prepared data (C=4, 16x16, 3 epochs)."""
    from dataclasses import replace

    from metantk_nas.config import TrainConfig

    base = TrainConfig(cells=5, seed=0, channels=4, image_size=16, lr=0.05, epochs=3, decay_epochs=(2,),
                       batch_size=16, drop_path=0.2, crop_padding=2)
    return replace(base, **kw)


def ecfg(**kw):
    """An evaluation of 40 episodes on the tiny prepared data."""
    from dataclasses import replace

    from metantk_nas.config import EvalConfig

    base = EvalConfig(episodes=40, ways=5, shots=(1, 5), queries=4, support_augmentations=2, C=1.0, seed=42,
                      solver="batched", feature_batch=64, image_size=16, crop_padding=2, color_jitter=0.4)
    return replace(base, **kw)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    """Two state dicts with the same keys and bit-identical tensors."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
