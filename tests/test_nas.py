"""The search space and networks: ops, masks, the supernet and the stacked evaluation network, genotypes and
the original's Genotype strings."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from metantk_nas.nas.genotype import Genotype, edge_list, from_mask, random_genotype
from metantk_nas.nas.networks import (EvalNet, SuperNet, eval_net_parameters, evalnet_layout, full_mask,
                                      supernet_layout)
from metantk_nas.nas.ops import OP_NAMES, make_op

from helpers import ROOT

PUBLISHED = {k: Genotype.from_darts(v["genotype"]) for k, v in yaml.safe_load((ROOT / "config/genotypes.yaml").read_text()).items()}


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_shape(name, stride):
    op = make_op(name, 6, stride, "batchnorm")
    y = op(torch.randn(2, 6, 10, 10))
    assert y.shape == (2, 6, 10 // stride, 10 // stride)


@pytest.mark.parametrize("cells", [5, 8])
@pytest.mark.parametrize("size", [32, 84])
def test_network_shapes(cells, size):
    net = SuperNet(4, cells, 7, "groupnorm16")
    f, logits = net(torch.randn(2, 3, size, size), full_mask())
    assert f.shape == (2, 3 * 4 * 4) and logits.shape == (2, 7)
    ev = EvalNet(PUBLISHED["metanas_in_v2"], 4, cells, 7)
    assert ev(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_reductions_at_one_and_two_thirds():
    assert [r for _, r in supernet_layout(5)] == [False, True, False, True, False]
    assert [r for _, r in supernet_layout(8)] == [False, False, True, False, False, True, False, False]
    for d in (5, 8):
        assert supernet_layout(d) == evalnet_layout(d)


def test_pruning_one_op_changes_exactly_that_edge():
    torch.manual_seed(0)
    net = SuperNet(4, 5, 3, "groupnorm16").eval()
    cell = net.cells[0]
    x0, x1 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    states = [cell.pre0(x0), cell.pre1(x1)]
    mask = full_mask()[0]
    e, o = 3, OP_NAMES.index("conv_3x3")  # edge 1<-1
    pruned = mask.copy()
    pruned[e, o] = False
    i, j = edge_list()[e]
    live = np.flatnonzero(pruned[e])
    expected = sum(cell.ops[e][k](states[j]) for k in live) / len(live)
    full_edge = sum(cell.ops[e][k](states[j]) for k in range(len(OP_NAMES))) / len(OP_NAMES)
    # node 1 output with the pruned mask = full output - old edge + new edge
    out_full = cell(x0, x1, mask)
    out_pruned = cell(x0, x1, pruned)
    c = 4
    assert torch.allclose(out_pruned[:, :c], out_full[:, :c])                       # node 0 untouched
    assert torch.allclose(out_pruned[:, c:2 * c] - out_full[:, c:2 * c], expected - full_edge, atol=1e-5)


def _copy_supernet_into_evalnet(sn, ev, genotype):
    ev.stem.load_state_dict(sn.stem.state_dict())
    ev.classifier.load_state_dict(sn.classifier.state_dict())
    edges = edge_list()
    for sc, ec in zip(sn.cells, ev.cells):
        ec.pre0.load_state_dict(sc.pre0.state_dict())
        ec.pre1.load_state_dict(sc.pre1.state_dict())
        nodes = genotype.reduce if sc.reduction else genotype.normal
        for i, node in enumerate(nodes):
            for k, (op, inp) in enumerate(node):
                target = ec.ops[i][k]
                target = target if isinstance(target, torch.nn.Identity) else target[0]
                target.load_state_dict(sc.ops[edges.index((i, inp))][OP_NAMES.index(op)].state_dict())


@pytest.mark.parametrize("cells", [5, 8])
def test_single_path_supernet_equals_evaluation_network(cells):
    """With weights copied, the supernet restricted to a genotype computes the evaluation network's function
    (the supernet built without its norm+ReLU before pooling, which AugmentCNN does not have)."""
    g = PUBLISHED["metantk_mini_8cell_1"]  # has skip_connect on a reduction input
    torch.manual_seed(1)
    sn = SuperNet(6, cells, 5, "batchnorm", head_act=False)
    ev = EvalNet(g, 6, cells, 5)
    for m in sn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial running statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    _copy_supernet_into_evalnet(sn, ev, g)
    sn.eval(), ev.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(sn(x, g.to_mask())[1], ev(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_genotype_round_trips(name):
    g = PUBLISHED[name]
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_darts(g.to_darts()) == g
    assert Genotype.from_darts(g.to_darts(original_names=False)) == g
    by_input = Genotype.make([sorted(n, key=lambda p: p[1]) for n in g.normal],
                             [sorted(n, key=lambda p: p[1]) for n in g.reduce])
    assert from_mask(g.to_mask()) == by_input  # a mask lists each node's pairs by input index


def test_original_names_are_printed():
    s = PUBLISHED["metantk_mini_5cell_3"].to_darts()
    assert "'max_pool_3x3BN'" in s and s.startswith("Genotype(normal=[[('sep_conv_3x3', 0)")


def test_genotype_parser_refuses_code(tmp_path):
    """A genotype string is parsed as literals only: a call is refused, never run."""
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="cannot parse genotype string: malformed node"):
        Genotype.from_darts(f"Genotype(normal=__import__('os').system('touch {marker}'), reduce=[])")
    assert not marker.exists()


def test_random_cells_are_drawn_per_cells_and_seed():
    """The random baseline draws each (cells, seed) cell independently: a 5- and an 8-cell run of one seed differ."""
    assert all(random_genotype(s, 5) != random_genotype(s, 8) for s in range(5))
    assert len({random_genotype(s, c).to_json() for s in range(5) for c in (5, 8)}) == 10


def test_random_cells_are_drawn_from_the_configured_ops_uniformly():
    """The Random Cell baseline and the study's random sample come from the search space of ``search.ops``: with
    two ops each op is drawn about half the time (binomial: 200 cells x 12 edges, mean 0.5, sd 0.01), the full
    space in any order draws the same cells as the default, and an unknown op is refused."""
    two = ("max_pool_3x3", "sep_conv_3x3")
    ops = [op for s in range(200) for ct in ("normal", "reduce") for node in getattr(random_genotype(s, 5, two), ct)
           for op, _ in node]
    assert set(ops) == set(two) and len(ops) == 200 * 12
    assert abs(ops.count("max_pool_3x3") / len(ops) - 0.5) < 0.04   # 4 sd
    assert all(random_genotype(s, 5, tuple(reversed(OP_NAMES))) == random_genotype(s, 5) for s in range(10))
    with pytest.raises(ValueError, match="unknown operation"):
        random_genotype(0, 5, ("conv_9x9",))


def test_random_genotypes_are_valid_and_seeded():
    seen = set()
    for seed in range(50):
        g = random_genotype(seed, 5)
        assert random_genotype(seed, 5) == g
        assert from_mask(g.to_mask()) == Genotype.make(
            [sorted(n, key=lambda p: p[1]) for n in g.normal], [sorted(n, key=lambda p: p[1]) for n in g.reduce])
        EvalNet(g, 2, 5, 3)(torch.randn(1, 3, 16, 16))
        seen.add(g.to_json())
    assert len(seen) == 50


def test_drop_path_is_off_in_eval_mode():
    net = EvalNet(PUBLISHED["metanas_in_v2"], 4, 5, 3)
    net.set_drop_path(0.3)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(net(x), net(x))
    assert net(x).abs().sum() > 0
    net.train()
    torch.manual_seed(0)
    a = net.features(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, net.features(x))


def test_metanas_v2_parameter_counts_match_table_1():
    """Table 1, MetaNAS(retrained): 2.01M / 2.17M (5 cells), 3.53M / 3.70M (8 cells) for 64 / 351 classes."""
    g = PUBLISHED["metanas_in_v2"]
    got = [round(eval_net_parameters(g, 48, c, n) / 1e6, 2) for c in (5, 8) for n in (64, 351)]
    assert got == [2.01, 2.17, 3.53, 3.70]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_fast_max_pool_is_bitwise_torchs_max_pool(stride, size):
    """The pool of max_pool_3x3 (a separable max without autograd, channels_last with it) equals nn.MaxPool2d(3,
    stride, 1): values exactly, and the gradient routed to each window's maximum (to rounding)."""
    from metantk_nas.nas.ops import max_pool_3x3

    torch.manual_seed(size + stride)
    x = torch.randn(4, 3, size, size)
    ref = nn.MaxPool2d(3, stride, 1)
    with torch.no_grad():
        assert torch.equal(max_pool_3x3(x, stride), ref(x))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(ref(x))
    out = max_pool_3x3(xa, stride)
    assert torch.equal(out, ref(xb)) and out.is_contiguous()   # a max is exact on any path
    # the gradient: where an input is the maximum of several windows its cotangents are summed, in an order that
    # is each kernel's own (channels_last against NCHW), so compared to rounding, which still shows the routing
    torch.testing.assert_close(torch.autograd.grad(out, xa, g)[0], torch.autograd.grad(ref(xb), xb, g)[0],
                               rtol=1e-6, atol=1e-6)
