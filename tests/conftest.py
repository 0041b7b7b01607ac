import os

import numpy as np
import pytest

from helpers import fake_images, write_pickle

# `make test` runs the suite on every core with pytest-xdist (`-n <cores> --dist loadfile --no-loadscope-reorder`): each
# test module runs whole on one worker, so its module-scoped fixtures (one tiny DAG, one DVC repository, one SLURM) are
# built once.  The workers take the modules longest first (SLOW_MODULES, measured on 2 cores), so the short ones fill
# in after them.
SLOW_MODULES = ["test_dvc.py", "test_slurm.py", "test_dvc_repos.py", "test_workflow.py", "test_gpu_check.py", "test_docs.py", "test_search.py",
                "test_batched.py", "test_train.py", "test_evaluate.py", "test_fidelity.py", "test_kernels.py", "test_config.py"]


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


