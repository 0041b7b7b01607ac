"""Analytical MetaNTK (paper Eq. 11; research/metantk-nas-original.md §4.3) and condition numbers.

Samples are ordered ``[Q_1..Q_T, S_1..S_T]`` (queries of every task, then supports), task-major.  With the outer
kernel Theta (the full NTK) and the inner kernel K (Theta for MAML; 5 <phi, phi'> for ANIL), per task i:

    T_i = (K(S_i,S_i) + r I)^+ (I - exp(-t K(S_i,S_i)))        (t = inf: the exponential vanishes)
    A_i = K(Q_i,S_i) T_i
    Phi_ij = Theta(Q_i,Q_j) - A_i Theta(S_i,Q_j) - Theta(Q_i,S_j) A_j^T + A_i Theta(S_i,S_j) A_j^T

i.e. with A = blockdiag(A_i):  Phi = Theta_QQ - A Theta_SQ - (A Theta_SQ)^T + A Theta_SS A^T.
T_i is evaluated through one eigendecomposition K_SS = U diag(l) U^T: T_i = U diag(f(l)) U^T with
f(l) = (1 - exp(-t l)) / (l + r), the pseudo-inverse dropping |l + r| below scipy.linalg.pinvh's cutoff.
All kernel algebra runs in float64.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def inner_operator(k_ss: torch.Tensor, t: float, reg: float) -> torch.Tensor:
    """T = pinvh(K + rI) (I - expm(-t K)) for a symmetric K, as scipy computes it."""
    k = k_ss.double()
    lam, u = torch.linalg.eigh(k)
    shifted = lam + reg
    cutoff = max(k.shape) * torch.finfo(torch.float64).eps * shifted.abs().max()
    inv = torch.where(shifted.abs() > cutoff, 1.0 / shifted, torch.zeros_like(shifted))
    decay = torch.ones_like(lam) if math.isinf(t) else 1.0 - torch.exp(-t * lam)
    return (u * (inv * decay)) @ u.T


def metantk(theta: torch.Tensor, k_inner: torch.Tensor, n_tasks: int, t: float, reg: float,
            n_query: int | None = None) -> torch.Tensor:
    """The MetaNTK over the query samples from the NTK ``theta`` and the inner kernel ``k_inner``.

    Both kernels are over ``[Q_1..Q_T, S_1..S_T]``; ``n_query`` is the total number of queries (default: half
    the samples, as in the original's 5-way 1-shot 1-query tasks).
    """
    n = theta.shape[0]
    nq = n // 2 if n_query is None else n_query
    ns = n - nq
    if nq % n_tasks or ns % n_tasks:
        raise ValueError(f"{nq} queries and {ns} supports cannot be split into {n_tasks} equal tasks")
    theta, k_inner = theta.double(), k_inner.double()
    qp, sp = nq // n_tasks, ns // n_tasks
    a = torch.zeros(nq, ns, dtype=torch.float64, device=theta.device)
    for i in range(n_tasks):
        q = slice(i * qp, (i + 1) * qp)
        s = slice(nq + i * sp, nq + (i + 1) * sp)
        a[q, i * sp:(i + 1) * sp] = k_inner[q, s] @ inner_operator(k_inner[s, s], t, reg)
    t_qq, t_sq, t_ss = theta[:nq, :nq], theta[nq:, :nq], theta[nq:, nq:]
    a_sq = a @ t_sq
    phi = t_qq - a_sq - a_sq.T + a @ t_ss @ a.T
    return 0.5 * (phi + phi.T)


def valid_condition(value: float, nan_value: float = 1e5) -> bool:
    """Whether a condition number came from a positive-definite kernel with finite entries: finite, below the
    largest float (``nan_to_num`` maps inf there), at least 1 (lambda_min > 0), and not the NaN sentinel."""
    return bool(np.isfinite(value) and 1.0 <= value < np.finfo(np.float64).max and value != nan_value)


def condition_number(kernel: torch.Tensor, nan_value: float = 1e5) -> float:
    """lambda_max / lambda_min of a symmetric kernel (ascending eigenvalues, no abs, no clamping).

    NaN -> ``nan_value`` (the original's ``nan_to_num(nan=1e5)``, which also maps +-inf to +-max float); a kernel
    with non-finite entries or a failed eigensolver gives ``nan_value`` instead of an exception.
    """
    k = kernel.detach().double().cpu()
    if not torch.isfinite(k).all():
        return float(nan_value)
    try:
        eig = torch.linalg.eigvalsh(k)
    except RuntimeError:
        return float(nan_value)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.float64(eig[-1].item()) / np.float64(eig[0].item())
    return float(np.nan_to_num(cond, nan=nan_value))
