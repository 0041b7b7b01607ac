"""Batched image transforms on tensors (no torchvision, no PIL), with explicit ``torch.Generator``s.

Images enter as uint8 ``(N, H, W, 3)`` (numpy or tensor) and leave as float ``(N, 3, H, W)``.  Semantics follow the
torchvision transforms RFS uses (research/rfs-tenas-metanas.md §A.2): zero-padded random crop, ColorJitter with
brightness/contrast/saturation factors drawn from [1-j, 1+j] applied in a random order per image, horizontal flip
with p=0.5, then Normalize.  Differences: we jitter in float (PIL rounds to uint8 between the three steps) and
resize with antialiased bilinear interpolation (PIL's bilinear also antialiases).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_float(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    t = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return t.to(device).permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def random_crop(x: torch.Tensor, size: int, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` then crop ``size`` x ``size`` at a random offset per image."""
    n, c, h, w = x.shape
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    hp, wp = h + 2 * padding, w + 2 * padding
    if hp < size or wp < size:
        raise ValueError(f"crop {size} larger than padded image {hp}x{wp}")
    oy = torch.randint(0, hp - size + 1, (n,), generator=gen).to(x.device)
    ox = torch.randint(0, wp - size + 1, (n,), generator=gen).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None].expand(n, size, size)
    cols = (ox[:, None] + ar)[:, None, :].expand(n, size, size)
    idx = torch.arange(n, device=x.device)[:, None, None].expand(n, size, size)
    return x.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation jitter with factors in [1-s, 1+s], in a random order per image."""
    if strength <= 0:
        return x
    n = x.shape[0]
    lo, hi = max(0.0, 1 - strength), 1 + strength
    factors = torch.stack([_uniform(n, lo, hi, gen) for _ in range(3)], 1).to(x.device)  # (n, 3)
    order = torch.argsort(torch.rand(n, 3, generator=gen), dim=1).to(x.device)           # random permutation
    for step in range(3):
        op = order[:, step]
        f = factors.gather(1, op[:, None]).view(n, 1, 1, 1)
        bright = x * f
        mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        contrast = f * x + (1 - f) * mean
        sat = f * x + (1 - f) * _grayscale(x)
        y = torch.where((op == 0).view(n, 1, 1, 1), bright, torch.where((op == 1).view(n, 1, 1, 1), contrast, sat))
        x = y.clamp(0, 1)
    return x


@dataclass(frozen=True)
class TrainAugment:
    """RFS transform "A": RandomCrop(size, pad) -> ColorJitter(j, j, j) -> RandomHorizontalFlip -> Normalize."""

    size: int
    padding: int
    jitter: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: np.ndarray | torch.Tensor, gen: torch.Generator, device: str | torch.device = "cpu") -> torch.Tensor:
        x = resize(to_float(images, device), self.size)
        x = random_crop(x, self.size, self.padding, gen)
        x = color_jitter(x, self.jitter, gen)
        x = random_hflip(x, gen)
        return normalize(x, self.mean, self.std)


@dataclass(frozen=True)
class TestTransform:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        return normalize(resize(to_float(images, device), self.size), self.mean, self.std)
