"""The methods in one table: what each scores, whether it searches, its kernel, its label in the tables.

Every decision that depends on a method is read off its entry here (``method(name).kernel``, ``.searched``, ...),
never by comparing its name; adding a method means one entry and, if it scores something new, its scorer.  The
config schema's list of methods (grid.methods) is checked against this table by a test.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str                  # its row in Tables 1 and 2
    searched: bool              # a cell of its own per seed; False: a published cell (config/genotypes.yaml)
    pruned: bool                # TE-NAS pruning rounds; False: a random draw, or no search
    kernel: str | None          # the kernel of its search's score: "MetaNTK", "NTK" (TE-NAS's) or None
    regions: bool               # the linear-region score in its search
    style: tuple[str, str] | None = None   # colour and marker in the study's plots (searched methods)


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("metantk", "MetaNTK-NAS", searched=True, pruned=True, kernel="MetaNTK", regions=True,
           style=("tab:red", "*")),
    Method("tenas", "TE-NAS", searched=True, pruned=True, kernel="NTK", regions=True, style=("tab:blue", "s")),
    Method("linreg", "Linear Region", searched=True, pruned=True, kernel=None, regions=True,
           style=("tab:green", "^")),
    Method("random", "Random Cell", searched=True, pruned=False, kernel=None, regions=False,
           style=("tab:purple", "D")),
    Method("metanas", "MetaNAS(retrained)†", searched=False, pruned=False, kernel=None, regions=False),
)}
METHODS = tuple(REGISTRY)
SEARCHED_METHODS = tuple(n for n, m in REGISTRY.items() if m.searched)
PUBLISHED_METHOD = next(n for n, m in REGISTRY.items() if not m.searched)   # the published MetaNAS cell
RANDOM_METHOD = next(n for n, m in REGISTRY.items() if m.searched and not m.pruned)   # the study's random cells
TABLE1_METHODS = (PUBLISHED_METHOD, "metantk")                 # Table 1's rows per cell count, in order
TABLE2_METHODS = SEARCHED_METHODS                              # Table 2: the ablation, in order
KERNEL_METHODS = {m.kernel: n for n, m in REGISTRY.items() if m.kernel}   # "MetaNTK" -> metantk, "NTK" -> tenas


def method(name: str) -> Method:
    """The entry of ``name``; a KeyError naming the known methods for any other."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(REGISTRY)})") from None
