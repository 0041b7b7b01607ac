"""Readers for the raw dataset files in the RFS formats (research/rfs-tenas-metanas.md §A.1).

Each reader returns ``{split: RawSplit}`` for splits ``train`` (base classes), ``val`` and ``test`` (novel classes),
with labels remapped to 0..C-1 and the class names kept.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .safe_pickle import safe_load

SPLITS = ("train", "val", "test")
RFS_MEAN = (120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255)
RFS_STD = (70.68188272 / 255, 68.27635443 / 255, 72.54505529 / 255)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

MINI_FILES = {
    "train": "miniImageNet_category_split_train_phase_train.pickle",
    "val": "miniImageNet_category_split_val.pickle",
    "test": "miniImageNet_category_split_test.pickle",
}


@dataclass
class RawSplit:
    images: np.ndarray          # (N, H, W, 3) uint8
    labels: np.ndarray          # (N,) int64 in 0..C-1
    class_names: list[str]
    sources: list[Path]


def _check_images(arr: object, path: Path, size: int | None) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: images must be a numpy array, got {type(arr).__name__}")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"{path}: images must have shape (N, H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8, got {arr.dtype}")
    if size is not None and arr.shape[1:3] != (size, size):
        raise DataError(f"{path}: images must be {size}x{size}, got {arr.shape[1]}x{arr.shape[2]}")
    if arr.shape[0] == 0:
        raise DataError(f"{path}: no images")
    return arr


def _check_labels(labels: object, n: int, path: Path) -> np.ndarray:
    try:
        lab = np.asarray(labels)
    except Exception:
        raise DataError(f"{path}: labels are not an array of integers") from None
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"{path}: labels must be a 1-D list of integers, got shape {lab.shape} dtype {lab.dtype}")
    if lab.shape[0] != n:
        raise DataError(f"{path}: {lab.shape[0]} labels for {n} images")
    return lab.astype(np.int64)


def remap_sorted(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0..C-1 in sorted order of the raw ids (= RFS's ``label - min`` for contiguous ids)."""
    uniq, inv = np.unique(labels, return_inverse=True)
    return inv.astype(np.int64), uniq


def remap_first_appearance(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0..C-1 in order of first appearance (RFS's CIFAR loaders)."""
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    lut = {int(v): i for i, v in enumerate(order)}
    return np.array([lut[int(v)] for v in labels], dtype=np.int64), order


def _dict_with(obj: object, keys: tuple[str, ...], path: Path) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with keys {list(keys)}, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        hint = " (this looks like the original tieredImageNet release; the RFS/MetaOptNet version is needed)" \
            if "label_specific" in obj else ""
        raise DataError(f"{path}: missing key(s) {missing}; found {sorted(map(str, obj))}{hint}")
    return obj


def _names_from_catname(obj: dict, raw_ids: np.ndarray) -> list[str]:
    cat = obj.get("catname2label")
    if isinstance(cat, dict):
        inv = {int(v): str(k) for k, v in cat.items()}
        return [inv.get(int(r), str(int(r))) for r in raw_ids]
    return [str(int(r)) for r in raw_ids]


def _require_file(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path


def read_mini_imagenet(root: Path) -> dict[str, RawSplit]:
    out = {}
    for split, fname in MINI_FILES.items():
        path = _require_file(root / fname)
        obj = _dict_with(safe_load(path), ("data", "labels"), path)
        images = _check_images(obj["data"], path, 84)
        raw = _check_labels(obj["labels"], images.shape[0], path)
        labels, ids = remap_sorted(raw)
        out[split] = RawSplit(images, labels, _names_from_catname(obj, ids), [path])
    return out


def _load_npz_images(path: Path) -> np.ndarray:
    _require_file(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataError(f"{path}: missing array 'images'; found {z.files}")
            return z["images"]
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise DataError(f"{path}: corrupt or truncated npz ({type(e).__name__}: {e})") from None


def read_tiered_imagenet(root: Path) -> dict[str, RawSplit]:
    out = {}
    for split in SPLITS:
        ipath = root / f"{split}_images.npz"
        lpath = _require_file(root / f"{split}_labels.pkl")
        images = _check_images(_load_npz_images(ipath), ipath, 84)
        obj = _dict_with(safe_load(lpath), ("labels",), lpath)
        raw = _check_labels(obj["labels"], images.shape[0], lpath)
        labels, ids = remap_sorted(raw)
        names = [str(n) for n in obj["label_names"]] if isinstance(obj.get("label_names"), list) and \
            len(obj["label_names"]) == len(ids) else [str(int(i)) for i in ids]
        out[split] = RawSplit(images, labels, names, [ipath, lpath])
    return out


CIFAR_PREFIX = {"cifar_fs": "CIFAR_FS", "fc100": "FC100"}   # the other name many copies of these datasets use


def cifar_split_file(root: Path, fmt: str, split: str) -> Path:
    """The pickle of ``split``: ``{split}.pickle`` as RFS names it, or ``CIFAR_FS_{split}.pickle`` /
    ``FC100_{split}.pickle`` as many copies name it; a DataError naming both where neither exists."""
    names = [f"{split}.pickle", f"{CIFAR_PREFIX[fmt]}_{split}.pickle"]
    for name in names:
        if (root / name).exists():
            return root / name
    raise DataError(f"{root / names[0]}: file not found (nor {names[1]})")


def read_cifar_style(root: Path, fmt: str = "cifar_fs") -> dict[str, RawSplit]:
    """CIFAR-FS and FC100: ``{split}.pickle`` (or ``CIFAR_FS_{split}.pickle`` / ``FC100_{split}.pickle``) with
    32x32 images; labels remapped by first appearance."""
    out = {}
    for split in SPLITS:
        path = cifar_split_file(root, fmt, split)
        obj = _dict_with(safe_load(path), ("data", "labels"), path)
        images = _check_images(obj["data"], path, 32)
        raw = _check_labels(obj["labels"], images.shape[0], path)
        labels, ids = remap_first_appearance(raw)
        out[split] = RawSplit(images, labels, [str(int(i)) for i in ids], [path])
    return out


READERS: dict[str, Callable[[Path], dict[str, RawSplit]]] = {
    "mini_imagenet": read_mini_imagenet,
    "tiered_imagenet": read_tiered_imagenet,
    "cifar_fs": lambda root: read_cifar_style(root, "cifar_fs"),
    "fc100": lambda root: read_cifar_style(root, "fc100"),
}

NORMALISATION = {
    "mini_imagenet": (RFS_MEAN, RFS_STD),
    "tiered_imagenet": (RFS_MEAN, RFS_STD),  # RFS uses the mini constants for tiered too
    "cifar_fs": (CIFAR100_MEAN, CIFAR100_STD),
    "fc100": (CIFAR100_MEAN, CIFAR100_STD),
}
