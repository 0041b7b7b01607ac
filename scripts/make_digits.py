#!/usr/bin/env python
"""make_digits: a small real-image few-shot dataset in the RFS CIFAR-FS format, from scikit-learn's handwritten
digits (bundled with scikit-learn: nothing is downloaded), for the score-vs-accuracy study on real images.

Every digit's 8x8 scans (about 180 per digit) are turned into 8 classes: the scan rotated by 0, 90, 180 and 270
degrees, each as written and with its intensities inverted. Classes are split by digit, so that no class of one
split is a rotation of a class of another: train (base classes) digits 0-5 (48 classes), val digit 7 (8),
test digits 6, 8, 9 (24: 6 rotated by 180 degrees looks like a 9, a hard pair within the test split). Images are
upscaled to 32x32 (each pixel a 4x4 block, 0..16 -> 0..255) in 3 equal channels, as {train,val,test}.pickle with
`data` (N, 32, 32, 3) uint8 and `labels`, the format `cifar_fs` datasets are read in (data.datasets.<name>.format).
`--per-class` keeps that many scans of each class (the first ones, in the dataset's order).

Caveats: rotations of 0, 1 and 8 by 180 degrees are near-duplicates of the unrotated class, and the training's
random horizontal flip maps some classes onto others' shapes; the few-shot tasks are real images, not a benchmark.

Example:
  .venv/bin/python scripts/make_digits.py --out data/raw/digits --per-class 60
  snakemake study --cores 2 --configfile config/smoke.yaml config/digits.yaml
"""
from __future__ import annotations

import argparse
import logging
import pickle
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("make_digits")
SPLIT_DIGITS = {"train": (0, 1, 2, 3, 4, 5), "val": (7,), "test": (6, 8, 9)}
VARIANTS = [(k, inverted) for inverted in (False, True) for k in range(4)]   # quarter turns, inverted


def variant(images: np.ndarray, quarter_turns: int, inverted: bool) -> np.ndarray:
    """(N, 8, 8) scans in 0..16 -> (N, 32, 32, 3) uint8: rotated, optionally inverted, each pixel a 4x4 block."""
    x = np.rot90(images, quarter_turns, axes=(1, 2))
    x = 16 - x if inverted else x
    x = np.round(x * (255.0 / 16.0)).astype(np.uint8)
    x = np.kron(x, np.ones((1, 4, 4), dtype=np.uint8))
    return np.repeat(x[..., None], 3, axis=-1)


def build(per_class: int | None) -> dict[str, dict[str, object]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans, targets = digits.images, digits.target
    out = {}
    label = 0
    for split, chosen in SPLIT_DIGITS.items():
        data, labels = [], []
        for d in chosen:
            mine = scans[targets == d][:per_class]
            for k, inverted in VARIANTS:
                data.append(variant(mine, k, inverted))
                labels += [label] * len(mine)
                label += 1
        out[split] = {"data": np.concatenate(data), "labels": labels}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for train.pickle, val.pickle, test.pickle")
    p.add_argument("--per-class", type=int, default=None, help="scans kept per class (default: all, about 180)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.per_class is not None and args.per_class < 20:
        print(f"error: --per-class {args.per_class}: a 5-shot task with 15 queries needs at least 20 images per class",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, obj in build(args.per_class).items():
        path = out / f"{split}.pickle"
        tmp = path.with_suffix(".pickle.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)
        tmp.replace(path)
        log.info("%s: %d images, %d classes", path, len(obj["labels"]), len(set(obj["labels"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
