"""Networks of the search space.

:class:`SuperNet` is the DARTS-style supernet of the search (research §1.2–1.3): every edge holds all 7 ops and a
*mask* ``(2, 9, 7)`` chooses which are alive.  A live edge outputs the mean of its live ops (the original's softmax
over alpha in {0, -1000}); an edge with no live op contributes nothing.  Turning an op off is a mask change, so an
origin and all its candidates share one set of weights.  The mask is an argument of ``forward``.

:class:`EvalNet` is the MetaNAS ``AugmentCNN`` as MetaNTK-NAS trains it (research §1.4): stem, cells built from a
genotype, drop-path on every non-identity op, GAP of the last cell (no norm/ReLU before it) and a linear head.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .genotype import CELL_TYPES, Genotype, edge_list, edge_groups, N_NODES
from .ops import OP_NAMES, FactorizedReduce, ReLUConvNorm, make_norm, make_op


def supernet_layout(depth: int, n: int | None = None) -> list[tuple[int, bool]]:
    """(channel multiplier, is_reduction) per cell: [1]*N + [2R] + [2]*N + [4R] + [4]*N, truncated to ``depth``.

    ``n`` (cells per stage) defaults to the original's ``ntk_N = (depth - 2) // 3`` (1 for 5 cells, 2 for 8); the
    linear-region proxy passes ``n=1`` with ``depth=2``: one normal cell, then one reduction cell.
    """
    n = (depth - 2) // 3 if n is None else n
    layout = [(1, False)] * n + [(2, True)] + [(2, False)] * n + [(4, True)] + [(4, False)] * n
    return layout[:depth]


def evalnet_layout(depth: int) -> list[tuple[int, bool]]:
    """AugmentCNN: reductions at depth//3 and 2*depth//3, channels doubled at each."""
    out, mult = [], 1
    for i in range(depth):
        red = i in (depth // 3, 2 * depth // 3)
        mult *= 2 if red else 1
        out.append((mult, red))
    return out


def mixed_op(ops: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The mean of the live ops in the original's arithmetic: sum_o w * op(x) with w = softmax weight = 1/#live
    (rounded to x's dtype), each term scaled before the sum, so float32 outputs round as the original's do."""
    if len(ops) == 1:
        return ops[0](x)  # w = 1 exactly
    w = 1.0 / len(ops)
    out = ops[0](x) * w
    for op in ops[1:]:
        out = out + op(x) * w
    return out


class CellMasks:
    """The per-sample masks of one cell type: ``union`` (E, O) the ops alive for any sample, ``weights`` (E, O, N)
    each sample's mixed-op weight, 1/#live on its edge for a live op and 0 otherwise."""

    def __init__(self, union: np.ndarray, weights: torch.Tensor):
        self.union, self.weights = union, weights


class SampleMasks:
    """Per-sample masks for one pass through several networks of one supernet (the round-batched scorer).

    ``masks`` (G, 2, E, O): the networks; sample n belongs to network n // ``group``.  A sample's forward pass
    is its network's: a live op is weighted 1/#live on its edge, as in :func:`mixed_op` (the same float, applied
    the same way), and a dead op by 0, which adds exact zeros.  Indexing by cell type gives its :class:`CellMasks`.
    """

    def __init__(self, masks: np.ndarray, group: int, dtype: torch.dtype, device: torch.device | str = "cpu"):
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 4:
            raise ValueError(f"per-sample masks: expected (networks, 2, edges, ops), got shape {masks.shape}")
        for g, m in enumerate(masks):
            for c in range(m.shape[0]):
                for a, b in edge_groups(N_NODES):
                    if not m[c, a:b].any():
                        raise ValueError(f"network {g}: a node has no live incoming edge")
        live = masks.sum(-1, keepdims=True)
        w = np.where(masks, 1.0 / np.maximum(live, 1), 0.0)
        self.masks, self.group, self.union = masks, group, masks.any(0)
        weights = torch.as_tensor(w, dtype=dtype).to(device).repeat_interleave(group, 0)   # (N, 2, E, O)
        self._weights = weights.permute(1, 2, 3, 0).contiguous()                            # (2, E, O, N)

    def __len__(self) -> int:
        return len(self.masks) * self.group

    def __getitem__(self, cell_type: int) -> CellMasks:
        return CellMasks(self.union[cell_type], self._weights[cell_type])


class SearchCell(nn.Module):
    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, norm: str,
                 nodes: int = N_NODES):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c, norm) if reduction_prev else ReLUConvNorm(c_pp, c, 1, 1, 0, norm)
        self.pre1 = ReLUConvNorm(c_p, c, 1, 1, 0, norm)
        self.edges = edge_list(nodes)
        self.ops = nn.ModuleList(
            nn.ModuleList(make_op(name, c, 2 if reduction and j < 2 else 1, norm) for name in OP_NAMES)
            for _, j in self.edges)
        self.nodes = nodes

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, mask: np.ndarray | CellMasks) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        if isinstance(mask, CellMasks):
            return self._per_sample(states, mask)
        for (a, b) in edge_groups(self.nodes):
            node = None
            for e in range(a, b):
                live = np.flatnonzero(mask[e])
                if len(live) == 0:
                    continue
                x = states[self.edges[e][1]]
                out = mixed_op([self.ops[e][o] for o in live], x)
                node = out if node is None else node + out
            if node is None:
                raise ValueError("a node has no live incoming edge")
            states.append(node)
        return torch.cat(states[2:], dim=1)

    def _per_sample(self, states: list[torch.Tensor], masks: CellMasks) -> torch.Tensor:
        """The forward pass with per-sample masks: every op alive for some sample runs on the whole batch and is
        scaled per sample; sums grouped as in :meth:`forward` (edge by edge, then the node)."""
        for (a, b) in edge_groups(self.nodes):
            node = None
            for e in range(a, b):
                live = np.flatnonzero(masks.union[e])
                if len(live) == 0:
                    continue
                x = states[self.edges[e][1]]
                out = None
                for o in live:
                    term = self.ops[e][o](x) * masks.weights[e, o].view(-1, 1, 1, 1)
                    out = term if out is None else out + term
                node = out if node is None else node + out
            states.append(node)
        return torch.cat(states[2:], dim=1)


class SuperNet(nn.Module):
    """Masked supernet. ``forward(x, mask)`` returns ``(features, logits)``.

    ``use_stem=False`` feeds the raw input to both inputs of the first cell (the linear-region proxy).
    ``head_act`` puts norm + ReLU before global pooling (the original search net's ``lastact``).
    """

    def __init__(self, channels: int, depth: int, num_classes: int, norm: str, in_channels: int = 3,
                 use_stem: bool = True, head_act: bool = True, nodes: int = N_NODES, cells_per_stage: int | None = None):
        super().__init__()
        self.norm_kind = norm
        if use_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False), make_norm(channels, norm))
            c_pp = c_p = channels
        else:
            self.stem = nn.Identity()
            c_pp = c_p = in_channels
        cells, red_prev = [], False
        self.layout = supernet_layout(depth, cells_per_stage)
        for mult, red in self.layout:
            c = channels * mult
            cells.append(SearchCell(c_pp, c_p, c, red, red_prev, norm, nodes))
            c_pp, c_p, red_prev = c_p, nodes * c, red
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(make_norm(c_p, norm), nn.ReLU(inplace=False)) if head_act else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.feature_dim = c_p

    def features(self, x: torch.Tensor, mask: np.ndarray | SampleMasks) -> torch.Tensor:
        """Pooled features; ``mask`` one mask (2, E, O) for the whole batch or a :class:`SampleMasks`."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, mask[1 if cell.reduction else 0])
        return self.pool(self.lastact(s1)).flatten(1)

    def forward(self, x: torch.Tensor, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x, mask)
        return f, self.classifier(f)


class LogitsNet(nn.Module):
    """``head(body.features(x, mask))``: the network whose NTK is taken.

    ``head=None`` uses the body's own classifier (the plain NTK of ``tenas``).  It is then reached only as
    ``body.classifier``, never registered a second time: a module under two names is hooked twice by Opacus
    (``GradSampleModule`` walks children without removing duplicates), which doubled its per-sample gradient.
    """

    def __init__(self, body: SuperNet, mask: np.ndarray, head: nn.Linear | None = None):
        super().__init__()
        self.body = body
        self.head = head
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body.features(x, self.mask)
        return (self.body.classifier if self.head is None else self.head)(f)

    def mask_index(self, name: str) -> tuple[int, int, int] | None:
        """(cell type, edge, op) of a parameter inside a mixed edge's op, None for any other parameter."""
        parts = name.split(".")
        if len(parts) > 5 and parts[0] == "body" and parts[1] == "cells" and parts[3] == "ops":
            cell = self.body.cells[int(parts[2])]
            return 1 if cell.reduction else 0, int(parts[4]), int(parts[5])
        return None

    def live_parameter(self, name: str) -> bool:
        """Is this parameter used by the forward pass under ``mask``?"""
        if name.startswith("body.classifier."):
            return self.head is None
        idx = self.mask_index(name)
        return True if idx is None else bool(self.mask[idx])


def thin_supernet(channels: int, num_classes: int) -> SuperNet:
    """The linear-region proxy, as the original's ``model_config_thin`` (C=channels, N=1, depth=2, use_stem=False,
    feature_scale_rate=2): one NORMAL cell of width C, then one REDUCTION cell of width 2C, both fed the raw
    1-channel input (no stem); BatchNorm (used in train mode, batch statistics); lastact BN+ReLU, GAP, classifier."""
    return SuperNet(channels, 2, num_classes, "batchnorm", in_channels=1, use_stem=False, cells_per_stage=1)


def full_mask(nodes: int = N_NODES) -> np.ndarray:
    return np.ones((2, len(edge_list(nodes)), len(OP_NAMES)), dtype=bool)


class DropPath(nn.Module):
    """Zero a whole sample's op output with probability p (training only), scaling survivors by 1/(1-p)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        keep = 1.0 - self.p
        m = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
        return x * m / keep


class EvalCell(nn.Module):
    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c, "batchnorm") if reduction_prev else ReLUConvNorm(c_pp, c, 1, 1, 0, "batchnorm")
        self.pre1 = ReLUConvNorm(c_p, c, 1, 1, 0, "batchnorm")
        nodes = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.inputs = [[inp for _, inp in node] for node in nodes]
        ops = []
        for node in nodes:
            pair = []
            for op, inp in node:
                m = make_op(op, c, 2 if reduction and inp < 2 else 1, "batchnorm")
                pair.append(m if isinstance(m, nn.Identity) else nn.Sequential(m, DropPath()))
            ops.append(nn.ModuleList(pair))
        self.ops = nn.ModuleList(ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for pair, inputs in zip(self.ops, self.inputs):
            states.append(sum(op(states[i]) for op, i in zip(pair, inputs)))
        return torch.cat([states[i] for i in self.concat], dim=1)


class EvalNet(nn.Module):
    """AugmentCNN (MetaNTK-NAS settings: stem multiplier 1, channel doubling at reductions)."""

    def __init__(self, genotype: Genotype, channels: int, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.genotype = genotype
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        c_pp = c_p = channels
        cells, red_prev = [], False
        for mult, red in evalnet_layout(depth):
            c = channels * mult
            cell = EvalCell(genotype, c_pp, c_p, c, red, red_prev)
            cells.append(cell)
            c_pp, c_p, red_prev = c_p, len(cell.concat) * c, red
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.feature_dim = c_p

    def set_drop_path(self, p: float) -> None:
        for m in self.modules():
            if isinstance(m, DropPath):
                m.p = p

    def features(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.pool(s1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def eval_net_parameters(genotype: Genotype, channels: int, depth: int, num_classes: int) -> int:
    return count_parameters(EvalNet(genotype, channels, depth, num_classes))


# ---------------------------------------------------------------------------------------------------------------
# initialisation with an explicit generator
# ---------------------------------------------------------------------------------------------------------------
def _draw_(param: torch.Tensor, draw: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``draw`` (from a CPU generator) into ``param`` as a float32 CPU tensor: in place when ``param`` is one, else
    drawn into one, then cast and copied (the same numbers on every device and dtype)."""
    if param.dtype == torch.float32 and param.device.type == "cpu":
        draw(param)
    else:
        param.copy_(draw(torch.empty(param.shape, dtype=torch.float32)))


def init_weights_(module: nn.Module, gen: torch.Generator, scheme: str = "default") -> None:
    """Re-draw every conv/linear weight (and bias) from ``gen``; norms get weight 1, bias 0.

    ``default`` is PyTorch's own initialisation (kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in),
    1/sqrt(fan_in))), which is what the original code ends up using.  ``kaiming_normal`` is the initialisation it
    intended (N(0, 2/fan_in)).

    The draws are float32 on the CPU whatever the module's dtype and device (a float64 or CUDA module gets them
    cast and copied): torch draws another stream for float64 tensors, and ``search.grad_dtype: float64`` must score
    the same network in more precision.
    """
    if scheme not in ("default", "kaiming_normal"):
        raise ValueError(f"unknown init scheme {scheme!r}")
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                if scheme == "default":
                    _draw_(m.weight, lambda w: w.uniform_(-bound, bound, generator=gen))
                else:
                    _draw_(m.weight, lambda w: w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen))
                if m.bias is not None:
                    _draw_(m.bias, lambda b: b.uniform_(-bound, bound, generator=gen))
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
