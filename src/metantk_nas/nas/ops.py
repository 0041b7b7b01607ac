"""The 7 candidate operations of the MetaNAS few-shot space, in one registry (research §1.1, §C.1).

Layer orders follow the original code exactly; every conv has ``bias=False``.  ``norm`` selects what follows each
conv/pool: ``batchnorm`` (training and the linear-region proxy), ``groupnorm16`` = GroupNorm(min(16, C), C) (the
kernels, as the original's Opacus conversion), ``groupnorm32`` = GroupNorm(min(32, C), C) or ``none``.

The registry order is the original's op index order (``DARTS_FEWSHOT`` without ``none``), which fixes the
enumeration and tie-breaking order of the search.  Names are MetaNAS's; the original MetaNTK-NAS code calls the
pooling ops ``max_pool_3x3BN``/``avg_pool_3x3BN`` (see :data:`ALIASES`).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .space import ALIASES, OP_NAMES, ORIGINAL_NAMES, canonical_op  # noqa: F401  (re-exported)

NORMS = ("batchnorm", "groupnorm16", "groupnorm32", "none")


def make_norm(channels: int, kind: str) -> nn.Module:
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind in ("groupnorm16", "groupnorm32"):
        groups = min(16 if kind == "groupnorm16" else 32, channels)
        if channels % groups:
            raise ValueError(f"{kind}: {channels} channels are not divisible into {groups} groups "
                             f"(choose search.channels so that 3*4*C is a multiple of 16, e.g. C = 4, 8, 16, 48)")
        return nn.GroupNorm(groups, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


class ReLUConvNorm(nn.Sequential):
    """ReLU -> Conv(k, stride, pad) -> norm (``ReLUConvBN`` / MetaNAS ``StdConv``)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, norm: str):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride, pad, bias=False), make_norm(c_out, norm))


class SepConv(nn.Sequential):
    """ReLU -> depthwise k x k (stride, dilation) -> pointwise 1x1 -> norm."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int, norm: str):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, pad, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False),
            make_norm(c_out, norm),
        )


class DualSepConv(nn.Sequential):
    """Two stacked SepConvs; only the first is strided."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str):
        super().__init__(SepConv(c_in, c_in, 3, stride, 1, 1, norm), SepConv(c_in, c_out, 3, 1, 1, 1, norm))


class FacConv(nn.Sequential):
    """ReLU -> Conv(1x5, stride on both axes) -> Conv(5x1) -> norm (the code does 1xK first)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, (1, 5), stride, (0, 2), bias=False),
            nn.Conv2d(c_out, c_out, (5, 1), 1, (2, 0), bias=False),
            make_norm(c_out, norm),
        )


def max_pool_3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``MaxPool2d(3, stride, padding=1)``, bitwise, computed faster: torch's CPU kernel for contiguous (NCHW)
    tensors is 4-20x slower than for channels_last ones.  Without autograd, a separable max of shifted views
    (a max is exact, so the result is identical); with autograd, the pool runs in channels_last (same values, same
    gradients: both route to the window's maximum).  Inside torch.func transforms (the vmap NTK backend), which know
    no memory formats, torch's own kernel."""
    if torch._C._functorch.is_functorch_wrapped_tensor(x):      # vmap/grad: no memory formats there
        return F.max_pool2d(x, 3, stride, 1)
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, stride, 1).contiguous()
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    out = torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])
    return out if stride == 1 else out[..., ::stride, ::stride].contiguous()


class PoolNorm(nn.Module):
    """3x3 pooling (stride s, padding 1; average without the padded zeros) then norm (the original's PoolBN)."""

    def __init__(self, kind: str, channels: int, stride: int, norm: str):
        super().__init__()
        self.kind, self.stride = kind, stride
        self.norm = make_norm(channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return self.norm(max_pool_3x3(x, self.stride))
        return self.norm(F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False))


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs (the second on the input shifted by one pixel), concat, norm."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        half = c_out // 2
        self.conv_1 = nn.Conv2d(c_in, half, 1, 2, 0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - half, 1, 2, 0, bias=False)
        self.norm = make_norm(c_out, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.norm(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


OpFactory = Callable[[int, int, str], nn.Module]  # (channels, stride, norm) -> module

OPS: dict[str, OpFactory] = {
    "skip_connect": lambda c, s, n: nn.Identity() if s == 1 else FactorizedReduce(c, c, n),
    "sep_conv_3x3": lambda c, s, n: DualSepConv(c, c, s, n),
    "dil_conv_3x3": lambda c, s, n: SepConv(c, c, 3, s, 2, 2, n),
    "avg_pool_3x3": lambda c, s, n: PoolNorm("avg", c, s, n),
    "max_pool_3x3": lambda c, s, n: PoolNorm("max", c, s, n),
    "conv_1x5_5x1": lambda c, s, n: FacConv(c, c, s, n),
    "conv_3x3": lambda c, s, n: SepConv(c, c, 3, s, 1, 1, n),
}
assert tuple(OPS) == OP_NAMES, "the op registry must list the search space's ops in the original's order"


def make_op(name: str, channels: int, stride: int, norm: str) -> nn.Module:
    return OPS[canonical_op(name)](channels, stride, norm)


def is_parameter_free_identity(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity)
