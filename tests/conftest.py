import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
IN_CI = os.environ.get("CI", "").lower() == "true"

# `make test` runs the suite on every core with pytest-xdist (`-n <cores> --dist loadfile --no-loadscope-reorder`): each
# test module runs whole on one worker, so its module-scoped fixtures (one tiny DAG, one DVC repository, one SLURM) are
# built once.  The workers take the modules longest first (SLOW_MODULES, measured on 2 cores), so the short ones fill
# in after them.
SLOW_MODULES = ["test_dvc.py", "test_slurm.py", "test_dvc_repos.py", "test_workflow.py", "test_gpu_check.py", "test_docs.py", "test_search.py",
                "test_batched.py", "test_fsl.py", "test_fidelity.py", "test_kernels.py", "test_config.py"]


def test_threads() -> int | None:
    """torch's intra-op threads for this test process: TEST_THREADS when set (`make test` runs the `chunking` tests
    once more with TEST_THREADS=2: another thread count is another reduction order), else one per core of this
    xdist worker so the workers do not oversubscribe the cores, else torch's default (None)."""
    if os.environ.get("TEST_THREADS"):
        return int(os.environ["TEST_THREADS"])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


test_threads.__test__ = False   # a helper, not a test


def pytest_configure(config):
    threads = test_threads()
    if threads is not None:      # for this process and the jobs it starts
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def pytest_report_header(config):
    import torch

    return f"torch intra-op threads: {torch.get_num_threads()}"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):     # the controller schedules in the order its workers collected
        def rank(item) -> int:
            name = item.path.name
            return SLOW_MODULES.index(name) if name in SLOW_MODULES else len(SLOW_MODULES)

        items.sort(key=rank)                      # stable: the order within a module is kept


def require(condition: bool, reason: str) -> None:
    """Skip locally when a system tool is missing; under CI=true integration tests never skip, they fail."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_ds_cfg():
    return {"format": "synthetic",
            "synthetic": {"seed": 3, "train_classes": 8, "val_classes": 5, "test_classes": 6, "images_per_class": 12,
                          "image_size": 16}}


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, tiny_ds_cfg):
    from metantk_nas.data.prepared import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "tiny"
    prepare_dataset("tiny", tiny_ds_cfg, out)
    return out


def write_pickle(path: Path, obj, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def fake_images(rng, n, size):
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def mini_dir(tmp_path):
    """Tiny files in the exact RFS miniImageNet format (latin1-readable pickles with data/labels/catname2label)."""
    from metantk_nas.data.readers import MINI_FILES

    rng = np.random.default_rng(0)
    root = tmp_path / "miniImageNet"
    offsets = {"train": 0, "val": 64, "test": 80}
    for split, fname in MINI_FILES.items():
        labels = [offsets[split] + c for c in range(5) for _ in range(3)]
        write_pickle(root / fname, {"data": fake_images(rng, len(labels), 84), "labels": labels,
                                    "catname2label": {f"n{l:08d}": l for l in sorted(set(labels))}})
    return root


@pytest.fixture
def tiered_dir(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "tieredImageNet"
    root.mkdir()
    for split, off in (("train", 0), ("val", 351), ("test", 448)):
        labels = [off + c for c in range(5) for _ in range(2)]
        np.savez(root / f"{split}_images.npz", images=fake_images(rng, len(labels), 84))
        write_pickle(root / f"{split}_labels.pkl", {"labels": labels})
    return root


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "CIFAR-FS"
    for split in ("train", "val", "test"):
        labels = [17, 3, 17, 42, 3, 42, 99, 99, 5, 5]
        write_pickle(root / f"{split}.pickle", {"data": fake_images(rng, len(labels), 32), "labels": labels})
    return root


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
