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
    """uint8 (N, H, W, 3) -> contiguous float32 (N, 3, H, W) in [0, 1]."""
    t = torch.from_numpy(np.array(images, copy=True)) if isinstance(images, np.ndarray) else images
    return t.to(device).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


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


def random_crop(x: torch.Tensor, size: int, padding: int, gen: torch.Generator, channels_last: bool = False) -> torch.Tensor:
    """Zero-pad by ``padding`` then crop ``size`` x ``size`` at a random offset per image.

    ``x`` is (N, C, H, W), or (N, H, W, C) with ``channels_last`` (used on uint8 images before conversion).
    """
    hdim = 1 if channels_last else 2
    n, h, w = x.shape[0], x.shape[hdim], x.shape[hdim + 1]
    hp, wp = h + 2 * padding, w + 2 * padding
    if hp < size or wp < size:
        raise ValueError(f"crop {size} larger than padded image {hp}x{wp}")
    oy = torch.randint(0, hp - size + 1, (n,), generator=gen).tolist()
    ox = torch.randint(0, wp - size + 1, (n,), generator=gen).tolist()
    if padding:
        pad = (0, 0, padding, padding, padding, padding) if channels_last else (padding, padding, padding, padding)
        x = F.pad(x, pad)
    if channels_last:
        return torch.stack([x[i, a:a + size, b:b + size] for i, (a, b) in enumerate(zip(oy, ox))])
    return torch.stack([x[i, :, a:a + size, b:b + size] for i, (a, b) in enumerate(zip(oy, ox))])


def random_hflip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5, channels_last: bool = False) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < p).to(x.device)
    if not bool(flip.any()):
        return x
    x = x.clone()
    x[flip] = x[flip].flip(-2 if channels_last else -1)
    return x


def crop_flip_to_float(u8: torch.Tensor, size: int, padding: int, gen: torch.Generator, p: float = 0.5,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """``random_crop`` then ``random_hflip`` on uint8 (N, H, W, 3), returned as float (N, 3, size, size) in 0..255.

    The same random draws in the same order as the two functions, so the same images; but one converting copy
    per image writes the (flipped) window straight into the NCHW float batch.
    """
    n, h, w = u8.shape[:3]
    hp, wp = h + 2 * padding, w + 2 * padding
    if hp < size or wp < size:
        raise ValueError(f"crop {size} larger than padded image {hp}x{wp}")
    oy = torch.randint(0, hp - size + 1, (n,), generator=gen).tolist()
    ox = torch.randint(0, wp - size + 1, (n,), generator=gen).tolist()
    flip = (torch.rand(n, generator=gen) < p).tolist()
    u8 = u8.to(device)
    if padding:
        u8 = F.pad(u8, (0, 0, padding, padding, padding, padding))
    out = torch.empty(n, u8.shape[3], size, size, device=u8.device)
    for i, (a, b, fl) in enumerate(zip(oy, ox, flip)):
        win = u8[i, a:a + size, b:b + size].permute(2, 0, 1)
        out[i].copy_(win.flip(-1) if fl else win)
    return out


_GRAY = (0.299, 0.587, 0.114)


def jitter_params(n: int, strength: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: brightness, contrast and saturation factors in [1-s, 1+s] (n, 3), and the order (n, 3) in which
    the three are applied (a random permutation of 0 = brightness, 1 = contrast, 2 = saturation)."""
    lo, hi = max(0.0, 1 - strength), 1 + strength
    factors = torch.stack([_uniform(n, lo, hi, gen) for _ in range(3)], 1)
    order = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)
    return factors, order


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of (N, 3, H, W) as (N, 1, H, W), plane by plane (contiguous, vectorised)."""
    g = x[:, 0:1] * _GRAY[0]
    g.add_(x[:, 1:2], alpha=_GRAY[1]).add_(x[:, 2:3], alpha=_GRAY[2])
    return g


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator, bound: float = 1.0,
                 inplace: bool = False) -> torch.Tensor:
    """Brightness, contrast and saturation jitter with factors in [1-s, 1+s], in a random order per image.

    Each is a blend ``f x + (1 - f) ref`` with ref = 0 (brightness), the mean grey level (contrast) or the grey
    image (saturation), clamped to [0, bound] after every step, as torchvision's ColorJitter.  ``x`` is float
    (N, 3, H, W); it is overwritten with ``inplace``, else a new tensor is returned.  Per step: one grey image and
    three in-place passes, batched over images.
    """
    if strength <= 0:
        return x
    n = x.shape[0]
    factors, order = (t.to(x.device) for t in jitter_params(n, strength, gen))
    per_image = (n, 1, 1, 1)
    out = x if inplace else x.clone()
    for step in range(3):
        op = order[:, step]
        f = factors.gather(1, op[:, None]).view(per_image).to(x.dtype)
        gray = _gray(out)
        sat, con = (op == 2).view(per_image).to(x.dtype), (op == 1).view(per_image).to(x.dtype)
        ref = gray.mean(dim=(2, 3), keepdim=True).mul_(con)
        ref = gray.mul_(sat).add_(ref)                                       # 0 for brightness
        out.mul_(f).add_(ref.mul_(1 - f)).clamp_(0, bound)
    return out


@dataclass(frozen=True)
class TrainAugment:
    """RFS transform "A": RandomCrop(size, pad) -> ColorJitter(j, j, j) -> RandomHorizontalFlip -> Normalize."""

    size: int
    padding: int
    jitter: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: np.ndarray | torch.Tensor, gen: torch.Generator, device: str | torch.device = "cpu") -> torch.Tensor:
        """Crop and flip on the uint8 images (cheap, and flip commutes with the jitter), then float ops."""
        u8 = torch.from_numpy(np.require(images, requirements=["C", "W"])) if isinstance(images, np.ndarray) else images
        if u8.shape[1] != self.size:
            x = resize(to_float(u8, device), self.size)
            x = random_crop(x, self.size, self.padding, gen)
            x = random_hflip(x, gen)
            return normalize(color_jitter(x, self.jitter, gen), self.mean, self.std)
        # uint8 path: crop, flip and convert to NCHW float in one copy per image, jitter on 0..255 (the blends are
        # scale-free), then normalise in place with the 1/255 folded into the scale
        x = crop_flip_to_float(u8, self.size, self.padding, gen, device=device)
        c = x.shape[1]
        out = color_jitter(x, self.jitter, gen, bound=255.0, inplace=True)
        mean = torch.tensor(self.mean, dtype=out.dtype, device=out.device).view(1, c, 1, 1)
        std = torch.tensor(self.std, dtype=out.dtype, device=out.device).view(1, c, 1, 1)
        return out.mul_(1.0 / (255.0 * std)).sub_(mean / std)


@dataclass(frozen=True)
class TestTransform:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        return normalize(resize(to_float(images, device), self.size), self.mean, self.std)
