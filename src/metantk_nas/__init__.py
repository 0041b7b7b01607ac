"""MetaNTK-NAS reproduction pipeline: data, search space, training-free scores, search, RFS training,
few-shot evaluation, and the paper's tables with provenance."""

__version__ = "0.1.0"
