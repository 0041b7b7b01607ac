"""N-way K-shot Q-query episodes, deterministic in (seed, episode index), returned as index arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Episode:
    support: np.ndarray         # (ways*shots,) indices into the split, class-major
    support_labels: np.ndarray  # (ways*shots,) 0..ways-1
    query: np.ndarray           # (ways*queries,)
    query_labels: np.ndarray


class EpisodeSampler:
    """Samples episodes from a label array with its own generator per episode (never the global RNG).

    Episode ``i`` draws ``ways`` classes without replacement, then for each class ``shots + queries`` distinct
    images: the first ``shots`` are the support, the rest the queries (RFS draws queries from the images not in the
    support, which is the same distribution).
    """

    def __init__(self, labels: np.ndarray, ways: int, shots: int, queries: int, seed: int):
        labels = np.asarray(labels)
        self.by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        self.classes = np.array([c for c, idx in enumerate(self.by_class) if len(idx) >= shots + queries])
        if len(self.classes) < ways:
            raise ValueError(f"need {ways} classes with >= {shots + queries} images each, have {len(self.classes)}")
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, index])
        chosen = rng.choice(self.classes, self.ways, replace=False)
        sup, qry = [], []
        for c in chosen:
            pick = rng.choice(self.by_class[c], self.shots + self.queries, replace=False)
            sup.append(pick[: self.shots])
            qry.append(pick[self.shots:])
        return Episode(np.concatenate(sup), np.repeat(np.arange(self.ways), self.shots),
                       np.concatenate(qry), np.repeat(np.arange(self.ways), self.queries))

    def batch(self, indices: list[int] | np.ndarray) -> list[Episode]:
        return [self.episode(int(i)) for i in indices]
