"""Empirical NTK of a batch: Theta[n, m] = <dg(x_n)/dtheta, dg(x_m)/dtheta>, g(x) = sum_c f_c(x).

Parameters: the ``.weight`` of every non-normalisation module that takes part in the forward pass (convs, the
linear head), as the original (``params_types w``); biases and norm parameters are switchable.  Two backends:

* ``fast``: layer by layer from one batched forward and one backward pass.  With independent samples the
  gradient of sum_n g(x_n) with respect to a layer's output y holds every sample's own cotangent dg(x_n)/dy_n, so
  one backward pass (activation gradients only, no weight gradients) gives them all; each conv/linear layer's
  per-sample weight gradient is then formed from its recorded input a_n and cotangent: a batched matrix product
  for 1x1 convs and linear layers, one shifted product per kernel tap for depthwise convs, and for any other conv the weight
  gradient of a convolution that treats the batch as groups.  Activations stay in the contiguous (NCHW) layout:
  channels_last convolutions were about 15% faster on CPU but doubled the float32 error of the kernel.
* ``opacus``: Opacus' ``GradSampleModule`` (per-sample gradients from one backward pass), as the original.

Both require per-sample independence (GroupNorm or no norm) and refuse a train-mode BatchNorm.  TE-NAS keeps
BatchNorm in train mode, so its "per-sample" gradient of sum_c f_c(x_n) flows through the batch statistics into
every other sample (research §B.1); ``grads_coupled`` computes exactly that: one forward of the whole batch, then
the N vector-Jacobian products with cotangents e_n 1^T, vmapped (TE-NAS loops ``backward(retain_graph=True)``).

:func:`per_sample_grads` returns the per-parameter gradients, so a kernel over a subset of the parameters (the
ANIL kernel: the head weight alone) comes from the same pass; :func:`empirical_ntk` sums them into the gram.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


@dataclass(frozen=True)
class ParamFilter:
    weights: bool = True
    biases: bool = False
    norm: bool = False

    def keep(self, module: nn.Module, pname: str) -> bool:
        if isinstance(module, NORM_TYPES):   # norm: its scale (TE-NAS's "weight" in the name: gamma, never beta)
            return self.norm and (pname == "weight" or self.biases)
        if pname == "weight":
            return self.weights
        if pname == "bias":
            return self.biases
        return False


def kernel_parameter_names(module: nn.Module, live: Callable[[str], bool] = lambda n: True,
                           pfilter: ParamFilter = ParamFilter()) -> list[str]:
    names = []
    for mname, m in module.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if p.requires_grad and pfilter.keep(m, pname) and live(full):
                names.append(full)
    return names


def gram_from_grads(grads: dict[str, torch.Tensor] | list[torch.Tensor]) -> torch.Tensor:
    """Sum over parameter tensors of G_p G_p^T, G_p = per-sample gradients flattened to (N, P_p)."""
    items = grads.values() if isinstance(grads, dict) else grads
    gram = None
    for g in items:
        flat = g.reshape(g.shape[0], -1)
        term = flat @ flat.T
        gram = term if gram is None else gram + term
    assert gram is not None, "no parameters"
    return gram


def has_batch_statistics(module: nn.Module) -> bool:
    """Does the forward pass couple samples (a BatchNorm normalising with batch statistics)?"""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats)
               for m in module.modules())


def grads_coupled(module: nn.Module, x: torch.Tensor, names: list[str], chunk: int = 8) -> dict[str, torch.Tensor]:
    """Per-sample gradients with cross-sample coupling (TE-NAS, train-mode BatchNorm): row n of the Jacobian of
    G(theta) = [sum_c f_c(x_m; theta, batch)]_m, from one ordinary forward of the whole batch (running statistics
    update as in TE-NAS) and batched VJPs with cotangents e_n (``is_grads_batched``, ``chunk`` rows at a time to
    bound memory).  Without coupling they equal ``grads_fast``'s."""
    params = dict(module.named_parameters())
    wrt = [params[n] for n in names]
    with torch.enable_grad():
        out = module(x).sum(-1)
        eye = torch.eye(out.shape[0], dtype=out.dtype, device=out.device)
        chunk = chunk or len(eye)
        parts = [torch.autograd.grad(out, wrt, grad_outputs=eye[i:i + chunk], is_grads_batched=True,
                                     retain_graph=i + chunk < len(eye), allow_unused=True, materialize_grads=True)
                 for i in range(0, len(eye), chunk)]
    return {n: torch.cat([p[k] for p in parts]).detach() for k, n in enumerate(names)}


def grads_fast(module: nn.Module, x: torch.Tensor, names: list[str], chunk: int = 0,
               modules: dict[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Per-sample gradients of sum_c f_c(x_n) w.r.t. the parameters ``names``, for ``chunk`` samples at a time
    (0: all at once): layer by layer (module docstring) for the weights and biases of Conv2d and Linear layers;
    any other parameter (a norm's affine weight) by ``vmap(grad(g))`` over single samples.

    ``module(x)`` must return per-sample outputs ``(N, ...)``; samples must not interact (no train-mode BN), and
    no in-place operation may overwrite a recorded layer input or output (checked).
    """
    mods = dict(module.named_modules()) if modules is None else modules
    layer = [n for n in names if isinstance(mods[n.rpartition(".")[0]], (nn.Conv2d, nn.Linear))
             and n.rpartition(".")[2] in ("weight", "bias")]
    other = [n for n in names if n not in layer]
    parts = []
    for xc in x.split(chunk or len(x)):
        grads = _layerwise_grads(module, mods, xc, layer) if layer else {}
        if other:
            grads.update(_vmap_grads(module, xc, other))
        parts.append(grads)
    return parts[0] if len(parts) == 1 else {n: torch.cat([p[n] for p in parts]) for n in names}


def _vmap_grads(module: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    from torch.func import functional_call, grad, vmap

    params = dict(module.named_parameters())
    train_p = {n: params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in params.items() if n not in train_p}
    buffers = dict(module.named_buffers())

    def g(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(module, ({**frozen, **p}, buffers), (xi.unsqueeze(0),)).sum()

    return vmap(grad(g), in_dims=(None, 0))(train_p, x)


def _layerwise_grads(module: nn.Module, mods: dict[str, nn.Module], x: torch.Tensor,
                     names: list[str]) -> dict[str, torch.Tensor]:
    grads = dict(_layer_samples(lambda z: module(z).sum(), mods, x, names))
    return {n: grads[n] if n in grads else x.new_zeros(len(x), *module.get_parameter(n).shape)   # layer not called
            for n in names}


def _layer_samples(total_fn: Callable[[torch.Tensor], torch.Tensor], mods: dict[str, nn.Module], x: torch.Tensor,
                   names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, per-sample gradients (N, *shape)) of each parameter in ``names`` whose layer the forward pass calls,
    one at a time, from one forward pass ``total_fn(x)`` (a scalar: the sum over samples of each sample's output)
    and one backward pass for the layers' output cotangents."""
    owners: dict[str, list[str]] = {}   # layer -> its parameters in names
    for name in names:
        owners.setdefault(name.rpartition(".")[0], []).append(name)
    calls: list[tuple[str, torch.Tensor, torch.Tensor, int, int]] = []   # (module, input, output, versions)

    def record(mname: str) -> Callable:
        def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            calls.append((mname, inputs[0], out, inputs[0]._version, out._version))
        return hook

    handles = [mods[m].register_forward_hook(record(m)) for m in owners]
    try:
        x = x.detach()
        with torch.enable_grad():
            total = total_fn(x.requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    for mname, a, out, va, vo in calls:
        if a._version != va or out._version != vo:
            raise ValueError(f"the fast NTK backend needs the input and output of {mname!r} unchanged after its "
                             "forward, but an in-place operation overwrote one (use inplace=False)")
    cotangents = torch.autograd.grad(total, [c[2] for c in calls], allow_unused=True, materialize_grads=True)
    by_layer: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for (mname, a, _, _, _), g in zip(calls, cotangents):
        by_layer.setdefault(mname, []).append((a.detach(), g))
    del calls, cotangents
    for mname, pairs in by_layer.items():
        m = mods[mname]
        for name in owners[mname]:
            sample = None
            for a, g in pairs:   # a layer called twice: its per-sample gradient is the sum over calls
                part = (_weight_samples(m, a, g) if name.endswith("weight")
                        else g.sum((2, 3)) if isinstance(m, nn.Conv2d) else torch.einsum("n...o->no", g))
                sample = part if sample is None else sample + part
            assert sample is not None
            yield name, sample


def group_gram_terms(total_fn: Callable[[torch.Tensor], torch.Tensor], mods: dict[str, nn.Module], x: torch.Tensor,
                     names: list[str], group: int) -> dict[str, torch.Tensor]:
    """Per parameter, the NTK gram terms G_p G_p^T (G, group, group) of consecutive groups of ``group`` samples,
    from one forward pass ``total_fn(x)`` and one backward pass over all groups (the ``fast`` backend's
    per-sample gradients, layer by layer).  Each layer's per-sample gradients are folded into the groups' terms
    and dropped, so no more than one layer's are held at a time; cross-group entries are never formed.  Each
    group's term is the same matrix product as :func:`gram_from_grads` forms for that group alone, and
    :func:`sum_gram_terms` adds them in the same order, so a group's gram equals its own pass's bit for bit
    where its per-sample gradients do.  A parameter whose layer the pass never calls has no term (zero)."""
    if len(x) % group:
        raise ValueError(f"{len(x)} samples do not split into groups of {group}")
    terms = {}
    for name, sample in _layer_samples(total_fn, mods, x, names):
        terms[name] = _group_grams(sample, group)
    return terms


def _group_grams(sample: torch.Tensor, group: int) -> torch.Tensor:
    flat = sample.reshape(len(sample) // group, group, -1)
    return torch.stack([f @ f.T for f in flat])


def sum_gram_terms(terms: dict[str, torch.Tensor], order: list[str]) -> torch.Tensor:
    """The grams: the terms summed in ``order`` (the kernel's parameter order), missing ones skipped (zero)."""
    present = [terms[n] for n in order if n in terms]
    if not present:
        raise ValueError("no parameter of the kernel takes part in the forward pass")
    gram = present[0]
    for term in present[1:]:
        gram = gram + term
    return gram


def _weight_samples(m: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients (N, *weight.shape) of a layer from its input ``a`` and output cotangent ``g``."""
    n = a.shape[0]
    if isinstance(m, nn.Linear):
        return torch.einsum("n...o,n...i->noi", g, a)
    assert isinstance(m, nn.Conv2d)
    (kh, kw), (sh, sw), (dh, dw), padding = m.kernel_size, m.stride, m.dilation, m.padding
    if isinstance(padding, str):
        raise ValueError(f"the fast NTK backend needs numeric conv padding, not {padding!r}")
    ph, pw = padding
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0) and m.groups == 1:
        a = a[:, :, ::sh, ::sw]
        return torch.bmm(g.flatten(2), a.flatten(2).transpose(1, 2)).view(n, *m.weight.shape)
    ho, wo = g.shape[2:]
    if m.groups == m.in_channels == m.out_channels:   # depthwise: one shifted product per kernel tap
        ap = F.pad(a, (pw, pw, ph, ph))
        taps = [(ap[:, :, dh * i: dh * i + sh * (ho - 1) + 1: sh, dw * j: dw * j + sw * (wo - 1) + 1: sw] * g).sum((2, 3))
                for i in range(kh) for j in range(kw)]
        return torch.stack(taps, -1).view(n, *m.weight.shape)
    # any other conv: the weight gradient of the same conv applied to all samples at once as n * groups groups
    w = torch.nn.grad.conv2d_weight(a.reshape(1, -1, *a.shape[2:]), (n * m.out_channels, *m.weight.shape[1:]),
                                    g.reshape(1, -1, ho, wo), m.stride, m.padding, m.dilation, n * m.groups)
    return w.view(n, *m.weight.shape)


def grads_opacus(module: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Opacus per-sample gradients (``loss_reduction='sum'``, backward of sum of outputs); a parameter that takes
    no part in the forward pass has none."""
    from opacus import GradSampleModule

    was_training = module.training
    module.train()  # Opacus only captures activations in training mode (GroupNorm is unaffected)
    gsm = GradSampleModule(module, loss_reduction="sum", strict=True)
    try:
        for p in module.parameters():
            p.grad = None
        out = gsm(x)
        out.sum().backward()
        params = dict(module.named_parameters())
        samples = {n: getattr(params[n], "grad_sample", None) for n in names}
        return {n: gs.detach() for n, gs in samples.items() if gs is not None}
    finally:
        gsm._close()
        for p in module.parameters():
            p.grad = None
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
        module.train(was_training)


def shared_modules(module: nn.Module) -> dict[str, list[str]]:
    """Modules with parameters that are reachable under more than one name: first name -> the other names."""
    first: dict[int, str] = {}
    out: dict[str, list[str]] = {}
    for name, m in module.named_modules(remove_duplicate=False):
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if id(m) in first:
            out.setdefault(first[id(m)], []).append(name)
        else:
            first[id(m)] = name
    return out


def check_per_sample(module: nn.Module, backend: str) -> None:
    """Refuse a network the per-sample gradients of ``backend`` would get wrong: a module registered under two
    names (Opacus hooks it once per name and returns a multiple of its gradient, and a parameter name would not
    say which path it stands for), and, for every backend but ``coupled``, batch statistics (train-mode BN)."""
    shared = shared_modules(module)
    if shared:
        first, others = next(iter(shared.items()))
        raise ValueError(f"per-sample gradients: module {first!r} is also registered as {others[0]!r}; register "
                         "each module once (Opacus would hook it twice and double its gradient)")
    if backend != "coupled" and has_batch_statistics(module):
        raise ValueError(f"the {backend!r} NTK backend needs independent samples, but the network normalises with "
                         "batch statistics (train-mode BatchNorm); use search.norm: batchnorm, which selects the "
                         "coupled backend, or a GroupNorm")


def per_sample_grads(module: nn.Module, x: torch.Tensor, names: list[str], backend: str = "fast",
                     chunk: int = 0, checked: dict[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Per-sample gradients (N, *shape) of sum_c f_c(x_n) for each parameter in ``names``. ``backend``: fast |
    opacus (per-sample, independent samples) | coupled (batch statistics allowed); ``chunk``: samples per
    vectorised gradient pass for fast and coupled (0: all at once).

    The network must pass :func:`check_per_sample` for ``backend``.  ``checked``: the caller has already checked
    this structure, whose ``dict(named_modules())`` it passes (the search: the same network thousands of times)."""
    if checked is None:
        check_per_sample(module, backend)
    if backend == "coupled":
        return grads_coupled(module, x, names, chunk)
    if backend == "fast":
        return grads_fast(module, x, names, chunk, checked)
    if backend == "opacus":
        return grads_opacus(module, x, names)
    raise ValueError(f"unknown NTK backend {backend!r}; expected 'fast', 'opacus' or 'coupled'")


def empirical_ntk(module: nn.Module, x: torch.Tensor, names: list[str], backend: str = "fast",
                  chunk: int = 0) -> torch.Tensor:
    """The NTK gram over ``names`` (see :func:`per_sample_grads`)."""
    return gram_from_grads(per_sample_grads(module, x, names, backend, chunk))


def ntk_fast(module: nn.Module, x: torch.Tensor, names: list[str], chunk: int = 0) -> torch.Tensor:
    return gram_from_grads(grads_fast(module, x, names, chunk))


def ntk_opacus(module: nn.Module, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    return gram_from_grads(grads_opacus(module, x, names))


def ntk_coupled(module: nn.Module, x: torch.Tensor, names: list[str], chunk: int = 8) -> torch.Tensor:
    return gram_from_grads(grads_coupled(module, x, names, chunk))
