"""The embedded synthetic few-shot dataset: deterministic (same seed, same bytes), mini-ImageNet's split structure.

Each class is a prototype made of a few coloured sinusoidal gratings (its own frequencies, orientations, colours)
over a class-specific background tint.  Every image of the class draws a random spatial shift, per-grating phase
and amplitude jitter, a global colour/brightness change and pixel noise, so classes are separable by learned
features yet varied within a class, and novel (test) classes share the same kind of structure as base classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .readers import RawSplit, SPLITS


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 0
    train_classes: int = 64
    val_classes: int = 16
    test_classes: int = 20
    images_per_class: int = 600
    image_size: int = 84
    gratings: int = 3
    noise: float = 0.6
    shift: float = 0.35     # max translation as a fraction of the image


def _class_prototype(rng: np.random.Generator, gratings: int) -> dict[str, np.ndarray]:
    return {
        "freq": rng.uniform(1.0, 5.0, size=gratings),
        "theta": rng.uniform(0, np.pi, size=gratings),
        "phase": rng.uniform(0, 2 * np.pi, size=gratings),
        "colour": rng.uniform(-1, 1, size=(gratings, 3)),
        "tint": rng.uniform(-0.4, 0.4, size=3),
    }


def _render(proto: dict[str, np.ndarray], rng: np.random.Generator, n: int, size: int, spec: SyntheticSpec) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(0, 1, size, endpoint=False), np.linspace(0, 1, size, endpoint=False), indexing="ij")
    g = proto["freq"].shape[0]
    shift = rng.uniform(-spec.shift, spec.shift, size=(n, 2))
    dphase = rng.normal(0, 0.6, size=(n, g))
    amp = rng.uniform(0.5, 1.5, size=(n, g))
    gain = rng.uniform(0.7, 1.3, size=(n, 3))
    bright = rng.uniform(-0.3, 0.3, size=(n, 1))
    img = np.zeros((n, size, size, 3), dtype=np.float64)
    for k in range(g):
        cos, sin = np.cos(proto["theta"][k]), np.sin(proto["theta"][k])
        x = (xx[None] + shift[:, 0, None, None]) * cos + (yy[None] + shift[:, 1, None, None]) * sin
        wave = np.sin(2 * np.pi * proto["freq"][k] * x + proto["phase"][k] + dphase[:, k, None, None])
        img += (amp[:, k, None, None] * wave)[..., None] * proto["colour"][k][None, None, None, :]
    img = img / g + proto["tint"][None, None, None, :]
    img = img * gain[:, None, None, :] + bright[:, :, None, None]
    img += rng.normal(0, spec.noise, size=img.shape)
    return np.clip(np.round(128 + 80 * img), 0, 255).astype(np.uint8)


def generate(spec: SyntheticSpec) -> dict[str, RawSplit]:
    """Deterministically generate train/val/test splits (disjoint classes) in the raw-split form."""
    counts = {"train": spec.train_classes, "val": spec.val_classes, "test": spec.test_classes}
    out: dict[str, RawSplit] = {}
    offset = 0
    for split in SPLITS:
        images, labels, names = [], [], []
        for c in range(counts[split]):
            cls_id = offset + c
            rng = np.random.default_rng([spec.seed, cls_id])
            proto = _class_prototype(rng, spec.gratings)
            images.append(_render(proto, rng, spec.images_per_class, spec.image_size, spec))
            labels.append(np.full(spec.images_per_class, c, dtype=np.int64))
            names.append(f"synthetic_{cls_id:03d}")
        offset += counts[split]
        out[split] = RawSplit(np.concatenate(images), np.concatenate(labels), names, [])
    return out
