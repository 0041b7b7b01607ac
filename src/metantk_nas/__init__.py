"""MetaNTK-NAS reproduction pipeline: data, search space, training-free scores, search, RFS training,
few-shot evaluation, and the paper's tables with provenance."""

import os

__version__ = "0.1.0"

# torch's CPU allocator puts tensors of 2 MB and more on transparent huge pages when this is set before torch loads:
# a paper-size training step spends a third less time in the kernel's page faults (docs/scaling.md: 18.4 s -> 14.0 s
# per step on 2 cores), with bit-identical results (tests/test_rehearsal.py). Importing any part of this package
# first sets it; a value of the caller's own (0 to turn it off) is kept.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
