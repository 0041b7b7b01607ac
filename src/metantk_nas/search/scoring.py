"""Scores of one candidate against its origin, as the search evaluates them.

One :class:`Scorer` per search holds the networks; a candidate is a *mask*, so origin and candidate share the
weights of one supernet (the original copies the origin's weights into a freshly built candidate: the same
function).  Randomness is explicit: every draw takes a ``numpy`` generator or ``torch.Generator`` derived from
(seed, cells, round, candidate, repeat), so a search is deterministic and resumable round by round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..config import SearchConfig
from ..data.episodes import EpisodeSampler
from ..data.prepared import PreparedSplit
from ..data.readers import CIFAR10_MEAN, CIFAR10_STD
from ..data import transforms as T
from ..kernels.linear_regions import activation_patterns, count_unique_patterns, relu_modules
from ..kernels.metantk import condition_number, metantk
from ..methods import method
from ..kernels.ntk import (ParamFilter, check_per_sample, gram_from_grads, group_gram_terms, kernel_parameter_names,
                           per_sample_grads, sum_gram_terms)
from ..seeding import torch_gen
from ..nas.networks import LogitsNet, SampleMasks, SuperNet, full_mask, init_weights_, thin_supernet

TASK_POOL_SEED = 0  # the original's fixed pool of tasks: task i is drawn with np.random.seed(i)


def relative_change(origin: float, candidate: float, precision: int) -> float:
    """round((origin - candidate) / origin, precision); non-finite results count as no change."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (np.float64(origin) - np.float64(candidate)) / np.float64(origin)
    if not np.isfinite(d):
        return 0.0
    return round(float(d), precision)


@dataclass
class KernelBatch:
    x: torch.Tensor
    n_tasks: int
    n_query: int


class Scorer:
    def __init__(self, cfg: SearchConfig, train: PreparedSplit, device: torch.device):
        self.cfg, self.train, self.device = cfg, train, device
        self.dtype = torch.float64 if cfg.grad_dtype == "float64" else torch.float32
        self.init = "default" if cfg.fidelity.default_init else "kaiming_normal"
        # every draw is keyed by (seed, cells, ...): a 5- and an 8-cell search of one seed are separate runs, as in
        # the original, where the supernet's size changes everything drawn after it (the linreg search included)
        self.stream = (cfg.seed, cfg.cells)
        self._structures: dict[bool, tuple[list[tuple[str, tuple[int, int, int] | None]], dict[str, nn.Module]]] = {}
        self.kernel_net: SuperNet | None = None
        self.kernel = method(cfg.method).kernel   # "MetaNTK", "NTK" or None (methods.REGISTRY)
        if self.kernel is not None:
            self.kernel_net = SuperNet(cfg.channels, cfg.cells, train.n_classes, cfg.norm).to(device, self.dtype)
        lr = cfg.linear_regions
        self.thin = thin_supernet(lr.channels, train.n_classes).to(device)   # normal cell C, reduction cell 2C
        self.thin_relus = relu_modules(self.thin)
        self.thin.train()
        self.sampler = EpisodeSampler(train.labels, cfg.ways, cfg.shots, cfg.queries, TASK_POOL_SEED)
        mean, std = (CIFAR10_MEAN, CIFAR10_STD) if cfg.fidelity.cifar_normalisation else (train.mean, train.std)
        self.norm_consts = (mean, std)
        self._pass_networks: int | None = None

    # -- weights ----------------------------------------------------------------------------------------------------
    def reinit_kernel_net(self, *key: int) -> None:
        assert self.kernel_net is not None
        init_weights_(self.kernel_net, torch_gen(*self.stream, *key), self.init)

    # -- data -------------------------------------------------------------------------------------------------------
    def _support_aug(self, images: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        x = T.resize(T.to_float(images), self.cfg.image_size)
        x = T.random_hflip(x, gen)
        x = T.random_crop(x, self.cfg.image_size, 4, gen)
        return T.normalize(x, *self.norm_consts)

    def _plain(self, images: np.ndarray) -> torch.Tensor:
        return T.normalize(T.resize(T.to_float(images), self.cfg.image_size), *self.norm_consts)

    def task_batch(self, rng: np.random.Generator, gen: torch.Generator) -> KernelBatch:
        """``tasks_per_batch`` tasks from the fixed pool: x = [queries of all tasks; supports of all tasks]."""
        ids = rng.choice(self.cfg.task_pool, self.cfg.tasks_per_batch, replace=False)
        eps = self.sampler.batch(ids)
        q = np.concatenate([e.query for e in eps])
        s = np.concatenate([e.support for e in eps])
        xq = self._plain(self.train.images[q])
        xs = self._support_aug(self.train.images[s], gen)
        x = torch.cat([xq, xs]).to(self.device, self.dtype)
        return KernelBatch(x, len(eps), len(q))

    def ntk_batch(self, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        idx = rng.choice(len(self.train.labels), self.cfg.ntk_batch, replace=False)
        return self._support_aug(self.train.images[np.sort(idx)], gen).to(self.device, self.dtype)

    def region_inputs(self, rng: np.random.Generator, gen: torch.Generator) -> list[torch.Tensor]:
        lr = self.cfg.linear_regions
        out = []
        for _ in range(lr.batches):
            idx = np.sort(rng.choice(len(self.train.labels), lr.batch, replace=len(self.train.labels) < lr.batch))
            x = T.resize(T.to_float(self.train.images[idx]), lr.resize)
            x = T.random_crop(x, lr.patch, 0, gen)
            x = T.normalize(x, self.train.mean, self.train.std)
            ch = torch.as_tensor(rng.integers(0, 3, size=lr.batch))
            out.append(x[torch.arange(lr.batch), ch].unsqueeze(1).to(self.device))
        return out

    # -- kernels ----------------------------------------------------------------------------------------------------
    def _head(self, gen: torch.Generator) -> nn.Linear:
        assert self.kernel_net is not None
        head = nn.Linear(self.kernel_net.feature_dim, self.cfg.ways)
        init_weights_(head, gen, "default")
        return head.to(self.device, self.dtype)

    def _structure(self, net: LogitsNet) -> tuple[list[tuple[str, tuple[int, int, int] | None]], dict[str, nn.Module]]:
        """The kernel parameters of every op (live or not) with their mask index, and the module table, of this
        network's structure (a separate head or the classifier): built and checked once, then filtered by mask."""
        key = net.head is None
        if key not in self._structures:
            batchnorm = self.cfg.norm == "batchnorm"   # TE-NAS: every parameter named "weight", BN gamma too
            pfilter = ParamFilter(norm=True) if batchnorm else ParamFilter()
            names = kernel_parameter_names(net, lambda n: net.mask_index(n) is not None or net.live_parameter(n), pfilter)
            check_per_sample(net, "coupled" if batchnorm else self.cfg.ntk_backend)
            self._structures[key] = ([(n, net.mask_index(n)) for n in names], dict(net.named_modules()))
        return self._structures[key]

    def _grads(self, net: LogitsNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
        params, modules = self._structure(net)
        names = [n for n, idx in params if idx is None or net.mask[idx]]
        if self.cfg.norm == "batchnorm":   # train-mode BatchNorm couples the samples (TE-NAS)
            return per_sample_grads(net.train(), x, names, "coupled", self.cfg.ntk_chunk)
        if self.cfg.ntk_backend != "fast":
            return per_sample_grads(net, x, names, self.cfg.ntk_backend, self.cfg.ntk_chunk)
        modules = {**modules, "head": net.head} if net.head is not None else modules   # this call's head
        return per_sample_grads(net, x, names, "fast", self.cfg.ntk_chunk, checked=modules)

    def metantk_kernels(self, mask: np.ndarray, batch: KernelBatch,
                        head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(Theta, inner kernel K, MetaNTK Phi) of the network ``mask`` with ``head``; Phi is None when the body
        contributes nothing to Theta (ANIL with Theta ~ K: all-zero features), which the original scores 1e5."""
        assert self.kernel_net is not None and self.cfg.kernel is not None
        net = LogitsNet(self.kernel_net, mask, head)
        grads = self._grads(net, batch.x)
        theta = gram_from_grads(grads)
        return (theta, *self._inner_and_metantk(theta, grads["head.weight"], batch))

    def _inner_and_metantk(self, theta: torch.Tensor, head_samples: torch.Tensor,
                           batch: KernelBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, Phi) of one network from its Theta and its head weight's per-sample gradients: K = Theta (MAML) or
        the head-weight part of the same pass in float64, = ways <phi, phi'> (ANIL; what the original's Opacus
        "NNGP" is); Phi None when Theta ~ K."""
        spec = self.cfg.kernel
        assert spec is not None
        if spec.inner == "maml":
            k = theta
        else:
            k = gram_from_grads([head_samples.double()])
            if torch.allclose(theta.double(), k, rtol=1e-5, atol=1e-8):
                return k, None
        return k, metantk(theta, k, batch.n_tasks, spec.inner_time, spec.reg, n_query=batch.n_query)

    def metantk_condition(self, mask: np.ndarray, batch: KernelBatch, head: nn.Linear) -> float:
        phi = self.metantk_kernels(mask, batch, head)[2]
        return self.cfg.fidelity.nan_condition if phi is None else condition_number(phi, self.cfg.fidelity.nan_condition)

    def ntk_kernel(self, mask: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """The plain NTK (``tenas``): gradients of the sum of the supernet's own classifier logits."""
        assert self.kernel_net is not None
        return gram_from_grads(self._grads(LogitsNet(self.kernel_net, mask), x))

    def ntk_condition(self, mask: np.ndarray, x: torch.Tensor) -> float:
        return condition_number(self.ntk_kernel(mask, x), self.cfg.fidelity.nan_condition)

    # -- one repeat of a candidate ----------------------------------------------------------------------------------
    def kernel_inputs(self, *key: int) -> KernelBatch | torch.Tensor:
        """The data of one repeat: a batch of tasks (metantk) or of images (tenas)."""
        rng = np.random.default_rng([*self.stream, *key, 1])
        gen = torch_gen(*self.stream, *key, 2)
        return self.task_batch(rng, gen) if self.kernel == "MetaNTK" else self.ntk_batch(rng, gen)

    def new_head(self, *key: int) -> nn.Linear | None:
        return self._head(torch_gen(*self.stream, *key, 3)) if self.kernel == "MetaNTK" else None

    def kernel_condition(self, mask: np.ndarray, inputs: KernelBatch | torch.Tensor, head: nn.Linear | None) -> float:
        if isinstance(inputs, KernelBatch):
            assert head is not None
            return self.metantk_condition(mask, inputs, head)
        return self.ntk_condition(mask, inputs)

    def origin_draws(self, *key: int) -> tuple[KernelBatch | torch.Tensor, nn.Linear | None]:
        """The data and the origin's head of one repeat, drawn from its key."""
        return self.kernel_inputs(*key), self.new_head(*key, 0)

    def candidate_draws(self, *key: int, shared: tuple[Any, ...] | None = None
                        ) -> tuple[KernelBatch | torch.Tensor, nn.Linear | None, nn.Linear | None]:
        """(inputs, origin head, candidate head) of one candidate's repeat (key = (round, candidate, repeat)): the
        repeat's own batch and origin head, or the round's ``shared`` ones (their first two entries; the search
        shares them when ``fidelity.fresh_batch_per_candidate`` is false); the candidate's own head
        (``fidelity.fresh_head_per_network``) or the origin's."""
        inputs, head_o = self.origin_draws(*key) if shared is None else shared[:2]
        head_c = self.new_head(*key, 1) if self.cfg.fidelity.fresh_head_per_network else head_o
        return inputs, head_o, head_c

    def kernel_delta(self, origin: np.ndarray, candidate: np.ndarray, *key: int,
                     shared: tuple[KernelBatch | torch.Tensor, nn.Linear | None, float] | None = None) -> float:
        """dK of one repeat.  ``shared`` = (inputs, origin head, origin condition number) reused across candidates
        when ``fidelity.fresh_batch_per_candidate`` is false; otherwise the repeat draws its own batch and heads."""
        inputs, head_o, head_c = self.candidate_draws(*key, shared=shared)
        k_o = self.kernel_condition(origin, inputs, head_o) if shared is None else shared[2]
        k_c = self.kernel_condition(candidate, inputs, head_c)
        return relative_change(k_o, k_c, self.cfg.precision)

    def shared_origin(self, origin: np.ndarray, *key: int) -> tuple[KernelBatch | torch.Tensor, nn.Linear | None, float]:
        inputs, head = self.origin_draws(*key)
        return inputs, head, self.kernel_condition(origin, inputs, head)

    # -- round-batched kernels (search.batch_candidates; docs/kernels.md) -----------------------------------------
    def kernel_group(self) -> int:
        """Samples per kernel: a task batch (metantk) or ``ntk_batch`` images (tenas)."""
        c = self.cfg
        return c.tasks_per_batch * c.ways * (c.shots + c.queries) if self.kernel == "MetaNTK" else c.ntk_batch

    def batchable(self) -> bool:
        """Do the candidates' kernels go through shared passes?  Only with independent samples and the fast
        backend (train-mode BatchNorm, ``norm: batchnorm``, would mix the networks' batch statistics), and only
        when at least two networks fit in ``batch_memory_mb``: one alone is the one-by-one path, which also
        bounds its memory by ``ntk_chunk``."""
        return (self.cfg.batch_candidates and self.kernel_net is not None and self.cfg.norm != "batchnorm"
                and self.cfg.ntk_backend == "fast" and self.networks_per_pass() >= 2)

    def pass_size(self) -> int:
        """Networks per kernel pass this search uses: 1 (one by one: the default, ``batch_candidates: false``) or,
        round-batched, :meth:`networks_per_pass`.  A search's numbers are reproducible for a fixed pass size only:
        a BLAS may take another path for another batch shape, which moves float32 kernels in their last bits
        (enough to flip a rank after dK is rounded).  Recorded in search.json, its provenance and the search state."""
        return self.networks_per_pass() if self.batchable() else 1

    def networks_per_pass(self) -> int:
        """How many networks of :meth:`kernel_group` samples one pass holds within ``search.batch_memory_mb``:
        estimated from the bytes of every module output of a one-sample forward pass (what autograd keeps), twice
        (the activations and their cotangents).  Analytic, so the same on every machine for one config."""
        if self._pass_networks is None:
            assert self.kernel_net is not None
            total = [0]

            def count(m: nn.Module, inputs: tuple, out: object) -> None:
                if isinstance(out, torch.Tensor):
                    total[0] += out.numel() * out.element_size()

            leaves = [m for m in self.kernel_net.modules() if not list(m.children())]
            handles = [m.register_forward_hook(count) for m in leaves]
            try:
                with torch.no_grad():
                    x = torch.zeros(1, 3, self.cfg.image_size, self.cfg.image_size, dtype=self.dtype, device=self.device)
                    self.kernel_net.features(x, full_mask())
            finally:
                for h in handles:
                    h.remove()
            per_network = 2 * total[0] * self.kernel_group()
            self._pass_networks = max(1, int(self.cfg.batch_memory_mb * 2 ** 20 // per_network))
        return self._pass_networks

    def batched_conditions(self, nets: list[tuple[np.ndarray, KernelBatch | torch.Tensor, nn.Linear | None]]) -> list[float]:
        """The condition number of each (mask, inputs, head), as :meth:`kernel_condition` gives it, the networks
        going through shared forward/backward passes with per-sample masks, at most :meth:`networks_per_pass`
        at a time."""
        group = len(nets[0][1].x if isinstance(nets[0][1], KernelBatch) else nets[0][1])
        per = self.networks_per_pass()
        return [c for i in range(0, len(nets), per) for c in self._pass_conditions(nets[i:i + per], group)]

    def _pass_conditions(self, nets: list[tuple[np.ndarray, KernelBatch | torch.Tensor, nn.Linear | None]],
                         group: int) -> list[float]:
        assert self.kernel_net is not None
        body, nan = self.kernel_net, self.cfg.fidelity.nan_condition
        xs = [inp.x if isinstance(inp, KernelBatch) else inp for _, inp, _ in nets]
        if any(len(x) != group for x in xs):
            raise ValueError("batched kernels need the same number of samples in every network")
        masks = SampleMasks(np.stack([m for m, _, _ in nets]), group, self.dtype, self.device)
        head = nets[0][2]
        params, modules = self._structure(LogitsNet(body, masks.union, head))
        order = [n for n, idx in params if idx is None or masks.union[idx]]   # the kernel's parameters, in order
        names = [n for n in order if not n.startswith("head.")]
        x = torch.cat(xs)
        if head is None:   # tenas: the supernet's own classifier, one for every network
            terms = group_gram_terms(lambda z: body.classifier(body.features(z, masks)).sum(), modules, x, names, group)
            return [condition_number(k, nan) for k in sum_gram_terms(terms, order)]
        # metantk: each network's own head on its own samples, as the separate pass applies it (so the features'
        # cotangents are the same numbers); the head weight's per-sample gradient is 1 (x) f_n, formed as there
        heads = [h for _, _, h in nets]
        feats: list[torch.Tensor] = []

        def total(z: torch.Tensor) -> torch.Tensor:
            f = body.features(z, masks)
            feats.append(f)
            out = None
            for g, h in enumerate(heads):
                assert h is not None
                term = h(f[g * group:(g + 1) * group]).sum()
                out = term if out is None else out + term
            assert out is not None
            return out

        terms = group_gram_terms(total, modules, x, names, group)
        f = feats[0].detach()
        ways = heads[0].weight.shape[0]   # type: ignore[union-attr]
        head_samples = torch.einsum("no,ni->noi", f.new_ones(len(f), ways), f)   # (N, ways, D)
        terms["head.weight"] = torch.stack(
            [hs.reshape(group, -1) @ hs.reshape(group, -1).T for hs in head_samples.split(group)])
        theta = sum_gram_terms(terms, order)
        out = []
        for g, (_, inputs, _) in enumerate(nets):
            assert isinstance(inputs, KernelBatch)
            _, phi = self._inner_and_metantk(theta[g], head_samples[g * group:(g + 1) * group], inputs)
            out.append(float(nan) if phi is None else condition_number(phi, nan))
        return out

    def kernel_deltas(self, work: list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]],
                      shared: list[tuple[KernelBatch | torch.Tensor, nn.Linear | None, float]] | None) -> list[float]:
        """dK (mean over repeats) of each (origin, candidate, key), equal to :meth:`kernel_delta` per candidate and
        repeat: the same batches and heads (drawn from the same keys), every network of a repeat batched."""
        reps = self.cfg.repeats
        deltas = np.zeros((len(work), reps))
        for r in range(reps):
            nets: list[tuple[np.ndarray, KernelBatch | torch.Tensor, nn.Linear | None]] = []
            for origin, cand, key in work:
                inputs, head_o, head_c = self.candidate_draws(*key, r, shared=None if shared is None else shared[r])
                if shared is None:
                    nets.append((origin, inputs, head_o))
                nets.append((cand, inputs, head_c))
            conds = self.batched_conditions(nets)
            for i in range(len(work)):
                k_o, k_c = (conds[2 * i], conds[2 * i + 1]) if shared is None else (shared[r][2], conds[i])
                deltas[i, r] = relative_change(k_o, k_c, self.cfg.precision)
        return [float(np.mean([deltas[i, r] for r in range(reps)])) for i in range(len(work))]

    def reinit_thin(self, *key: int) -> None:
        init_weights_(self.thin, torch_gen(*self.stream, *key, 4), self.init)

    def regions(self, mask: np.ndarray, inputs: list[torch.Tensor]) -> int:
        pats = activation_patterns(lambda x: self.thin(x, mask), self.thin_relus, inputs)
        return count_unique_patterns(pats)

    def keyed_region_inputs(self, *key: int) -> list[torch.Tensor]:
        """The linear-region inputs of one repeat, drawn from its key."""
        return self.region_inputs(np.random.default_rng([*self.stream, *key, 5]), torch_gen(*self.stream, *key, 6))

    def region_delta(self, origin: np.ndarray, candidate: np.ndarray, *key: int) -> float:
        inputs = self.keyed_region_inputs(*key)
        return relative_change(self.regions(origin, inputs), self.regions(candidate, inputs), self.cfg.precision)
