"""Empirical NTK of a batch: Theta[n, m] = <dg(x_n)/dtheta, dg(x_m)/dtheta>, g(x) = sum_c f_c(x).

Parameters: the ``.weight`` of every non-normalisation module that takes part in the forward pass (convs, the
linear head), as the original (``params_types w``); biases and norm parameters are switchable.  Two backends:

* ``fast``: ``torch.func`` — ``vmap(grad(g))`` over single samples on a ``functional_call`` of the module;
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
from typing import Callable

import torch
import torch.nn as nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


@dataclass(frozen=True)
class ParamFilter:
    weights: bool = True
    biases: bool = False
    norm: bool = False

    def keep(self, module: nn.Module, pname: str) -> bool:
        if isinstance(module, NORM_TYPES):
            return self.norm
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


def _split_params(module: nn.Module, names: list[str]) -> tuple[dict, dict, dict]:
    params = dict(module.named_parameters())
    train_p = {n: params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in params.items() if n not in train_p}
    return train_p, frozen, dict(module.named_buffers())


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


def grads_fast(module: nn.Module, x: torch.Tensor, names: list[str], chunk: int = 0) -> dict[str, torch.Tensor]:
    """torch.func: per-sample gradients of sum_c f_c(x_n) w.r.t. the parameters ``names``, for ``chunk`` samples
    at a time (0: all at once).

    ``module(x)`` must return per-sample outputs ``(N, ...)``; samples must not interact (no train-mode BN).
    """
    from torch.func import functional_call, grad, vmap

    train_p, frozen, buffers = _split_params(module, names)

    def g(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(module, ({**frozen, **p}, buffers), (xi.unsqueeze(0),)).sum()

    return vmap(grad(g), in_dims=(None, 0), chunk_size=chunk or None)(train_p, x)


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


def per_sample_grads(module: nn.Module, x: torch.Tensor, names: list[str], backend: str = "fast",
                     chunk: int = 0) -> dict[str, torch.Tensor]:
    """Per-sample gradients (N, *shape) of sum_c f_c(x_n) for each parameter in ``names``. ``backend``: fast |
    opacus (per-sample, independent samples) | coupled (batch statistics allowed); ``chunk``: samples per
    vectorised gradient pass for fast and coupled (0: all at once)."""
    if backend == "coupled":
        return grads_coupled(module, x, names, chunk)
    if has_batch_statistics(module):
        raise ValueError(f"the {backend!r} NTK backend needs independent samples, but the network normalises with "
                         "batch statistics (train-mode BatchNorm); use search.norm: batchnorm, which selects the "
                         "coupled backend, or a GroupNorm")
    if backend == "fast":
        return grads_fast(module, x, names, chunk)
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
