"""Device placement without a GPU (issue 33): the hot paths run with their network and inputs on torch's `meta`
device, where an op that mixes a meta tensor with one made on the CPU fails ("Tensor on device cpu is not on the
expected device meta"). So every tensor these paths create (task batches, heads, masks, per-sample gradients,
kernels, augmented images, optimiser buffers) must follow the device they were given, as on CUDA.

What the meta device cannot reach: code that reads values (the condition numbers' eigenvalues in numpy, the
linear-region counts, the evaluation's solver with its convergence tests and its finite-feature check, the
augmentation's resize path with its "any flip?" test); those read their results back to the CPU by design."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metantk_nas.data.prepared import load_split
from metantk_nas.data.transforms import TrainAugment
from metantk_nas.fsl.train import SGD, drop_path_probability
from metantk_nas.kernels.ntk import per_sample_grads
from metantk_nas.nas.genotype import random_genotype
from metantk_nas.nas.networks import EvalNet
from metantk_nas.search.pruning import initial_mask
from metantk_nas.search.scoring import KernelBatch, Scorer

from helpers import small_cfg

META = torch.device("meta")


def test_mixing_meta_and_cpu_tensors_fails():
    """The premise: a CPU tensor where the device's was due is an error on meta, as on CUDA."""
    with pytest.raises(RuntimeError, match="device"):
        torch.ones(3, 4, device=META) + torch.ones(3, 4)


@pytest.mark.parametrize("method", ["metantk", "tenas"])
def test_search_kernels_follow_the_scorers_device(method, tiny_prepared):
    """Origin and candidate draws (task batch or NTK batch, the random head) and the kernels of a candidate (the
    per-sample gradients of the masked supernet, the MetaNTK's inner operator) on the scorer's device."""
    cfg = small_cfg(method)
    scorer = Scorer(cfg, load_split(tiny_prepared, "train"), META)
    scorer.reinit_kernel_net(0)
    mask = initial_mask(cfg.ops)
    cand = mask.copy()
    cand[0, 0, 0] = False
    for inputs, head in (scorer.origin_draws(0, 1, 2), scorer.candidate_draws(0, 1, 2, shared=None)[:2]):
        x = inputs.x if isinstance(inputs, KernelBatch) else inputs
        assert x.device == META
        if method == "metantk":
            assert all(p.device == META for p in head.parameters())
            kernels = scorer.metantk_kernels(cand, inputs, head)
            assert all(k.device == META for k in kernels) and len(kernels) == 3
        else:
            assert scorer.ntk_kernel(cand, inputs).device == META
    assert all(p.device == META for p in scorer.kernel_net.parameters())
    assert scorer.networks_per_pass() >= 1   # its memory probe: a one-sample forward on the device
    assert all(x.device == META for x in scorer.keyed_region_inputs(0, 1))   # the linear-region patches too


@pytest.mark.parametrize("backend", ["fast", "coupled"])
def test_per_sample_gradients_of_every_backend_stay_on_the_networks_device(backend):
    """The per-sample gradients (and the coupled backend's one-hot cotangents) of a small network on the device."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 5 * 5, 2)).to(META)
    names = ["0.weight", "3.weight"]
    grads = per_sample_grads(net, torch.empty(6, 3, 5, 5, device=META), names, backend, chunk=4)
    assert {n: (g.device, tuple(g.shape)) for n, g in grads.items()} == {
        "0.weight": (META, (6, 4, 3, 3, 3)), "3.weight": (META, (6, 2, 100))}


def test_a_training_step_stays_on_the_models_device(tiny_prepared):
    """The training loop's step: the augmented batch (uint8 path: crop, flip, jitter, normalise), channels_last,
    drop-path masks, the loss, the gradients and our SGD's momentum buffers, all on the model's device."""
    data = load_split(tiny_prepared, "train")
    model = EvalNet(random_genotype(0, 5), 4, 5, data.n_classes).to(META).to(memory_format=torch.channels_last)
    model.set_drop_path(drop_path_probability(0.2, 1, 10))
    model.train()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    size = data.images.shape[1]
    aug = TrainAugment(size, 2, 0.4, data.mean, data.std)
    idx = np.arange(8)
    for step in range(2):        # the second step updates the momentum buffers made by the first
        x = aug(data.images[idx], torch.Generator().manual_seed(step), META)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), torch.as_tensor(np.asarray(data.labels)[idx]).to(META))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        assert x.device == META and loss.device == META
    assert all(p.device == META and p.grad.device == META for p in model.parameters())
    assert all(b is not None and b.device == META for b in opt.buffers)
