"""Number of linear regions (TE-NAS; research §5, §B.2): distinct ReLU activation patterns over the inputs.

Forward hooks on every ``nn.ReLU`` with a 4-D input record ``output > 0``; each sample's bits over all recorded
ReLUs form its pattern.  The original counts distinct patterns through a pairwise Hamming matrix,
sum_i 1 / #{j : pattern_j == pattern_i}; we count the unique rows directly (the same number, proven in a test).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn


def activation_patterns(forward: Callable[[torch.Tensor], object], relus: Iterable[nn.Module],
                        batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Boolean (N, D) matrix of ReLU signs, one row per input, over all batches."""
    rows: list[torch.Tensor] = []
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if inp[0].dim() == 4:
            captured.append((out > 0).flatten(1))

    handles = [r.register_forward_hook(hook) for r in relus]
    try:
        with torch.no_grad():
            for x in batches:
                captured.clear()
                forward(x)
                rows.append(torch.cat(captured, dim=1) if captured else torch.zeros(x.shape[0], 0, dtype=torch.bool))
    finally:
        for h in handles:
            h.remove()
    return torch.cat(rows, dim=0)


def count_unique_patterns(patterns: torch.Tensor) -> int:
    if patterns.shape[1] == 0:
        return 1
    return int(torch.unique(patterns.to(torch.uint8), dim=0).shape[0])


def count_by_hamming(patterns: torch.Tensor) -> float:
    """The original's formula (reference implementation, O(N^2 D))."""
    a = patterns.double()
    h = a @ (1 - a).T
    h = h + h.T
    same = (h == 0).double()
    return float((1.0 / same.sum(1)).sum())


def relu_modules(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.ReLU)]
