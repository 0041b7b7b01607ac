"""Parameter names of the original code (YiteWang/MetaNTK-NAS ``NASNetworkDARTS``) mapped onto :class:`SuperNet`.

The original names a parameter ``cells.<k>.edges.<i><-<j>._ops.<o>.<path inside the op>`` with ``o`` the index in
``DARTS_FEWSHOT`` (0 = ``none``) and its own module paths inside each op (``op_a.op.1`` ...); see
``shared/fidelity/README.md`` §0.  :func:`to_ours` rewrites one name, :func:`load_original_state_dict` loads a whole
state_dict (its arch parameters, the alphas, become a mask elsewhere), so weights saved by the original run in our
networks: the fidelity tests reproduce the original's figures this way.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from .genotype import edge_list

ARCH_KEYS = ("arch_normal_parameters", "arch_reduce_parameters")
_EDGE = re.compile(r"^cells\.(\d+)\.edges\.(\d+)<-(\d+)\._ops\.(\d+)\.(.+)$")
# module paths inside one op / preprocessing block: original -> ours (applied to the path after the op)
_INSIDE = (
    (re.compile(r"^op_a\.op\.(\d+)\."), r"0.\1."),   # DualSepConv: first SepConv
    (re.compile(r"^op_b\.op\.(\d+)\."), r"1.\1."),   # DualSepConv: second SepConv
    (re.compile(r"^op\.(\d+)\."), r"\1."),           # SepConv / ReLUConvBN
    (re.compile(r"^net\.(\d+)\."), r"\1."),          # FacConv
    (re.compile(r"^convs\.0\."), "conv_1."),         # FactorizedReduce
    (re.compile(r"^convs\.1\."), "conv_2."),
    (re.compile(r"^bn\."), "norm."),                 # PoolBN, FactorizedReduce
)
_EDGE_INDEX = {f"{i}<-{j}": e for e, (i, j) in enumerate(edge_list())}


def _inside(path: str) -> str:
    for pattern, repl in _INSIDE:
        new, n = pattern.subn(repl, path)
        if n:
            return new
    raise KeyError(path)


def to_ours(name: str) -> str:
    """Our parameter/buffer name for one of the original's, e.g.
    ``cells.1.edges.0<-0._ops.2.op_b.op.1.weight`` -> ``cells.1.ops.0.1.1.1.weight``."""
    m = _EDGE.match(name)
    if m:
        cell, node, inp, op, rest = m.groups()
        if int(op) == 0:
            raise KeyError(f"{name}: the 'none' op has no parameters")
        return f"cells.{cell}.ops.{_EDGE_INDEX[f'{node}<-{inp}']}.{int(op) - 1}.{_inside(rest)}"
    m = re.match(r"^cells\.(\d+)\.preprocess([01])\.(.+)$", name)
    if m:
        return f"cells.{m.group(1)}.pre{m.group(2)}.{_inside(m.group(3))}"
    if name.startswith(("stem.", "lastact.", "classifier.")):
        return name
    raise KeyError(f"{name}: not a parameter name of the original NASNetworkDARTS")


def mask_from_alphas(normal: np.ndarray, reduce: np.ndarray) -> np.ndarray:
    """The original's arch parameters (alive 0, removed -1000; column 0 = ``none``) as our (2, 9, 7) mask."""
    alphas = np.stack([np.asarray(normal), np.asarray(reduce)])
    return alphas[:, :, 1:] > -1.0


def load_original_state_dict(net: nn.Module, state: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, str]:
    """Copy every entry of the original's state_dict into ``net`` (ours), strictly: each of our parameters and
    buffers must receive exactly one entry, with the same shape.  Entries of modules ``net`` does not have
    (the thin network's unused stem) are ignored only when ``net`` has no such module.  Returns ours -> original."""
    ours = net.state_dict()
    mapping: dict[str, str] = {}
    for name in state:
        if name in ARCH_KEYS:
            continue
        target = to_ours(name)
        if target not in ours:
            if target.startswith("stem.") and not any(k.startswith("stem.") for k in ours):
                continue   # use_stem=False: the original builds the stem anyway and never runs it
            raise KeyError(f"{name} -> {target}: no such entry in {type(net).__name__}")
        if target in mapping:
            raise KeyError(f"{name} and {mapping[target]} both map to {target}")
        mapping[target] = name
    missing = sorted(set(ours) - set(mapping))
    if missing:
        raise KeyError(f"{len(missing)} entries of {type(net).__name__} get no value, e.g. {missing[:3]}")
    with torch.no_grad():
        for target, name in mapping.items():
            value = torch.as_tensor(np.asarray(state[name]))
            if tuple(value.shape) != tuple(ours[target].shape):
                raise ValueError(f"{name}: shape {tuple(value.shape)} != {target} {tuple(ours[target].shape)}")
            ours[target].copy_(value.to(ours[target].dtype))
    return mapping
