"""Round-batched scoring (search.batch_candidates): many networks of one supernet in one forward/backward pass,
each sample carrying its own network's mask and head, must give each network's own kernel.

The reference is the one-by-one path (each network alone through the `fast` backend, itself checked against
Opacus and TE-NAS's per-sample backward loop in test_search.py and test_fidelity.py), and for the gram terms a
per-sample gradient loop written here.  Condition numbers agree to 1e-6 relative in float64; each candidate's
unrounded dK agrees within a stated tolerance (DK_TOL) in float32 and float64, whatever the pass size.  Not bit for
bit: a BLAS may take another path for another batch shape (issue 30), which is why batching is opt-in.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from metantk_nas.config import FidelitySwitches, KernelSpec, load_config, search_config
from metantk_nas.data.prepared import load_split
from metantk_nas.kernels.ntk import group_gram_terms, sum_gram_terms
from metantk_nas.nas.networks import SampleMasks, SuperNet, full_mask
from metantk_nas.nas.ops import OP_NAMES
from metantk_nas.search.pruning import PruningSearch, initial_mask
from metantk_nas.search.scoring import Scorer

from helpers import masks_of_a_round, networks_of_a_round, small_cfg

ROOT = Path(__file__).resolve().parents[1]


def test_per_sample_masks_give_each_network_its_own_forward_pass():
    torch.manual_seed(0)
    net = SuperNet(8, 5, 10, "groupnorm16").double()
    masks = masks_of_a_round(OP_NAMES)
    x = torch.randn(len(masks) * 3, 3, 16, 16, dtype=torch.float64)
    batched = net.features(x, SampleMasks(np.stack(masks), 3, torch.float64))
    for g, m in enumerate(masks):
        alone = net.features(x[3 * g:3 * g + 3], m)
        torch.testing.assert_close(batched[3 * g:3 * g + 3], alone, rtol=1e-12, atol=1e-12)
    # a changed mask changes the output: the masks are really per sample
    assert not torch.allclose(batched[:3], batched[3:6])


def test_per_sample_masks_refuse_a_node_without_a_live_edge():
    m = full_mask()
    m[0, 0:2] = False   # node 0 of the normal cell has no input
    with pytest.raises(ValueError, match="network 1: a node has no live incoming edge"):
        SampleMasks(np.stack([full_mask(), m]), 2, torch.float64)


def test_group_gram_terms_equal_a_per_sample_backward_loop():
    """Two groups of 3 samples through a small conv net: each group's gram equals the gram of per-sample
    gradients taken one sample at a time with autograd (no hooks, no batching)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4, padding=1),
                          nn.Flatten(), nn.Linear(4 * 25, 3)).double()
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    names = ["0.weight", "2.weight", "4.weight"]
    terms = group_gram_terms(lambda z: model(z).sum(), dict(model.named_modules()), x, names, 3)
    grams = sum_gram_terms(terms, names)
    params = dict(model.named_parameters())
    rows = []
    for xi in x:
        g = torch.autograd.grad(model(xi[None]).sum(), [params[n] for n in names])
        rows.append(torch.cat([t.flatten() for t in g]))
    j = torch.stack(rows)
    for g in range(2):
        block = j[3 * g:3 * g + 3]
        torch.testing.assert_close(grams[g], block @ block.T, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_gram_terms(lambda z: model(z).sum(), dict(model.named_modules()), x, names, 4)


def test_sum_gram_terms_adds_the_present_terms_in_order_and_refuses_none():
    """By hand: the terms of the listed names that are present, summed; none present is an error saying why."""
    a, b = torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 10.0)
    assert torch.equal(sum_gram_terms({"a": a, "b": b, "c": b}, ["a", "missing", "b"]), torch.full((1, 2, 2), 11.0))
    with pytest.raises(ValueError, match="^no parameter of the kernel takes part in the forward pass$"):
        sum_gram_terms({"a": a}, ["missing"])


@pytest.mark.parametrize("method,inner", [("metantk", "maml"), ("metantk", "anil"), ("tenas", None)])
def test_batched_condition_numbers_equal_one_by_one_in_float64(method, inner, tiny_prepared):
    kernel = KernelSpec(inner, float("inf") if inner == "maml" else 1.0, 1e-3) if inner else None
    cfg = replace(small_cfg(method), kernel=kernel, grad_dtype="float64", tasks_per_batch=2, ntk_batch=8)
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
    scorer.reinit_kernel_net(0)
    nets = networks_of_a_round(scorer, cfg, 5)
    alone = [scorer.kernel_condition(m, x, h) for m, x, h in nets]
    for per_pass in (5, 2):   # all in one pass, and chunks of 2 (the last one alone)
        scorer._pass_networks = per_pass
        batched = scorer.batched_conditions(nets)
        np.testing.assert_allclose(batched, alone, rtol=1e-6)
    assert len(set(np.round(alone, 6))) == len(alone)   # the networks' kernels really differ


UNROUNDED = 15   # decimals dK is rounded to: the relative change itself, not its 3-decimal rounding
F64_TOL = 1e-9   # |dK batched - dK one by one| allowed in float64
# In float32 the MetaNTK's condition number amplifies the kernels' rounding (its Theta_ss^-1 on near-singular tiny
# kernels), so a float32 dK is itself only as good as float32 allows: measured against float64 on these configs,
# one-by-one float32 dKs are off by up to ~0.2 (docs/kernels.md).  The batched float32 dK must be as close to the
# float64 truth as the one-by-one float32 dK is: within 2x its worst error, plus F32_FLOOR.
F32_FLOOR = 1e-3


def unrounded_deltas(scorer, work, shared, per_pass: int | None) -> list[float]:
    """dK of each (origin, candidate, key), mean over the repeats, one by one (per_pass None) or round-batched."""
    if per_pass is None:
        return [float(np.mean([scorer.kernel_delta(o, c, *key, r, shared=shared[r] if shared else None)
                               for r in range(scorer.cfg.repeats)])) for o, c, key in work]
    scorer._pass_networks = per_pass
    return scorer.kernel_deltas(work, shared)


def test_batched_kernel_deltas_equal_kernel_delta_per_candidate(tiny_prepared):
    """dK of each candidate, averaged over 2 repeats, unrounded: round-batched against one by one, with a fresh
    batch per candidate and with a shared origin, in float64."""
    for fresh in (True, False):
        cfg = replace(small_cfg(), repeats=2, precision=UNROUNDED, grad_dtype="float64",
                      fidelity=FidelitySwitches(fresh_batch_per_candidate=fresh))
        scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
        scorer.reinit_kernel_net(3)
        origin, *cands = masks_of_a_round(cfg.ops)
        work = [(origin, c, (3, k)) for k, c in enumerate(cands)]
        shared = None if fresh else [scorer.shared_origin(origin, 3, 99, r) for r in range(2)]
        one = unrounded_deltas(scorer, work, shared, None)
        np.testing.assert_allclose(unrounded_deltas(scorer, work, shared, len(work)), one, rtol=0, atol=F64_TOL)
        assert len({round(d, 6) for d in one}) == len(one)   # the candidates' dKs really differ


def round_zero(cfg, prepared, every: int) -> tuple[Scorer, list, list | None]:
    """The scorer, every ``every``-th (origin, candidate, key) of round 0 of a search of ``cfg``, and the shared
    origins."""
    scorer = Scorer(cfg, load_split(prepared, "train"), torch.device("cpu"))
    mask = initial_mask(cfg.ops)
    scorer.reinit_kernel_net(0)
    work = []
    for c in range(2):
        for e in range(mask.shape[1]):
            for o in np.flatnonzero(mask[c, e]):
                cand = mask.copy()
                cand[c, e, o] = False
                work.append((mask, cand, (0, len(work))))
    return scorer, work[::every], PruningSearch(cfg, scorer, progress=False)._shared(mask, 0)


@pytest.mark.chunking
@pytest.mark.parametrize("config,method,cells,fresh", [   # the 8-cell and smoke cases: in `make test` only (sweep)
    ("tests/configs/tiny.yaml", "metantk", 5, False), pytest.param("tests/configs/tiny.yaml", "metantk", 8, True,
                                                                   marks=pytest.mark.sweep),
    ("tests/configs/tiny.yaml", "tenas", 5, True), pytest.param("config/smoke.yaml", "metantk", 5, True,
                                                                marks=pytest.mark.sweep)])
def test_round_batched_unrounded_dk_is_one_by_ones_whatever_the_pass_size(config, method, cells, fresh, tiny_prepared):
    """A third of round 0's candidates (the configs' own repeats), their dK before rounding (MAML at 5 cells, ANIL
    at 8, tenas): round-batched in passes of 1, 2, 3 and all networks against one by one.  float64: within
    F64_TOL.  float32 (the configs' own): as close to the float64 one-by-one dK as the float32 one-by-one dK is.
    Not bit for bit: a BLAS may take another path for another batch shape (issue 30), so searches are compared
    whole only at one pass size (test_search.py's resume tests)."""
    cfg = load_config([ROOT / "config/config.yaml", ROOT / config])
    sc = search_config(cfg, "synthetic", method, cells, 0)
    sc = replace(sc, precision=UNROUNDED, batch_candidates=True,
                 fidelity=replace(sc.fidelity, fresh_batch_per_candidate=fresh))
    dks = {}
    for dtype in ("float64", "float32"):
        scorer, work, shared = round_zero(replace(sc, grad_dtype=dtype), tiny_prepared, every=3)
        networks = len(work) * (2 if fresh else 1)
        for per_pass in (None, networks) if dtype == "float64" else (None, 1, 2, 3, networks):
            dks[dtype, per_pass] = np.array(unrounded_deltas(scorer, work, shared, per_pass))
    truth = dks["float64", None]
    assert len(set(np.round(truth, 3))) > 1   # the candidates' dKs really differ
    np.testing.assert_allclose(dks["float64", networks], truth, rtol=0, atol=F64_TOL)
    err32 = float(np.max(np.abs(dks["float32", None] - truth)))
    worst = {p: float(np.max(np.abs(d - truth))) for (dt, p), d in dks.items() if dt == "float32" and p}
    print(f"float32 max |dK - float64 dK|: one by one {err32:.2e}, batched by pass size {worst}")
    assert max(worst.values()) <= 2 * err32 + F32_FLOOR, (err32, worst)


def test_batch_statistics_or_opacus_score_one_by_one(tiny_prepared):
    train = load_split(tiny_prepared, "train")
    for cfg in (replace(small_cfg("tenas"), norm="batchnorm", batch_candidates=True),
                replace(small_cfg(), ntk_backend="opacus", batch_candidates=True),
                replace(small_cfg(), batch_candidates=False), replace(small_cfg("linreg"), batch_candidates=True)):
        search = PruningSearch(cfg, Scorer(cfg, train, torch.device("cpu")), progress=False)
        assert not search.scorer.batchable() or cfg.method == "linreg"
        assert search._chunk() == 1
    assert not Scorer(small_cfg(), train, torch.device("cpu")).batchable()   # opt-in (issue 30)
    cfg = replace(small_cfg(), batch_candidates=True)
    assert Scorer(cfg, train, torch.device("cpu")).batchable()
    alone = Scorer(cfg, train, torch.device("cpu"))
    alone._pass_networks = 1   # one network per pass is the one-by-one path (which bounds memory by ntk_chunk)
    assert not alone.batchable() and PruningSearch(cfg, alone, progress=False)._chunk() == 1


def test_networks_per_pass_follows_the_memory_budget(tiny_prepared):
    """The estimate: twice the bytes of every module output of a one-sample forward pass, per sample."""
    train = load_split(tiny_prepared, "train")
    cfg = small_cfg()
    scorer = Scorer(cfg, train, torch.device("cpu"))
    total = 0

    def count(m, i, out):
        nonlocal total
        total += out.numel() * out.element_size()

    leaves = [m for m in scorer.kernel_net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    with torch.no_grad():
        scorer.kernel_net.features(torch.zeros(1, 3, 8, 8), full_mask())
    for h in handles:
        h.remove()
    per_network = 2 * total * 10
    for mb in (1, 64, 4096):
        s = Scorer(replace(cfg, batch_memory_mb=mb, batch_candidates=True), train, torch.device("cpu"))
        assert s.networks_per_pass() == max(1, mb * 2 ** 20 // per_network)
        # a pass holds networks of kernel_group samples: 1 task x (5 supports + 5 queries) = 10 here
        assert s.pass_size() == (max(1, mb * 2 ** 20 // per_network) if s.batchable() else 1)
    assert Scorer(replace(cfg, batch_memory_mb=4096, batch_candidates=True), train, torch.device("cpu")).batchable()
    # grad_dtype float64: the same outputs at 8 bytes each, twice the float32 count above
    s = Scorer(replace(cfg, batch_memory_mb=64, batch_candidates=True, grad_dtype="float64"), train, torch.device("cpu"))
    assert s.networks_per_pass() == max(1, 64 * 2 ** 20 // (2 * per_network))
