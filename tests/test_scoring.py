"""The search's scorer, one candidate at a time: what each fidelity switch draws, the kernels on the search's own
networks against Opacus, the kernel inputs' layout, the NaN sentinel, the relative change and the rank inputs.
Unit tests on a tiny supernet (no whole search: those are in test_search.py), so that a mutation run of
search/scoring.py takes seconds per mutant."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from metantk_nas.config import FidelitySwitches, KernelSpec
from metantk_nas.data.prepared import load_split
from metantk_nas.nas.ops import OP_NAMES
from metantk_nas.search import scoring
from metantk_nas.search.pruning import PruningSearch, initial_mask
from metantk_nas.search.scoring import Scorer

from helpers import TWO_OPS, small_cfg


@pytest.mark.parametrize("method,inner", [("metantk", "maml"), ("metantk", "anil"), ("tenas", None)])
def test_backends_agree_on_the_exact_kernel_each_method_computes(method, inner, tiny_prepared):
    """fast = opacus on the search's own configuration: its networks, batches and heads (for tenas, the
    supernet's own classifier), in float64."""
    train = load_split(tiny_prepared, "train")
    kernel = KernelSpec(inner, 1.0, 1e-5) if inner else None
    scorers = {b: Scorer(replace(small_cfg(method), kernel=kernel, ntk_backend=b, grad_dtype="float64"), train,
                         torch.device("cpu")) for b in ("fast", "opacus")}
    scorers["fast"].reinit_kernel_net(0)
    scorers["opacus"].kernel_net.load_state_dict(scorers["fast"].kernel_net.state_dict())
    cand = initial_mask(small_cfg().ops)
    cand[0, 3, OP_NAMES.index("conv_3x3")] = False
    for mask in (initial_mask(small_cfg().ops), cand):
        out = {}
        for b, s in scorers.items():
            inputs, head = s.kernel_inputs(0, 1, 0), s.new_head(0, 1, 0)
            out[b] = (s.metantk_kernels(mask, inputs, head) if method == "metantk" else (s.ntk_kernel(mask, inputs),))
        for a, b in zip(out["fast"], out["opacus"]):
            assert torch.allclose(a.double(), b.double(), rtol=1e-9, atol=1e-12)
    if method == "tenas":
        from metantk_nas.nas.networks import LogitsNet
        from metantk_nas.kernels.ntk import kernel_parameter_names
        net = LogitsNet(scorers["fast"].kernel_net, cand)
        assert "body.classifier.weight" in kernel_parameter_names(net, net.live_parameter)


# -- every fidelity switch changes what the docs say, and nothing else -------------------------------------------
def _spy(scorer, monkeypatch):
    calls = []

    def fake(mask, inputs, head):
        calls.append((mask.copy(), inputs, head))
        return 2.0 + float(mask.sum()) / 100
    monkeypatch.setattr(scorer, "kernel_condition", fake)
    return calls


def test_fresh_head_per_network_gives_the_candidate_its_own_head(tiny_prepared, monkeypatch):
    train = load_split(tiny_prepared, "train")
    origin = initial_mask(small_cfg().ops)
    cand = origin.copy()
    cand[1, 2, OP_NAMES.index("conv_3x3")] = False
    seen = {}
    for fresh in (True, False):
        cfg = replace(small_cfg(), fidelity=FidelitySwitches(fresh_head_per_network=fresh))
        scorer = Scorer(cfg, train, torch.device("cpu"))
        calls = _spy(scorer, monkeypatch)
        scorer.kernel_delta(origin, cand, 0, 5, 0)
        (m_o, x_o, h_o), (m_c, x_c, h_c) = calls
        assert x_o is x_c and (m_o == origin).all() and (m_c == cand).all()
        assert (h_o is not h_c) == fresh
        assert torch.equal(h_o.weight, h_c.weight) != fresh
        seen[fresh] = (x_o, h_o)
    # nothing else: the same batch and the same origin head either way
    assert torch.equal(seen[True][0].x, seen[False][0].x) and torch.equal(seen[True][1].weight, seen[False][1].weight)


def test_fresh_batch_per_candidate_recomputes_the_origin_on_its_own_batch(tiny_prepared, monkeypatch):
    assert FidelitySwitches().fresh_batch_per_candidate is True     # the original's behaviour is the default
    train = load_split(tiny_prepared, "train")
    mask = initial_mask(TWO_OPS)
    records = {}
    for fresh in (True, False):
        cfg = replace(small_cfg(ops=TWO_OPS), repeats=2, fidelity=FidelitySwitches(fresh_batch_per_candidate=fresh),
                      batch_candidates=False)   # the calls one by one (test_batched.py: the batched path's values)
        scorer = Scorer(cfg, train, torch.device("cpu"))
        calls = _spy(scorer, monkeypatch)
        _, records[fresh] = PruningSearch(cfg, scorer, progress=False).prune_round(mask, 0, lambda n: None)
        n_cand = len(records[fresh]["candidates"])
        origin_calls = [c for c in calls if (c[0] == mask).all()]
        batches = {id(c[1]) for c in calls}
        if fresh:   # per candidate and repeat: its own batch, the origin's kernel on it
            assert len(origin_calls) == n_cand * 2 and len(batches) == n_cand * 2
        else:       # one batch per repeat for the whole round, the origin's kernel once per repeat
            assert len(origin_calls) == 2 and len(batches) == 2
        assert len(calls) - len(origin_calls) == n_cand * 2
    # nothing else: the region scores are the same
    assert [c["dR"] for c in records[True]["candidates"]] == [c["dR"] for c in records[False]["candidates"]]


def test_default_init_is_pytorchs_default_and_the_switch_gives_kaiming_normal(tiny_prepared):
    train = load_split(tiny_prepared, "train")
    weights, inputs = {}, {}
    for default in (True, False):
        cfg = replace(small_cfg(), fidelity=FidelitySwitches(default_init=default))
        scorer = Scorer(cfg, train, torch.device("cpu"))
        scorer.reinit_kernel_net(0)
        scorer.reinit_thin(0, 0)
        w = torch.cat([m.weight.flatten() / (1 / m.weight[0].numel() ** 0.5) for m in scorer.kernel_net.modules()
                       if isinstance(m, torch.nn.Conv2d)])   # in units of 1/sqrt(fan_in)
        t = torch.cat([m.weight.flatten() * m.weight[0].numel() ** 0.5 for m in scorer.thin.modules()
                       if isinstance(m, torch.nn.Conv2d)])
        weights[default] = (w, t)
        inputs[default] = scorer.kernel_inputs(0, 0, 0).x
    # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) -> |w| <= 1, variance 1/3; kaiming normal: variance 2
    for w in weights[True]:
        assert w.abs().max() <= 1 and abs(float(w.var()) - 1 / 3) < 0.1
    for w in weights[False]:
        assert w.abs().max() > 1 and abs(float(w.var()) - 2) < 0.5
    assert torch.equal(inputs[True], inputs[False])   # nothing else: the same data


def test_cifar_normalisation_changes_only_the_kernel_inputs_constants(tiny_prepared):
    from metantk_nas.data.readers import CIFAR10_MEAN, CIFAR10_STD

    train = load_split(tiny_prepared, "train")
    got = {}
    for cifar in (True, False):
        for method in ("metantk", "tenas"):
            scorer = Scorer(replace(small_cfg(method), fidelity=FidelitySwitches(cifar_normalisation=cifar)), train,
                            torch.device("cpu"))
            inputs = scorer.kernel_inputs(0, 0, 0)
            x = inputs.x if method == "metantk" else inputs
            mean, std = (CIFAR10_MEAN, CIFAR10_STD) if cifar else (train.mean, train.std)
            raw = x * torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1) + torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
            got[cifar, method] = (raw, scorer.region_inputs(np.random.default_rng(0), torch.Generator().manual_seed(0)))
    for method in ("metantk", "tenas"):
        (raw_c, reg_c), (raw_d, reg_d) = got[True, method], got[False, method]
        assert torch.allclose(raw_c, raw_d, atol=1e-5)            # the same images, only normalised differently
        assert not torch.allclose(got[True, method][0], got[True, method][0] * 0 + raw_d.mean())
        assert all(torch.equal(a, b) for a, b in zip(reg_c, reg_d))   # the regions' inputs: unchanged


def test_nan_condition_is_the_value_of_a_nan_kernel(tiny_prepared, monkeypatch):
    train = load_split(tiny_prepared, "train")
    for method in ("metantk", "tenas"):
        cfg = replace(small_cfg(method), fidelity=FidelitySwitches(nan_condition=123.0))
        scorer = Scorer(cfg, train, torch.device("cpu"))
        inputs, head = scorer.kernel_inputs(0, 0, 0), scorer.new_head(0, 0, 0)
        mask = initial_mask(cfg.ops)
        finite = scorer.kernel_condition(mask, inputs, head)
        assert np.isfinite(finite) and finite != 123.0
        if method == "metantk":
            monkeypatch.setattr(scoring, "metantk", lambda *a, **k: torch.full((5, 5), float("nan")))
        else:
            monkeypatch.setattr(scorer, "ntk_kernel", lambda m, x: torch.full((6, 6), float("nan")))
        assert scorer.kernel_condition(mask, inputs, head) == 123.0
        monkeypatch.undo()


def test_a_five_and_an_eight_cell_search_of_one_seed_draw_separate_streams(tiny_prepared):
    """As separate runs of the original: its supernet's size changes every draw after it (linreg's too)."""
    train = load_split(tiny_prepared, "train")
    thin = {}
    for cells in (5, 8):
        scorer = Scorer(replace(small_cfg("linreg"), cells=cells), train, torch.device("cpu"))
        scorer.reinit_thin(0, 0)
        thin[cells] = torch.cat([p.flatten() for p in scorer.thin.parameters()])
    assert not torch.equal(thin[5], thin[8])


def test_metantk_task_batch_puts_all_queries_before_all_supports(tmp_path):
    """The MetaNTK kernel reads rows [0, n_query) as the tasks' queries and the rest as their supports (the
    original's order).  Images of one flat grey level each (level = image index) identify every row through its
    centre pixel, which no flip or 4-pixel crop moves off the image; with 3 queries and 1 shot per class
    (n_query != n_support) a swapped order or a mixed-up task shows."""
    from metantk_nas.data.prepared import PreparedSplit

    n_classes, per_class = 10, 20
    levels = np.arange(n_classes * per_class, dtype=np.uint8)      # 200 distinct grey levels
    images = np.broadcast_to(levels[:, None, None, None], (len(levels), 16, 16, 3)).copy()
    train = PreparedSplit(images, np.repeat(np.arange(n_classes), per_class), (0.5,) * 3, (0.25,) * 3)
    cfg = replace(small_cfg(), image_size=16, ways=5, shots=1, queries=3, tasks_per_batch=2, task_pool=20)
    scorer = Scorer(cfg, train, torch.device("cpu"))
    rng = np.random.default_rng(11)
    batch = scorer.task_batch(np.random.default_rng(11), torch.Generator().manual_seed(0))
    tasks = scorer.sampler.batch(rng.choice(cfg.task_pool, cfg.tasks_per_batch, replace=False))
    queries = np.concatenate([t.query for t in tasks])
    supports = np.concatenate([t.support for t in tasks])
    assert (batch.n_tasks, batch.n_query) == (2, 2 * 5 * 3) and len(batch.x) == 2 * 5 * (3 + 1)
    (mean, *_), (std, *_) = scorer.norm_consts        # the original's CIFAR constants by default
    centre = batch.x[:, 0, 8, 8].double() * std + mean               # un-normalise channel 0
    rows = np.rint(centre.numpy() * 255).astype(int)
    assert rows[:batch.n_query].tolist() == queries.tolist()
    assert rows[batch.n_query:].tolist() == supports.tolist()
    assert set(queries // per_class) == set(supports // per_class)   # the same tasks' classes


def _grey_split(n_classes: int = 10, per_class: int = 20, channel_step: int = 0):
    """A split whose image i is flat, at grey level i (+ channel_step per channel): its pixels name it."""
    from metantk_nas.data.prepared import PreparedSplit

    levels = np.arange(n_classes * per_class)
    images = np.stack([np.broadcast_to((levels + channel_step * c) % 256, (16, 16, len(levels))).T for c in range(3)], -1)
    return PreparedSplit(images.astype(np.uint8), np.repeat(np.arange(n_classes), per_class), (0.5, 0.4, 0.3),
                         (0.25, 0.2, 0.1))


def test_relative_change_by_hand():
    """(origin - candidate) / origin rounded to the precision; a non-finite ratio (origin 0, inf or NaN) is no
    change."""
    from metantk_nas.search.scoring import relative_change

    assert relative_change(4.0, 3.0, 3) == 0.25
    assert relative_change(3.0, 4.0, 3) == -0.333 and relative_change(3.0, 4.0, 5) == -0.33333
    assert relative_change(8.0, 7.0, 1) == 0.1   # 0.125 at one decimal: Python's round, half to even
    for origin, cand in ((0.0, 1.0), (0.0, 0.0), (float("inf"), 1.0), (2.0, float("nan")), (2.0, float("inf"))):
        assert relative_change(origin, cand, 3) == 0.0


def test_a_candidates_dk_and_dr_are_the_rounded_relative_changes_of_its_condition_number_and_region_count(
        tiny_prepared, monkeypatch):
    """With the kernel's condition number faked as 2 + (live ops) / 100 and the region count as the live ops: the
    origin of 3 ops on 18 edges has 54 live ops, the candidate 53: dK = (2.54 - 2.53) / 2.54 = 0.0039 -> 0.004,
    dR = (54 - 53) / 54 = 0.0185 -> 0.019 (precision 3), 0.00394 / 0.01852 at precision 5."""
    train = load_split(tiny_prepared, "train")
    origin = initial_mask(small_cfg().ops)
    cand = origin.copy()
    cand[0, 4, OP_NAMES.index("max_pool_3x3")] = False
    for precision, dk, dr in ((3, 0.004, 0.019), (5, 0.00394, 0.01852)):
        scorer = Scorer(replace(small_cfg(), precision=precision), train, torch.device("cpu"))
        _spy(scorer, monkeypatch)
        monkeypatch.setattr(scorer, "regions", lambda mask, inputs: int(mask.sum()))
        assert scorer.kernel_delta(origin, cand, 0, 3, 0) == dk
        assert scorer.region_delta(origin, cand, 0, 3, 0) == dr


def test_the_ntk_batch_is_ntk_batch_distinct_images_in_index_order(tiny_prepared):
    """tenas: ``ntk_batch`` images drawn without replacement and taken in index order, each flipped/cropped
    (a flat image stays flat) and normalised with the CIFAR-10 constants by default."""
    from metantk_nas.data.readers import CIFAR10_MEAN, CIFAR10_STD

    train = _grey_split()
    scorer = Scorer(replace(small_cfg("tenas"), image_size=16, ntk_batch=12), train, torch.device("cpu"))
    x = scorer.ntk_batch(np.random.default_rng(5), torch.Generator().manual_seed(0))
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.float32
    picked = np.sort(np.random.default_rng(5).choice(len(train.labels), 12, replace=False))
    centre = x[:, 0, 8, 8].double() * CIFAR10_STD[0] + CIFAR10_MEAN[0]
    assert np.rint(centre.numpy() * 255).astype(int).tolist() == picked.tolist()
    assert len(scorer.kernel_inputs(0, 0, 0)) == scorer.kernel_group() == 12


def test_region_inputs_are_one_random_channel_of_each_image_normalised_with_the_datasets_constants():
    """``batches`` batches of ``batch`` patches (patch x patch, one channel each, that of rng.integers(0, 3) per
    sample after the images are drawn), normalised with the split's own mean and std, never the CIFAR-10 ones."""
    from metantk_nas.config import LinearRegionSpec

    train = _grey_split(channel_step=60)
    lr = LinearRegionSpec(batch=7, batches=2, patch=3, resize=8)
    scorer = Scorer(replace(small_cfg("linreg"), linear_regions=lr), train, torch.device("cpu"))
    out = scorer.region_inputs(np.random.default_rng(3), torch.Generator().manual_seed(0))
    assert len(out) == 2 and all(x.shape == (7, 1, 3, 3) for x in out)
    rng = np.random.default_rng(3)
    for x in out:
        idx = np.sort(rng.choice(len(train.labels), 7, replace=False))
        ch = rng.integers(0, 3, size=7)
        grey = train.images[idx, 0, 0, ch] / 255.0
        expect = (grey - np.array(train.mean)[ch]) / np.array(train.std)[ch]
        assert torch.allclose(x[:, 0, 1, 1].double(), torch.as_tensor(expect), atol=1e-5)
        assert torch.equal(x, x[:, :, 1:2, 1:2].expand_as(x))   # flat patches: the crop kept them flat


def test_a_metantk_head_is_a_ways_wide_linear_layer_and_tenas_has_none(tiny_prepared):
    train = load_split(tiny_prepared, "train")
    head = Scorer(replace(small_cfg(), ways=4), train, torch.device("cpu")).new_head(0, 1, 0)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 4 and head.weight.dtype == torch.float32
    assert Scorer(small_cfg("tenas"), train, torch.device("cpu")).new_head(0, 1, 0) is None
    k = Scorer(replace(small_cfg(), ways=4, shots=2, queries=3, tasks_per_batch=2), train, torch.device("cpu"))
    assert k.kernel_group() == 2 * 4 * (2 + 3) == len(k.kernel_inputs(0, 0, 0).x)


@pytest.mark.parametrize("change,batchable", [({}, True), ({"batch_candidates": False}, False),
                                              ({"norm": "batchnorm"}, False), ({"ntk_backend": "opacus"}, False),
                                              ({"batch_memory_mb": 0}, False)])
def test_candidates_are_batched_only_with_independent_samples_the_fast_backend_and_room_for_two(
        tiny_prepared, change, batchable):
    train = load_split(tiny_prepared, "train")
    scorer = Scorer(replace(small_cfg(), **{"batch_candidates": True, **change}), train, torch.device("cpu"))
    assert scorer.batchable() == batchable
    assert (scorer.pass_size() > 1) == batchable and scorer.pass_size() >= 1
    assert not Scorer(replace(small_cfg("linreg"), batch_candidates=True), train, torch.device("cpu")).batchable()


def test_train_mode_batchnorm_kernel_is_te_nas_per_sample_backward_loop(tiny_prepared):
    """norm: batchnorm (TE-NAS's supernet: train-mode BatchNorm couples the samples): the scorer's NTK is TE-NAS's
    own procedure, written out here: for each sample, the gradient of its summed logits through the whole batch's
    forward, over every parameter named "weight" (BatchNorm's gamma too), stacked and multiplied out (float64)."""
    from metantk_nas.nas.networks import LogitsNet

    cfg = replace(small_cfg("tenas"), norm="batchnorm", grad_dtype="float64")
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
    scorer.reinit_kernel_net(0)
    mask = initial_mask(cfg.ops)
    mask[0, 3, OP_NAMES.index("conv_3x3")] = False
    x = scorer.kernel_inputs(0, 1, 0)
    got = scorer.ntk_kernel(mask, x)
    net = LogitsNet(scorer.kernel_net, mask).train()
    rows = []
    for i in range(len(x)):
        net.zero_grad(set_to_none=True)
        net(x)[i].sum().backward()
        rows.append(torch.cat([p.grad.flatten() for n, p in net.named_parameters()
                               if "weight" in n and p.grad is not None]))
    j = torch.stack(rows).double()
    torch.testing.assert_close(got.double(), j @ j.T, rtol=1e-9, atol=1e-12)


def test_batched_conditions_use_nan_condition_and_refuse_unequalnetworks_of_a_round(tiny_prepared, monkeypatch):
    """A NaN kernel in a round-batched pass is worth fidelity.nan_condition (here 123, not the default), as one by
    one; networks whose inputs have different numbers of samples cannot share a pass."""
    from helpers import networks_of_a_round

    train = load_split(tiny_prepared, "train")
    for method in ("metantk", "tenas"):
        cfg = replace(small_cfg(method), fidelity=FidelitySwitches(nan_condition=123.0, fresh_batch_per_candidate=False))
        scorer = Scorer(cfg, train, torch.device("cpu"))
        scorer.reinit_kernel_net(0)
        nets = networks_of_a_round(scorer, cfg, 2)
        scorer._pass_networks = 2
        if method == "metantk":
            monkeypatch.setattr(scoring, "metantk", lambda *a, **k: torch.full((5, 5), float("nan")))
        else:
            monkeypatch.setattr(scoring, "sum_gram_terms", lambda terms, order: torch.full((2, 6, 6), float("nan")))
        assert scorer.batched_conditions(nets) == [123.0, 123.0]
        monkeypatch.undo()
        m, inputs, h = nets[1]
        short = replace(inputs, x=inputs.x[:-1]) if method == "metantk" else inputs[:-1]
        with pytest.raises(ValueError, match="^batched kernels need the same number of samples in every network$"):
            scorer.batched_conditions([nets[0], (m, short, h)])


def test_every_draw_of_a_scoring_comes_from_its_own_stream(tiny_prepared, monkeypatch):
    """The scorer's random draws for one key (here (1, 2)) of seed 3, 5 cells, each from the stream (seed, cells,
    *key, id): the kernel network's init without an id, the kernel batch 1 (numpy: its tasks) and 2 (torch: its
    crops), the head 3, the thin network 4, the region inputs 5 (numpy) and 6 (torch).  Another seed, cell count
    or key is another stream for every one of them, and no two draws share one."""
    torch_keys, numpy_keys = [], []
    real_torch, real_numpy = scoring.torch_gen, np.random.default_rng
    monkeypatch.setattr(scoring, "torch_gen", lambda *k: torch_keys.append(k) or real_torch(*k))
    monkeypatch.setattr(np.random, "default_rng", lambda k=None: numpy_keys.append(list(k)) or real_numpy(k))
    scorer = Scorer(replace(small_cfg(), seed=3), load_split(tiny_prepared, "train"), torch.device("cpu"))
    torch_keys.clear(), numpy_keys.clear()                     # the constructor's own draws are not at issue here
    scorer.reinit_kernel_net(1, 2)
    scorer.kernel_inputs(1, 2)
    scorer.new_head(1, 2)
    scorer.reinit_thin(1, 2)
    scorer.keyed_region_inputs(1, 2)
    assert torch_keys == [(3, 5, 1, 2), (3, 5, 1, 2, 2), (3, 5, 1, 2, 3), (3, 5, 1, 2, 4), (3, 5, 1, 2, 6)]
    assert [k for k in numpy_keys if k[:2] == [3, 5]] == [[3, 5, 1, 2, 1], [3, 5, 1, 2, 5]]   # not the sampler's own


def test_region_inputs_from_a_split_smaller_than_their_batch_repeat_images():
    """More region samples than training images (a tiny dataset): drawn with replacement, as TE-NAS's loader
    cycles, rather than refused."""
    from metantk_nas.config import LinearRegionSpec

    train = _grey_split(n_classes=5, per_class=2)
    scorer = Scorer(replace(small_cfg("linreg"), linear_regions=LinearRegionSpec(batch=12, batches=1, patch=3,
                                                                                 resize=8)), train, torch.device("cpu"))
    (x,) = scorer.region_inputs(np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert x.shape == (12, 1, 3, 3)


@pytest.mark.parametrize("backend", ["fast", "opacus", "coupled"])
def test_the_configured_backend_and_chunk_compute_the_per_sample_gradients(tiny_prepared, monkeypatch, backend):
    """search.ntk_backend and search.ntk_chunk reach the per-sample gradients as configured (opacus is the
    reference a user picks to check the fast backend: it must be the one that runs); norm: batchnorm takes the
    coupled backend whatever is configured (train-mode BatchNorm couples the samples)."""
    calls = []
    real = scoring.per_sample_grads
    monkeypatch.setattr(scoring, "per_sample_grads",
                        lambda net, x, names, b, chunk=None, **kw: calls.append((b, chunk)) or real(net, x, names, b,
                                                                                                   chunk, **kw))
    train = load_split(tiny_prepared, "train")
    for change, expected in (({}, backend), ({"norm": "batchnorm"}, "coupled")):
        cfg = replace(small_cfg("tenas"), ntk_backend=backend, ntk_chunk=5, **change)
        scorer = Scorer(cfg, train, torch.device("cpu"))
        calls.clear()
        scorer.ntk_kernel(initial_mask(cfg.ops), scorer.kernel_inputs(0, 0, 0))
        assert calls == [(expected, 5)]


def test_anil_scores_a_network_whose_body_adds_nothing_as_the_originals_sentinel(tiny_prepared, monkeypatch):
    """ANIL where the body adds nothing to Theta (all-zero features: Theta is the head's own kernel K): the MetaNTK
    is undefined (None) and the original scores the network 1e5 (here fidelity.nan_condition = 123)."""
    cfg = replace(small_cfg(), kernel=KernelSpec("anil", 1.0, 1e-5),
                  fidelity=FidelitySwitches(nan_condition=123.0, fresh_batch_per_candidate=False))
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), torch.device("cpu"))
    inputs, head = scorer.kernel_inputs(0, 0, 0), scorer.new_head(0, 0, 0)
    head_grads = torch.randn(len(inputs.x), 5, 7, generator=torch.Generator().manual_seed(0))
    k_head = torch.einsum("nij,mij->nm", head_grads.double(), head_grads.double())   # <phi, phi'> by hand
    k, phi = scorer._inner_and_metantk(k_head.clone(), head_grads, inputs)
    assert phi is None and torch.allclose(k, k_head)
    monkeypatch.setattr(scorer, "metantk_kernels", lambda *a: (k_head, k_head, None))
    assert scorer.metantk_condition(initial_mask(cfg.ops), inputs, head) == 123.0
