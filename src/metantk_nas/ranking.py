"""The search's ranking rule (TE-NAS's): values sorted by their significant-figure key, dense ranks with ties only
for exactly equal values. Used by the pruning search and by the study's rank sum of whole architectures."""
from __future__ import annotations

import math


def round_sig(x: float, figures: int) -> float:
    """Round to significant figures (TE-NAS's ``round_to``), NaN-safe."""
    if not math.isfinite(x) or x == 0:
        return 0.0
    power = math.floor(math.log10(abs(x) + 1e-8)) + 1
    return math.copysign(round(abs(x) * 10 ** (-power), figures) * 10 ** power, x)


def dense_ranks(values: list[float], descending: bool, figures: int) -> list[int]:
    """Dense ranks after a stable sort by the significant-figure key (0 = first: the largest value when
    ``descending``; in the search, the most prunable); ties need exact equality with the previous value in that order."""
    order = sorted(range(len(values)), key=lambda i: round_sig(values[i], figures), reverse=descending)
    ranks = [0] * len(values)
    prev, rank = None, -1
    for i in order:
        if prev is None or values[i] != prev:
            rank += 1
        ranks[i] = rank
        prev = values[i]
    return ranks
