"""The names of the search space's operations (no torch: the genotype, its export and the tables use only these).

The order is the original's op index order (``DARTS_FEWSHOT`` without ``none``), which fixes the enumeration and
tie-breaking order of the search.  Names are MetaNAS's; the original MetaNTK-NAS code calls the pooling ops
``max_pool_3x3BN``/``avg_pool_3x3BN`` (see :data:`ALIASES`).  The modules are built in :mod:`.ops`.
"""
from __future__ import annotations

OP_NAMES: tuple[str, ...] = ("skip_connect", "sep_conv_3x3", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3",
                             "conv_1x5_5x1", "conv_3x3")
#: names used by the original MetaNTK-NAS code / genotype strings -> our names
ALIASES = {"max_pool_3x3BN": "max_pool_3x3", "avg_pool_3x3BN": "avg_pool_3x3"}
#: our names -> the original's (what its Genotype(...) strings print)
ORIGINAL_NAMES = {v: k for k, v in ALIASES.items()}


def canonical_op(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in OP_NAMES:
        raise ValueError(f"unknown operation {name!r}; expected one of {', '.join(OP_NAMES)}")
    return name
