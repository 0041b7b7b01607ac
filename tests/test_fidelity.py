"""Our networks and scores reproduce figures produced by running the ORIGINAL MetaNTK-NAS code.

The original's weights, inputs and outputs are in ``tests/fidelity/`` (a copy of ``shared/fidelity/``; its README
says how they were made and names every parameter).  The weights are loaded into our networks through
:mod:`metantk_nas.nas.original`, so nothing here is computed by the code under test on both sides.

Tolerances (float32, as the original): region counts are compared exactly (they are integers; the original's are
float32 sums of 1/k, rounded).  Kernels: max |ours - original| <= 1e-5 * max |original| (the README's suggestion;
the original's own float32 kernels differ from its float64 run by ~1e-6).  Condition numbers: 2e-5 relative: the
original's float32 plain-NTK condition number of the origin is itself 7.1e-6 away from its float64 value (224.3519
vs 224.3535) and ours is as far on the other side of float64, so the two float32 figures can differ by twice that;
the MetaNTK condition numbers agree to ~1e-6.  float64 runs against the original's float64 figures: 1e-9.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from metantk_nas.config import FidelitySwitches, KernelSpec, SearchConfig
from metantk_nas.data.prepared import PreparedSplit
from metantk_nas.kernels.linear_regions import activation_patterns, count_by_hamming, count_unique_patterns, relu_modules
from metantk_nas.kernels.metantk import condition_number
from metantk_nas.nas.networks import SuperNet, thin_supernet
from metantk_nas.nas.original import load_original_state_dict, mask_from_alphas, to_ours
from metantk_nas.search.scoring import KernelBatch, Scorer

FIDELITY = Path(__file__).parent / "fidelity"
# (backend, dtype): every per-sample backend in both precisions; ``coupled`` (the train-mode BatchNorm path, one
# VJP per sample: ~10x the cost of the others on CPU) in float32 only.
# Marked `sweep`: the Opacus and coupled backends' cases and the full single-op sweep: `make test` runs them, the
# quick tier leaves them out. It checks the default (fast) backend against the original in both precisions and every
# 9th single-op mask; test_kernels.py checks Opacus and coupled against fast and TE-NAS's per-sample loop.
SWEEP = pytest.mark.sweep
BACKEND_DTYPES = [(b, d) for b in ("fast", "opacus") for d in ("float32", "float64")] + [("coupled", "float32")]
RUNS = {"MAML_tinf_reg1e-3": KernelSpec("maml", math.inf, 1e-3), "ANIL_t1_reg1e-5": KernelSpec("anil", 1.0, 1e-5)}


def _alive_to_mask(alive) -> np.ndarray:
    a = np.asarray(alive)
    return mask_from_alphas(np.where(a[0] > 0, 0.0, -1000.0), np.where(a[1] > 0, 0.0, -1000.0))


# -- the linear-region network ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def thin():
    torch.set_num_threads(1)
    net = thin_supernet(1, 64)
    load_original_state_dict(net, dict(np.load(FIDELITY / "thin_state_dict.npz")))
    return net.train()


def _patterns(net, mask, inputs):
    return activation_patterns(lambda z: net(z, mask), relu_modules(net), list(inputs))


def test_thin_network_is_one_normal_cell_then_one_reduction_cell_of_twice_the_width(thin):
    layout = json.loads((FIDELITY / "thin_layout.json").read_text())
    assert [(c.reduction, c.pre1[1].out_channels) for c in thin.cells] == [(False, 1), (True, 2)]
    assert isinstance(thin.stem, nn.Identity)                       # no stem: the raw input feeds both cell inputs
    assert thin.cells[0].pre0[1].in_channels == thin.cells[0].pre1[1].in_channels == 1
    assert thin.cells[1].pre0[1].in_channels == 1 and thin.cells[1].pre1[1].in_channels == 3
    assert thin.feature_dim == 6 and thin.classifier.in_features == 6
    norms = [m for m in thin.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))]
    assert norms and all(isinstance(m, nn.BatchNorm2d) and m.training for m in norms)   # BatchNorm, train mode
    x = torch.zeros(4, 1, 3, 3)
    s0 = s1 = x
    shapes = []
    full = np.ones((2, 9, 7), dtype=bool)
    for cell in thin.cells:
        s0, s1 = s1, cell(s0, s1, full[int(cell.reduction)])
        shapes.append(tuple(s1.shape[1:]))
    assert shapes == [(3, 3, 3), (6, 2, 2)]
    assert [tuple(c["input_shapes_s0_s1_and_output_CHW"][2]) for c in layout["cells"]] == shapes
    assert [c["reduction"] for c in layout["cells"]] == [False, True]


def test_every_parameter_of_the_originals_thin_network_maps_onto_ours(thin):
    state = dict(np.load(FIDELITY / "thin_state_dict.npz"))
    mapping = load_original_state_dict(thin_supernet(1, 64), state)
    assert set(mapping) == set(thin.state_dict())                    # strict: every entry of ours got a value
    assert set(mapping.values()) == {k for k in state if not k.startswith(("stem.", "arch_"))}
    assert to_ours("cells.1.edges.0<-0._ops.2.op_b.op.1.weight") == "cells.1.ops.0.1.1.1.weight"
    assert to_ours("cells.1.edges.2<-3._ops.1.convs.1.weight") == "cells.1.ops.8.0.conv_2.weight"
    with pytest.raises(KeyError):
        to_ours("cells.0.edges.0<-0._ops.0.weight")


@pytest.mark.parametrize("inputs,stride", [pytest.param("line", 1, marks=SWEEP), ("line", 9), ("randn", 9)])
def test_thin_network_reproduces_the_originals_activation_patterns_and_region_counts(thin, inputs, stride):
    """Every recorded mask (stride 1; the quick tier: every 9th single-op removal)."""
    x = torch.as_tensor(np.load(FIDELITY / f"thin_inputs_{inputs}.npz")["inputs"])
    ref = json.loads((FIDELITY / f"thin_linear_regions_{inputs}.json").read_text())
    full = _alive_to_mask(ref["full"]["mask_alive"])
    pats = _patterns(thin, full, x)
    assert pats.shape[1] == ref["full"]["n_neuron"] == 1191
    assert count_unique_patterns(pats) == round(ref["full"]["count"]) == round(count_by_hamming(pats))
    if inputs == "line":   # the sign of every recorded ReLU unit, in the original's firing order
        debug = np.load(FIDELITY / "thin_full_mask_debug_line.npz")
        original = np.unpackbits(debug["relu_sign_patterns_packed"], axis=1)[:, : int(debug["n_neuron"])]
        assert np.array_equal(pats.numpy(), original.astype(bool))
    for name, entry in ref["multi_op_masks"].items():
        p = _patterns(thin, _alive_to_mask(entry["mask_alive"]), x)
        assert (count_unique_patterns(p), p.shape[1]) == (round(entry["count"]), entry["n_neuron"]), name
    singles = ref["single_op_removed"][::stride]
    changed_normal = 0
    for r in singles:
        mask = full.copy()
        mask[r["cell_type"], r["edge_index"], r["op_index"] - 1] = False
        p = _patterns(thin, mask, x)
        got = count_unique_patterns(p)
        assert (got, p.shape[1]) == (round(r["count"]), r["n_neuron"]), (r["cell_type_name"], r["edge_key"], r["op_name"])
        changed_normal += r["cell_type"] == 0 and got != round(ref["full"]["count"])
    if inputs == "line" and stride == 1:
        # removing a single NORMAL-cell op changes the count (62 of 63 times here): the normal mask reaches the net
        assert changed_normal == 62


# -- MetaNTK and plain NTK on the original's C=4 supernet --------------------------------------------------------------
def _split() -> PreparedSplit:
    """Stands in for the train split: the kernel network's own classifier has 64 outputs, as the original's."""
    return PreparedSplit(np.zeros((128, 8, 8, 3), np.uint8), np.repeat(np.arange(64), 2), (0.5,) * 3, (0.25,) * 3)


def _scorer(method: str, backend: str, dtype: str, kernel: KernelSpec | None = None) -> Scorer:
    cfg = SearchConfig(method=method, cells=5, seed=0, kernel=kernel, channels=4, ntk_backend=backend,
                       grad_dtype=dtype, ntk_chunk=0, fidelity=FidelitySwitches())   # chunk 0: one pass, all 30
    scorer = Scorer(cfg, _split(), torch.device("cpu"))
    net = SuperNet(4, 5, 64, "groupnorm16")
    load_original_state_dict(net, dict(np.load(FIDELITY / "metantk_C4_state_dict.npz")))
    scorer.kernel_net.load_state_dict(net.state_dict())
    return scorer


def _reference(dtype: str):
    tag = "metantk_C4_float64" if dtype == "float64" else "metantk_C4"
    return (json.loads((FIDELITY / f"{tag}_results.json").read_text()),
            dict(np.load(FIDELITY / f"{tag}_results_arrays.npz")))


def _masks():
    state = np.load(FIDELITY / "metantk_C4_state_dict.npz")
    origin = mask_from_alphas(state["arch_normal_parameters"], state["arch_reduce_parameters"])
    candidate = origin.copy()
    candidate[0, 0, 1] = False   # (normal, edge 0<-0, sep_conv_3x3): original op index 2
    return {"origin": origin, "candidate": candidate}


def _x(dtype: str) -> torch.Tensor:
    return torch.as_tensor(np.load(FIDELITY / "metantk_batch.npz")["xs_kernel_order"]).to(getattr(torch, dtype))


def _close_kernel(ours: torch.Tensor, original: np.ndarray, rtol: float) -> None:
    ref = torch.as_tensor(original, dtype=torch.float64)
    err = float((ours.double() - ref).abs().max() / ref.abs().max())
    assert err <= rtol, err


def _tolerances(dtype: str) -> tuple[float, float]:
    return (1e-5, 2e-5) if dtype == "float32" else (1e-9, 1e-9)


# coupled: MAML only; ANIL's K is the head-weight part of the same pass (test_anil_kernel_is_the_head_weight_gram)
@pytest.mark.parametrize("run,backend,dtype", [pytest.param(r, b, d, marks=[SWEEP] if b != "fast" else [])
                                               for r in sorted(RUNS) for b, d in BACKEND_DTYPES
                                               if b != "coupled" or r.startswith("MAML")])
def test_metantk_reproduces_the_originals_kernels_and_condition_numbers(run, backend, dtype):
    results, arrays = _reference(dtype)
    scorer = _scorer("metantk", backend, dtype, RUNS[run])
    x = _x(dtype)
    k_tol, c_tol = _tolerances(dtype)
    for i, (name, mask) in enumerate(_masks().items()):
        head = nn.Linear(48, 5).to(x.dtype)
        with torch.no_grad():   # the head the original drew for this network (head0: origin, head1: candidate)
            head.weight.copy_(torch.as_tensor(arrays[f"{run}_head{i}_weight"]))
            head.bias.copy_(torch.as_tensor(arrays[f"{run}_head{i}_bias"]))
        theta, k, phi = scorer.metantk_kernels(mask, KernelBatch(x, 3, 15), head)
        _close_kernel(theta, arrays[f"{run}_{name}_ntk"], k_tol)
        _close_kernel(k, arrays[f"{run}_{name}_K"], k_tol)
        _close_kernel(phi, arrays[f"{run}_{name}_metantk"], k_tol)
        cond = condition_number(phi)   # what Scorer.metantk_condition returns for this Phi
        expected = results[run]["cond_origin_full_supernet" if name == "origin" else "cond_candidate"]
        assert cond == pytest.approx(expected, rel=c_tol), (name, cond, expected)


@pytest.mark.parametrize("backend,dtype", [pytest.param(b, d, marks=[SWEEP] if b != "fast" else [])
                                           for b, d in BACKEND_DTYPES])
def test_plain_ntk_reproduces_the_originals_kernels_and_condition_numbers(backend, dtype):
    """``tenas``: the gradient of the sum of the supernet's own 64 logits, classifier weight included (once)."""
    results, arrays = _reference(dtype)
    scorer = _scorer("tenas", backend, dtype)
    x = _x(dtype)
    k_tol, c_tol = _tolerances(dtype)
    for name, mask in _masks().items():
        kernel = scorer.ntk_kernel(mask, x)
        _close_kernel(kernel, arrays[f"NTK_plain_{name}_ntk"], k_tol)
        expected = results["NTK_plain"]["cond_origin_full_supernet" if name == "origin" else "cond_candidate"]
        assert condition_number(kernel) == pytest.approx(expected, rel=c_tol), name   # = Scorer.ntk_condition


def test_the_original_figures_are_what_the_paper_pair_of_networks_gives():
    """The candidate's condition numbers differ from the origin's by far more than the tolerances above, so a
    kernel that ignored the mask, or mixed up the two heads, could not pass them."""
    results, _ = _reference("float32")
    for run in (*RUNS, "NTK_plain"):
        o, c = results[run]["cond_origin_full_supernet"], results[run]["cond_candidate"]
        assert abs(o - c) / o > 100 * 2e-5
    assert condition_number(torch.diag(torch.tensor([2.0, 8.0]))) == 4.0
