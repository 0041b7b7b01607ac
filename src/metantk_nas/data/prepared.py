"""The prepared format (docs/design.md §4) and the ``prepare_data`` stage.

``{prepared_root}/{dataset}/``:
  ``{split}_images.npy``  uint8 (N, H, W, 3), read memory-mapped;
  ``{split}_labels.npy``  int64 (N,) in 0..C-1;
  ``manifest.json``       format, classes and counts per split, normalisation constants, sha256 of every source and
                          output file (and ``manifest.json.prov.json``, the provenance record of the stage).
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import DataError
from ..provenance import Provenance, sha256_file, write_bytes_atomic, write_json_atomic
from . import readers
from .synthetic import SyntheticSpec, generate

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def read_raw(ds_cfg: Mapping[str, Any]) -> tuple[dict[str, readers.RawSplit], tuple, tuple]:
    fmt = ds_cfg["format"]
    if fmt == "synthetic":
        splits = generate(SyntheticSpec(**ds_cfg["synthetic"]))
        train = splits["train"].images.reshape(-1, 3).astype(np.float64) / 255
        return splits, tuple(train.mean(0).round(6)), tuple(train.std(0).round(6))
    root = Path(ds_cfg["source"])
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found (set data.datasets.<name>.source)")
    mean, std = readers.NORMALISATION[fmt]
    return readers.READERS[fmt](root), mean, std


def _up_to_date(out_dir: Path, sources: dict[str, str], ds_cfg: Mapping[str, Any]) -> bool:
    mpath = out_dir / MANIFEST
    if not mpath.exists():
        return False
    try:
        manifest = json.loads(mpath.read_text())
        if manifest.get("sources") != sources or manifest.get("config") != dict(ds_cfg):
            return False
        return all((out_dir / f).exists() and sha256_file(out_dir / f) == h for f, h in manifest["outputs"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def prepare_dataset(name: str, ds_cfg: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Read the raw files (or generate), validate, write the prepared format atomically. Idempotent."""
    out_dir = Path(out_dir)
    prov = Provenance(stage="prepare_data", config={"dataset": name, **dict(ds_cfg)})
    sources = {str(p): sha256_file(p) for p in raw_files(ds_cfg, name)}   # {} for the synthetic generator
    if _up_to_date(out_dir, sources, ds_cfg):
        log.info("%s: prepared data in %s is up to date; nothing to do", name, out_dir)
        return json.loads((out_dir / MANIFEST).read_text())
    splits, mean, std = read_raw(ds_cfg)
    prov.add_inputs([Path(p) for p in sources])
    outputs: dict[str, str] = {}
    split_info = {}
    for split, raw in splits.items():
        for kind, arr in (("images", raw.images), ("labels", raw.labels)):
            fname = f"{split}_{kind}.npy"
            write_bytes_atomic(out_dir / fname, _npy_bytes(arr))
            outputs[fname] = sha256_file(out_dir / fname)
        counts = np.bincount(raw.labels, minlength=len(raw.class_names)).tolist()
        split_info[split] = {"n": int(raw.images.shape[0]), "shape": list(raw.images.shape[1:]),
                             "classes": raw.class_names, "counts": counts}
        log.info("%s/%s: %d images, %d classes, %s", name, split, raw.images.shape[0], len(raw.class_names),
                 "x".join(map(str, raw.images.shape[1:])))
    manifest = {"dataset": name, "format": ds_cfg["format"], "config": dict(ds_cfg), "splits": split_info,
                "normalisation": {"mean": list(mean), "std": list(std)}, "sources": sources, "outputs": outputs}
    write_json_atomic(out_dir / MANIFEST, manifest)
    prov.write([out_dir / MANIFEST, *[out_dir / f for f in outputs]])
    return manifest


def raw_files(ds_cfg: Mapping[str, Any], name: str = "<name>") -> list[Path]:
    """The raw files dataset ``name`` is prepared from: the RFS pickles or npz files under its ``source`` ([] for
    the synthetic generator, whose input is its config).  A missing directory or file is a DataError naming the path
    and the config key that sets it (Snakemake's dry run and scripts/make_dvc.py report it before any job)."""
    if ds_cfg["format"] == "synthetic":
        return []
    root = Path(ds_cfg["source"])
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found (set data.datasets.{name}.source)")
    fmt = ds_cfg["format"]
    if fmt == "mini_imagenet":
        names = list(readers.MINI_FILES.values())
    elif fmt == "tiered_imagenet":
        names = [f"{s}_{k}" for s in readers.SPLITS for k in ("images.npz", "labels.pkl")]
    else:
        try:
            return [readers.cifar_split_file(root, fmt, s) for s in readers.SPLITS]
        except DataError as e:
            raise DataError(f"{e} (the raw files of data.datasets.{name}.source)") from None
    paths = [root / n for n in names]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: file not found (the raw files of data.datasets.{name}.source)")
    return paths


@dataclass
class PreparedSplit:
    """A split of a prepared dataset: memory-mapped uint8 images and int labels."""

    images: np.ndarray
    labels: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1


def load_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: prepared dataset not found (run the prepare_data stage)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: corrupt manifest ({e}); rerun the prepare_data stage") from None
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    norm = manifest.get("normalisation") if isinstance(manifest, dict) else None
    if not (isinstance(splits, dict) and isinstance(norm, dict) and {"mean", "std"} <= set(norm)):
        raise DataError(f"{path}: not a prepared-data manifest (needs 'splits' and 'normalisation'); "
                        "rerun the prepare_data stage")
    return manifest


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:   # missing, truncated (mmap length, short read), not an .npy
        raise DataError(f"{path}: unreadable prepared data ({type(e).__name__}: {e}); "
                        "rerun the prepare_data stage") from None


def load_split(root: str | Path, split: str) -> PreparedSplit:
    root = Path(root)
    manifest = load_manifest(root)
    if split not in manifest["splits"]:
        raise DataError(f"{root}: no split {split!r} (have {list(manifest['splits'])})")
    images = _load_npy(root / f"{split}_images.npy", mmap=True)
    labels = _load_npy(root / f"{split}_labels.npy", mmap=False)
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{root}/{split}_images.npy: wrong shape/dtype {images.shape} {images.dtype}")
    norm = manifest["normalisation"]
    return PreparedSplit(images, labels, tuple(norm["mean"]), tuple(norm["std"]))
