"""The kernels: the NTK backends (fast, Opacus, coupled) against each other and per-sample autograd, the MetaNTK
against its closed form, condition numbers, linear-region counts."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from metantk_nas.kernels.linear_regions import (activation_patterns, count_by_hamming, count_unique_patterns,
                                                relu_modules)
from metantk_nas.kernels.metantk import condition_number, inner_operator, metantk
from metantk_nas.kernels.ntk import (ParamFilter, empirical_ntk, gram_from_grads, kernel_parameter_names, ntk_coupled,
                                     ntk_fast, ntk_opacus, per_sample_grads)
from metantk_nas.nas.networks import LogitsNet, SuperNet, full_mask, init_weights_, thin_supernet



@pytest.fixture(autouse=True)
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# -- MetaNTK of a model linear in its parameters vs autograd of the explicitly adapted meta-output ---------------
def _linear_model_setup(n_tasks=2, q=3, s=3, d_body=7, d_head=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_tasks * (q + s)
    psi_b = torch.randn(n, d_body, generator=g)
    psi_h = torch.randn(n, d_head, generator=g)
    y = torch.randn(n, generator=g)
    theta0 = torch.randn(d_body + d_head, generator=g) * 0.3
    return psi_b, psi_h, y, theta0


def _adapted_query_outputs(theta0, psi, y, n_tasks, q, s, t, steps, adapt):
    """Run the inner loop explicitly: gradient steps on 1/2 ||f(S_i) - y||^2 for time t (lr * steps = t)."""
    nq = n_tasks * q
    outs = []
    for i in range(n_tasks):
        qi = slice(i * q, (i + 1) * q)
        si = slice(nq + i * s, nq + (i + 1) * s)
        th = theta0
        lr = t / steps
        for _ in range(steps):
            resid = psi[si] @ th - y[si]
            grad = psi[si].T @ resid
            th = th - lr * grad * adapt  # adapt masks which parameters the inner loop updates
        outs.append(psi[qi] @ th)
    return torch.cat(outs)


@pytest.mark.parametrize("inner,q,s", [("maml", 3, 3), ("anil", 3, 3), ("maml", 4, 2)])
def test_metantk_of_linear_model_equals_jacobian_of_adapted_meta_output(inner, q, s):
    """(4, 2): more queries than supports per task, as in a 5-way 1-shot task with 15 queries per class."""
    n_tasks, t = 2, 0.7
    psi_b, psi_h, y, theta0 = _linear_model_setup(n_tasks, q, s)
    psi = torch.cat([psi_b, psi_h], 1)
    adapt = torch.ones(psi.shape[1]) if inner == "maml" else torch.cat([torch.zeros(psi_b.shape[1]), torch.ones(psi_h.shape[1])])
    jac = torch.func.jacrev(lambda th: _adapted_query_outputs(th, psi, y, n_tasks, q, s, t, 4000, adapt))(theta0)
    reference = jac @ jac.T
    theta = psi @ psi.T
    k_inner = theta if inner == "maml" else psi_h @ psi_h.T
    ours = metantk(theta, k_inner, n_tasks, t, reg=0.0, n_query=n_tasks * q)
    assert torch.allclose(ours, reference, rtol=2e-3, atol=2e-3), (ours - reference).abs().max()


def test_infinite_time_maml_diagonal_blocks_are_the_schur_complement():
    g = torch.Generator().manual_seed(3)
    j = torch.randn(12, 40, generator=g)
    theta = j @ j.T
    phi = metantk(theta, theta, 2, math.inf, reg=1e-10)
    q, s = slice(0, 3), slice(6, 9)
    schur = theta[q, q] - theta[q, s] @ torch.linalg.inv(theta[s, s]) @ theta[s, q]
    assert torch.allclose(phi[:3, :3], schur, rtol=1e-6, atol=1e-8)


def test_metantk_refuses_samples_that_do_not_split_into_equal_tasks():
    theta = torch.eye(12)
    for n_query, n_tasks, counts in ((7, 2, "7 queries and 5 supports"), (6, 4, "6 queries and 6 supports"),
                                     (4, 2, None), (8, 8, "8 queries and 4 supports"), (5, 7, "5 queries and 7 supports")):
        if counts is None:   # 2 tasks of 2 queries and 4 supports
            assert metantk(theta, theta, n_tasks, 1.0, 0.0, n_query=n_query).shape == (4, 4)
            continue
        with pytest.raises(ValueError, match=f"^{counts} cannot be split into {n_tasks} equal tasks$"):
            metantk(theta, theta, n_tasks, 1.0, 0.0, n_query=n_query)


def test_metantk_and_inner_operator_stay_on_their_inputs_device():
    """Every tensor they create follows the inputs' device: on the meta device (no data, shapes only) a CPU
    intermediate would fail the products."""
    g = torch.Generator().manual_seed(0)
    j = torch.randn(12, 20, generator=g)
    theta = (j @ j.T).to("meta")
    assert inner_operator(theta[:4, :4], 1.0, 1e-3).device.type == "meta"
    phi = metantk(theta, theta, 2, math.inf, 1e-3, n_query=4)
    assert phi.device.type == "meta" and phi.shape == (4, 4)


def test_inner_operator_by_hand_on_singular_and_ill_conditioned_kernels():
    """t = inf: T = pinvh(K + rI), the exponential vanishing even on K's zero eigenvalues; pinvh drops an
    eigenvalue of K + rI below n * eps * its largest (scipy.linalg.pinvh's cutoff), here 1e-15 < 2 eps 100."""
    r = 1e-3
    t_inf = inner_operator(torch.diag(torch.tensor([3.0, 1.0, 0.0, 0.0])), math.inf, r)
    assert torch.allclose(t_inf, torch.diag(torch.tensor([1 / (3 + r), 1 / (1 + r), 1 / r, 1 / r])), rtol=1e-12)
    dropped = inner_operator(torch.diag(torch.tensor([100.0, 1e-15])), math.inf, 0.0)
    assert torch.allclose(dropped, torch.diag(torch.tensor([0.01, 0.0])), rtol=1e-12, atol=0)
    kept = inner_operator(torch.diag(torch.tensor([100.0, 1e-12])), math.inf, 0.0)
    assert kept[1, 1] == pytest.approx(1e12, rel=1e-9)


def test_inner_operator_matches_scipy():
    from scipy.linalg import expm, pinvh

    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=g)
    k = a @ a.T
    for t, r in ((1.0, 1e-5), (0.3, 1e-3), (math.inf, 1e-3)):
        ref = pinvh(k.numpy() + r * np.eye(5)) @ (np.eye(5) - (0 if math.isinf(t) else expm(-t * k.numpy())))
        assert np.allclose(inner_operator(k, t, r).numpy(), ref, rtol=1e-8, atol=1e-10)


# -- the real supernet: two backends -------------------------------------------------------------------------------
def _scored_net(norm="groupnorm16", dtype=torch.float64):
    torch.manual_seed(0)
    net = SuperNet(4, 5, 6, norm).to(dtype)
    head = nn.Linear(net.feature_dim, 5).to(dtype)
    return net, head


def test_fast_and_opacus_backends_agree_in_float64():
    net, head = _scored_net()
    x = torch.randn(8, 3, 8, 8)
    mask = full_mask()
    mask[0, 2, 3] = False
    ln = LogitsNet(net, mask, head)
    names = kernel_parameter_names(ln, ln.live_parameter)
    a, b = ntk_fast(ln, x, names), ntk_opacus(ln, x, names)
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-10)
    assert torch.allclose(ntk_fast(ln, x, names, chunk=3), a, rtol=1e-12, atol=1e-14)   # chunking: same kernel
    assert condition_number(a) == pytest.approx(condition_number(b), rel=1e-6)


class _EveryLayerKind(nn.Module):
    """Each conv kind the fast backend forms per-sample gradients for, with biases, plus a layer called twice, a
    linear layer on a 3-D input, a GroupNorm weight (taken by vmap), a padded 1 x 1 convolution (not the unpadded
    1 x 1 shortcut) and a layer that runs but does not reach the output (zero gradients)."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Conv2d(3, 4, 3, stride=2, padding=1)                          # dense k x k, strided
        self.depthwise = nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2, groups=4)  # depthwise, dilated
        self.grouped = nn.Conv2d(4, 6, (1, 5), padding=(0, 2), groups=2)               # grouped, 1 x 5
        self.pointwise = nn.Conv2d(6, 6, 1, stride=2)                                  # 1 x 1, strided
        self.norm = nn.GroupNorm(2, 6)
        self.padded = nn.Conv2d(6, 6, 1, padding=1)                                    # 1 x 1, padded
        self.tokens = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)
        self.discarded = nn.Linear(5, 2)                                              # runs, reaches nothing

    def forward(self, x):
        h = self.grouped(torch.tanh(self.depthwise(torch.tanh(self.dense(x)))))
        h = self.norm(self.pointwise(torch.tanh(self.pointwise(h))))                  # pointwise used twice
        h = self.padded(h)
        t = torch.tanh(self.tokens(h.flatten(2).transpose(1, 2)))                     # (N, pixels, 5)
        self.discarded(t.mean(1))
        return self.head(t.mean(1))


def _per_sample_loop(module, x, names):
    """Independent reference: autograd of sum_c f_c(x_n), one sample at a time (zeros for a parameter the output
    does not depend on)."""
    params = dict(module.named_parameters())
    rows = [torch.autograd.grad(module(x[n:n + 1]).sum(), [params[k] for k in names], allow_unused=True,
                                materialize_grads=True) for n in range(len(x))]
    return {k: torch.stack([r[i] for r in rows]) for i, k in enumerate(names)}


def test_fast_backend_per_sample_gradients_of_every_layer_kind_equal_a_per_sample_loop():
    torch.manual_seed(0)
    net = _EveryLayerKind()
    x = torch.randn(5, 3, 12, 12)
    names = [n for n, _ in net.named_parameters()]
    reference = _per_sample_loop(net, x, names)
    for chunk in (0, 2):
        fast = per_sample_grads(net, x, names, "fast", chunk)
        assert set(fast) == set(names)
        for k in names:
            assert torch.allclose(fast[k], reference[k], rtol=1e-10, atol=1e-12), k
    assert not reference["discarded.weight"].any() and reference["padded.weight"].abs().min() > 0


def test_fast_backend_in_float32_is_as_accurate_as_opacus():
    """The original computed its kernels in float32 with Opacus; against float64 on the same weights, the fast
    backend's float32 kernel is no less accurate (channels_last convolutions made it five times worse here)."""
    import copy
    torch.manual_seed(0)
    net, head = SuperNet(4, 8, 64, "groupnorm16").float(), nn.Linear(48, 5).float()
    ln = LogitsNet(net, full_mask(), head)
    x = torch.randn(30, 3, 8, 8, dtype=torch.float32)
    names = kernel_parameter_names(ln, ln.live_parameter)
    exact = ntk_fast(copy.deepcopy(ln).double(), x.double(), names)

    def error(kernel):
        return float((kernel.double() - exact).abs().max() / exact.abs().max())
    assert error(ntk_fast(ln, x, names)) <= 1.5 * error(ntk_opacus(ln, x, names))


def test_fast_backend_refuses_an_in_place_overwrite_of_a_recorded_output():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 3, 6, 6)
    net(x)
    with pytest.raises(ValueError, match="in-place"):
        per_sample_grads(net, x, ["0.weight"], "fast")


def _te_nas_loop_ntk(module, x, names):
    """TE-NAS's get_ntk_n: one train-mode forward of the batch, then backward(retain_graph) per sample."""
    params = dict(module.named_parameters())
    out = module(x)
    rows = []
    for i in range(len(x)):
        g = torch.autograd.grad(out[i:i + 1].sum(), [params[n] for n in names], retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(gi if gi is not None else torch.zeros_like(params[n])).reshape(-1)
                               for gi, n in zip(g, names)]))
    grads = torch.stack(rows)
    return grads @ grads.T


def test_coupled_ntk_equals_te_nas_per_sample_backward_loop_with_train_mode_batchnorm():
    net, head = _scored_net("batchnorm")
    mask = full_mask()
    mask[0, 1, 2] = False
    ln = LogitsNet(net, mask, head).train()
    x = torch.randn(7, 3, 8, 8)
    names = kernel_parameter_names(ln, ln.live_parameter, ParamFilter(norm=True))
    bn_weights = {f"{m}.weight" for m, mod in ln.named_modules() if isinstance(mod, nn.BatchNorm2d)}
    assert bn_weights & set(names)                      # TE-NAS takes every "weight", BN gamma included ...
    assert not [n for n in names if "weight" not in n]  # ... and nothing else: no bias, BN beta neither
    coupled = ntk_coupled(ln, x, names, chunk=3)
    reference = _te_nas_loop_ntk(ln, x, names)
    assert torch.allclose(coupled, reference, rtol=1e-9, atol=1e-12)
    # the coupling is real: independent per-sample gradients give a different kernel
    independent = ntk_fast(ln.eval(), x, names)
    assert not torch.allclose(coupled, independent, rtol=1e-3)


def test_coupled_equals_fast_without_batch_statistics_and_per_sample_backends_refuse_them():
    net, head = _scored_net()
    ln = LogitsNet(net, full_mask(), head)
    x = torch.randn(6, 3, 8, 8)
    names = kernel_parameter_names(ln, ln.live_parameter)
    assert torch.allclose(ntk_coupled(ln, x, names), ntk_fast(ln, x, names), rtol=1e-9, atol=1e-12)
    bn, bn_head = _scored_net("batchnorm")
    bln = LogitsNet(bn, full_mask(), bn_head).train()
    for backend in ("fast", "opacus"):
        with pytest.raises(ValueError, match="batch statistics"):
            empirical_ntk(bln, x, kernel_parameter_names(bln, bln.live_parameter), backend)


def test_backends_rank_candidates_identically():
    from metantk_nas.search.pruning import dense_ranks

    net, head = _scored_net()
    x = torch.randn(8, 3, 8, 8)
    base = full_mask()
    conds = {"fast": [], "opacus": []}
    for o in range(7):
        m = base.copy()
        m[1, 0, o] = False
        ln = LogitsNet(net, m, head)
        names = kernel_parameter_names(ln, ln.live_parameter)
        conds["fast"].append(condition_number(ntk_fast(ln, x, names)))
        conds["opacus"].append(condition_number(ntk_opacus(ln, x, names)))
    rel = lambda c: [round((conds[c][0] - v) / conds[c][0], 3) for v in conds[c]]  # noqa: E731
    assert dense_ranks(rel("fast"), True, 3) == dense_ranks(rel("opacus"), True, 3)


def test_kernel_parameters_are_non_norm_weights_of_live_ops():
    net, head = _scored_net()
    mask = full_mask()
    mask[0, 0, :] = False
    mask[0, 0, 1] = True  # only sep_conv_3x3 alive on normal edge 0
    ln = LogitsNet(net, mask, head)
    names = kernel_parameter_names(ln, ln.live_parameter)
    assert all(n.endswith(".weight") for n in names) and "head.weight" in names
    assert not any("classifier" in n for n in names)
    assert "body.cells.0.ops.0.1.0.1.weight" in names
    assert not any(n.startswith("body.cells.0.ops.0.2.") for n in names)
    assert not any(isinstance(dict(ln.named_modules())[n.rsplit(".", 1)[0]], nn.GroupNorm) for n in names)


@pytest.mark.parametrize("backend", ["fast", "opacus", "coupled"])
def test_anil_kernel_is_the_head_weight_gram(backend):
    """The search takes the ANIL kernel from the head-weight gradients of the full NTK pass; they give
    5 <phi, phi'> from the features alone, with every backend."""
    net, head = _scored_net()
    x = torch.randn(6, 3, 8, 8)
    ln = LogitsNet(net, full_mask(), head)
    grads = per_sample_grads(ln, x, kernel_parameter_names(ln, ln.live_parameter), backend)
    with torch.no_grad():
        f = net.features(x, full_mask())
    assert torch.allclose(gram_from_grads([grads["head.weight"]]), 5 * f @ f.T, rtol=1e-10, atol=1e-12)


def test_nan_or_singular_kernels_give_the_documented_value():
    assert condition_number(torch.full((3, 3), float("nan"))) == 1e5
    assert condition_number(torch.tensor([[1.0, float("inf")], [float("inf"), 1.0]])) == 1e5
    sing = torch.ones(3, 3)  # rank 1: lambda_min ~ 0 -> a huge (or negative) ratio, never an exception
    assert isinstance(condition_number(sing), float) and abs(condition_number(sing)) > 1e10
    zero = torch.zeros(3, 3)  # 0/0 -> NaN -> 1e5
    assert condition_number(zero) == 1e5
    assert condition_number(torch.diag(torch.tensor([1.0, 4.0]))) == 4.0


def test_singular_kernels_give_their_documented_values_without_numpy_warnings():
    """lambda_min = 0: 2 / 0 = inf -> the largest float; 0 / 0 -> the sentinel; neither divides noisily."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert condition_number(torch.diag(torch.tensor([0.0, 2.0]))) == np.finfo(np.float64).max
        assert condition_number(torch.zeros(2, 2), nan_value=7.0) == 7.0


def test_a_failed_eigensolver_gives_the_sentinel(monkeypatch):
    def fail(k):
        raise RuntimeError("linalg.eigvalsh: the algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigvalsh", fail)
    assert condition_number(torch.eye(3), nan_value=123.0) == 123.0


def test_valid_condition_by_hand():
    """Valid: finite, at least 1, below the largest float, not the sentinel (the caller's, default 1e5)."""
    from metantk_nas.kernels.metantk import valid_condition

    assert valid_condition(1.0) and valid_condition(4.0) and valid_condition(99999.0) and valid_condition(1e5, 7.0)
    for bad in (0.999, 0.0, -2.0, 1e5, float("inf"), -float("inf"), float("nan"), np.finfo(np.float64).max):
        assert not valid_condition(bad), bad
    assert not valid_condition(7.0, 7.0)


# -- linear regions --------------------------------------------------------------------------------------------------
def test_unique_pattern_count_equals_the_originals_hamming_formula():
    torch.manual_seed(0)
    thin = thin_supernet(1, 3).float().train()
    init_weights_(thin, torch.Generator().manual_seed(1))
    batches = [torch.randn(300, 1, 3, 3, dtype=torch.float32) for _ in range(2)]
    pats = activation_patterns(lambda x: thin(x, full_mask()), relu_modules(thin), batches)
    assert pats.shape[0] == 600 and pats.dtype == torch.bool
    assert count_unique_patterns(pats) == pytest.approx(count_by_hamming(pats), abs=1e-6)
    # and on patterns with known duplicates
    p = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert count_unique_patterns(p) == 3 == round(count_by_hamming(p))


def test_a_network_without_recorded_relus_has_one_region_as_the_originals_formula_counts():
    """No ReLU with a 4-D input fires a hook (e.g. a thin cell of pools and skips): every input has the empty
    pattern, an (N, 0) boolean matrix over all batches, and the Hamming formula gives sum_i 1/N = 1 region."""
    relu = nn.ReLU()
    batches = [torch.randn(3, 1, 3, 3), torch.randn(4, 1, 3, 3)]
    pats = activation_patterns(lambda x: relu(x.flatten(1)), [relu], batches)   # a 2-D input: not recorded
    assert pats.shape == (7, 0) and pats.dtype == torch.bool
    assert count_unique_patterns(pats) == 1 == round(count_by_hamming(pats))
    one_bit = torch.tensor([[True], [False], [True]])
    assert count_unique_patterns(one_bit) == 2 == round(count_by_hamming(one_bit))


# -- a module registered twice --------------------------------------------------------------------------------------
def test_networks_register_every_module_once_and_a_shared_module_is_refused():
    """Opacus hooks a module once per name it is reachable under: the plain NTK's classifier, registered as
    ``head`` and ``body.classifier``, came out with twice its per-sample gradient (4x its part of the gram)."""
    from metantk_nas.kernels.ntk import shared_modules
    from metantk_nas.nas.genotype import Genotype
    from metantk_nas.nas.networks import EvalNet

    net, head = _scored_net()
    g = Genotype.make([[("sep_conv_3x3", 0), ("skip_connect", 1)]] * 3, [[("max_pool_3x3", 0), ("conv_3x3", 1)]] * 3)
    for module in (LogitsNet(net, full_mask()), LogitsNet(net, full_mask(), head), thin_supernet(1, 4),
                   EvalNet(g, 4, 5, 3)):
        assert shared_modules(module) == {}
    twice = nn.Sequential(net.classifier, nn.Identity())
    twice.again = net.classifier
    assert shared_modules(twice) == {"0": ["again"]}
    for backend in ("fast", "opacus", "coupled"):
        with pytest.raises(ValueError, match="registered as 'again'"):
            per_sample_grads(twice, torch.randn(2, 48), ["0.weight"], backend)


def test_the_default_backend_is_fast_and_only_coupled_takes_batch_statistics():
    """empirical_ntk without a backend is the fast backend's kernel, bit for bit; train-mode BatchNorm is refused
    by every backend but coupled, which is the one made for it."""
    from metantk_nas.kernels.ntk import check_per_sample, ntk_fast

    net, head = _scored_net()
    ln = LogitsNet(net, full_mask(), head)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    names = kernel_parameter_names(ln, ln.live_parameter)
    assert torch.equal(empirical_ntk(ln, x, names), ntk_fast(ln, x, names))
    bn, bn_head = _scored_net("batchnorm")
    bn_ln = LogitsNet(bn, full_mask(), bn_head).train()
    check_per_sample(bn_ln, "coupled")
    for backend in ("fast", "opacus"):
        with pytest.raises(ValueError, match=f"the '{backend}' NTK backend needs independent samples"):
            check_per_sample(bn_ln, backend)


def test_a_parameter_of_an_op_that_never_runs_has_zero_per_sample_gradients():
    """A masked-off op is not called: its weights' per-sample gradients are zeros, one row per sample, as the
    per-sample autograd loop gives them (allow_unused), and the kernel is that of the live parameters alone."""
    from metantk_nas.kernels.ntk import grads_fast, grads_opacus

    net, head = _scored_net()
    mask = full_mask()
    mask[0, 0, :] = False
    mask[0, 0, 1] = True                                  # edge 0 of the normal cell: one op left
    ln = LogitsNet(net, mask, head)
    live = kernel_parameter_names(ln, ln.live_parameter)
    dead = [n for n in kernel_parameter_names(ln, lambda n: True) if n not in live and n.endswith("weight")
            and ".cells.0.ops.0." in n]
    assert dead
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    grads = grads_fast(ln, x, live + dead[:2])
    for n in dead[:2]:
        assert grads[n].shape == (3, *ln.get_parameter(n).shape) and not grads[n].any()
    opacus = grads_opacus(ln, x, live + dead[:2])                # Opacus: none at all for them, the live ones as fast
    assert set(opacus) == set(live)
    assert all(torch.allclose(opacus[n], grads[n], rtol=1e-10, atol=1e-12) for n in live)


def test_param_filter_and_backend_names_by_hand():
    """ParamFilter: weights by default, biases on request, a norm's scale only with norm=True; an unknown backend is
    named in its error."""
    from metantk_nas.kernels.ntk import per_sample_grads

    conv, bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)
    assert ParamFilter().keep(conv, "weight") and not ParamFilter().keep(conv, "bias")
    assert ParamFilter(biases=True).keep(conv, "bias") and not ParamFilter(weights=False).keep(conv, "weight")
    assert not ParamFilter().keep(bn, "weight") and ParamFilter(norm=True).keep(bn, "weight")
    assert not ParamFilter(norm=True).keep(bn, "bias") and ParamFilter(norm=True, biases=True).keep(bn, "bias")
    with pytest.raises(ValueError, match="^unknown NTK backend 'vmapp'; expected 'fast', 'opacus' or 'coupled'$"):
        per_sample_grads(nn.Linear(2, 1), torch.randn(3, 2), ["weight"], "vmapp")
