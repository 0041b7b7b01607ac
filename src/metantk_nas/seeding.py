"""Explicit random streams: every draw of the pipeline takes a generator derived from integer keys (a seed, a
round, an epoch, a step...), never the global RNG, so each stage is deterministic and resumable from any point."""
from __future__ import annotations

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integer keys (numpy's SeedSequence: distinct keys give independent streams)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def torch_gen(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of the keys."""
    return torch.Generator().manual_seed(derive_seed(*parts))
