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


def run_script(*args, cwd=ROOT, check=True, env=None):
    """A stage script in a subprocess, importing the package of this tree (ROOT/src; in a mutation run, the
    mutated copy)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([PY, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
