"""Few-shot evaluation (research §7.3, §A.6): frozen network, L2-normalised penultimate features, multinomial
logistic regression (L2, C) fitted on the augmented support set, accuracy on the queries; mean, std and 95% CI
(t distribution) over episodes.

The ``batched`` solver fits all episodes of a chunk at once with Newton-CG in the support set's row space:
with X = Z M (Z the Cholesky factor of the n x n gram X X^T, so M = Z^-1 X has orthonormal rows), W = B M
leaves the logits of the support and ||W|| unchanged, and the optimum has this form (the ridge pulls every
component orthogonal to the support to zero), so the problem has K (n + 1) unknowns instead of K (d + 1).
``sklearn`` fits scikit-learn's LogisticRegression per episode (the reference).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import EvalConfig
from ..data.episodes import EpisodeSampler
from ..data.prepared import PreparedSplit
from ..data.transforms import TestTransform, TrainAugment
from ..search.scoring import torch_gen

log = logging.getLogger(__name__)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------------------------
# logistic regression
# ---------------------------------------------------------------------------------------------------------------
def _objective(z: torch.Tensor, y1h: torch.Tensor, theta: torch.Tensor, inv_c: float) -> torch.Tensor:
    w, b = theta[..., :-1], theta[..., -1]
    logits = torch.einsum("enr,ekr->enk", z, w) + b[:, None, :]
    return -(y1h * F.log_softmax(logits, -1)).sum((1, 2)) + 0.5 * inv_c * (w ** 2).sum((1, 2))


def _cg(hvp, g: torch.Tensor, iters: int, tol: torch.Tensor) -> torch.Tensor:
    """Batched conjugate gradients for H d = g (one system per episode), to relative residual ``tol`` (per episode)."""
    d = torch.zeros_like(g)
    r = g.clone()
    p = r.clone()
    rs = (r * r).sum((1, 2))
    stop = tol * tol * rs
    for _ in range(iters):
        hp = hvp(p)
        alpha = rs / (p * hp).sum((1, 2)).clamp_min(1e-300)
        d = d + alpha[:, None, None] * p
        r = r - alpha[:, None, None] * hp
        rs_new = (r * r).sum((1, 2))
        if bool((rs_new <= stop).all()):
            break
        p = r + (rs_new / rs.clamp_min(1e-300))[:, None, None] * p
        rs = rs_new
    return d


def _row_space(x: torch.Tensor, jitter: float = 1e-10) -> torch.Tensor:
    """x (E, n, d) -> z (E, n, n) lower triangular, with x x^T + jitter I = z z^T (Cholesky of the n x n gram).

    Then m = z^-1 x has orthonormal rows up to the jitter, x = z m, and W = B m maps the reduced problem in z back.
    The jitter (relative to the largest squared feature norm) keeps repeated support vectors factorable; it moves
    the problem by O(jitter).  An order of magnitude cheaper than an SVD of x or an eigendecomposition of the gram.
    """
    gram = x @ x.transpose(1, 2)
    scale = gram.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(1e-300)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    z, info = torch.linalg.cholesky_ex(gram + (jitter * scale)[:, None, None] * eye)
    if bool((info != 0).any()):
        raise FloatingPointError("support gram not positive definite (non-finite features?)")
    return z


def fit_logreg_batched(x: torch.Tensor, y: torch.Tensor, n_classes: int, C: float = 1.0, iters: int = 50,
                       gtol: float = 1e-9, cg_iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit E independent problems min_W,b sum_i CE(W x_i + b, y_i) + ||W||^2 / (2C).

    x: (E, n, d), y: (E, n) -> W (E, K, d), b (E, K).  Float64 inexact Newton-CG (Hessian-vector products, never
    the Hessian; CG to the forcing tolerance min(0.5, sqrt(|g| / |g0|)), Nocedal & Wright Alg. 7.1) with a
    backtracking line search, in the row space of each episode's support set, until |g| <= gtol |g0| everywhere.
    """
    x = x.double()
    e, n, d = x.shape
    k = n_classes
    low = _row_space(x)
    # centre the support: with b' = b + W zbar the problem is unchanged (b is not penalised), and the intercept
    # column no longer nearly coincides with the features' common direction, which conditions the Newton system
    zbar = low.mean(1, keepdim=True)
    z = low - zbar
    r = z.shape[-1]
    zt = torch.cat([z, torch.ones(e, n, 1, dtype=z.dtype, device=z.device)], -1)   # (E, n, r+1)
    y1h = F.one_hot(y.long(), k).double()
    theta = torch.zeros(e, k, r + 1, dtype=torch.float64, device=x.device)
    inv_c = 1.0 / C
    reg = torch.full((k, r + 1), inv_c, dtype=torch.float64, device=x.device)
    reg[:, -1] = 1e-10  # the intercept is not penalised; a tiny ridge fixes the softmax's shift invariance
    f = _objective(z, y1h, theta, inv_c)
    g0 = None
    for _ in range(iters):
        p = torch.softmax(torch.einsum("enr,ekr->enk", zt, theta), -1)
        grad = torch.einsum("enk,enr->ekr", p - y1h, zt)
        grad[..., :-1] += inv_c * theta[..., :-1]
        gnorm = grad.flatten(1).norm(dim=1)
        g0 = gnorm if g0 is None else g0
        rel = gnorm / g0.clamp_min(1e-300)
        if bool((rel <= gtol).all()):
            break

        def hvp(v: torch.Tensor) -> torch.Tensor:
            sv = torch.einsum("enr,ekr->enk", zt, v)
            av = p * sv - p * (p * sv).sum(-1, keepdim=True)
            return torch.einsum("enk,enr->ekr", av, zt) + reg * v

        step = _cg(hvp, grad, cg_iters, rel.sqrt().clamp(max=0.5))
        t = torch.ones(e, 1, 1, dtype=torch.float64, device=x.device)
        for _ in range(30):
            f_new = _objective(z, y1h, theta - t * step, inv_c)
            bad = ~(f_new <= f + 1e-12 * f.abs())          # a NaN objective is a rejected step too
            if not bad.any():
                break
            t = torch.where(bad[:, None, None], t * 0.5, t)
        else:  # no decrease within 30 halvings (converged to rounding, or a non-finite step): keep the iterate
            step = torch.where(bad[:, None, None], torch.zeros_like(step), step)
            f_new = torch.where(bad, f, f_new)
        theta = theta - t * step
        f = f_new
    # W = B L^-1 x: solve L^T Y^T = B^T, then Y x; b = b' - B zbar
    b = theta[..., -1] - torch.einsum("ekr,er->ek", theta[..., :-1], zbar[:, 0])
    y_ = torch.linalg.solve_triangular(low.transpose(1, 2), theta[..., :-1].transpose(1, 2), upper=True)
    w = y_.transpose(1, 2) @ x
    return w, b


def predict_batched(w: torch.Tensor, b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """argmax of the float64 logits q W^T + b, without a float64 copy of the queries: float32 logits (error about
    1e-6 |q| |W|), then the few queries whose top two logits are within a margin far above that error are
    recomputed in float64."""
    q32, w32, b32 = q.float(), w.float(), b.float()
    logits = torch.baddbmm(b32[:, None, :], q32, w32.transpose(1, 2))
    pred = logits.argmax(-1)
    top2 = logits.topk(2, dim=-1).values
    scale = 1.0 + q32.norm(dim=-1) * w32.norm(dim=-1).amax(-1, keepdim=True) + b32.abs().amax(-1, keepdim=True)
    e, m = torch.nonzero(top2[..., 0] - top2[..., 1] <= 1e-4 * scale, as_tuple=True)
    if len(e):
        pred[e, m] = (torch.einsum("nd,nkd->nk", q[e, m].double(), w[e]) + b[e]).argmax(-1)
    return pred


def fit_predict_sklearn(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, C: float = 1.0) -> np.ndarray:
    """The original protocol: LogisticRegression(l2, C, lbfgs, max_iter=1000, multinomial, random_state=0)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=1000, random_state=0)  # L2 is the default penalty
    clf.fit(xs, ys)
    return clf.predict(xq)


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------
def mean_confidence_interval(acc: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, std (ddof=0), half-width of the CI = t_{(1+c)/2, n-1} * sem) as RFS's mean_confidence_interval."""
    from scipy import stats

    acc = np.asarray(acc, dtype=np.float64)
    n = len(acc)
    if n < 2:
        return float(acc.mean()), 0.0, float("nan")
    sem = acc.std(ddof=1) / math.sqrt(n)
    return float(acc.mean()), float(acc.std()), float(sem * stats.t.ppf((1 + confidence) / 2, n - 1))


# ---------------------------------------------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FeatureExtractor:
    model: torch.nn.Module
    device: torch.device
    batch: int

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        out = [self.model.features(x[i:i + self.batch].to(self.device)).float().cpu() for i in range(0, len(x), self.batch)]
        feats = torch.cat(out)
        if not bool(torch.isfinite(feats).all()):
            raise FloatingPointError("the network produces non-finite features (NaN/inf weights?)")
        return l2_normalise(feats)


def episode_features(extract: FeatureExtractor, test: PreparedSplit, cfg: EvalConfig, shots: int,
                     progress: bool = True) -> tuple[list[torch.Tensor], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per episode: augmented support features, their labels, query indices and labels."""
    sampler = EpisodeSampler(test.labels, cfg.ways, shots, cfg.queries, cfg.seed * 1000 + shots)
    aug = TrainAugment(cfg.image_size, cfg.crop_padding, cfg.color_jitter, test.mean, test.std)
    sup_f, sup_y, q_idx, q_y = [], [], [], []
    for i in tqdm(range(cfg.episodes), desc=f"{shots}-shot support features", disable=not progress,
                  dynamic_ncols=True, leave=False):
        ep = sampler.episode(i)
        tiled = np.tile(ep.support, cfg.support_augmentations)
        x = aug(test.images[tiled], torch_gen(cfg.seed, shots, i))
        sup_f.append(extract(x))
        sup_y.append(np.tile(ep.support_labels, cfg.support_augmentations))
        q_idx.append(ep.query)
        q_y.append(ep.query_labels)
    return sup_f, sup_y, q_idx, q_y


def accuracies(sup_f: list[torch.Tensor], sup_y: list[np.ndarray], all_q: torch.Tensor, q_idx: list[np.ndarray],
               q_y: list[np.ndarray], ways: int, C: float, solver: str, chunk: int = 25) -> np.ndarray:
    """Per-episode accuracy: episode i fits on (sup_f[i], sup_y[i]) and predicts the query features
    ``all_q[q_idx[i]]`` (computed once per test image) against ``q_y[i]``."""
    acc = np.empty(len(sup_f))
    if solver == "sklearn":
        for i in range(len(sup_f)):
            pred = fit_predict_sklearn(sup_f[i].double().numpy(), sup_y[i], all_q[q_idx[i]].double().numpy(), C)
            acc[i] = float((pred == q_y[i]).mean())
        return acc
    for a in range(0, len(sup_f), chunk):
        b = min(a + chunk, len(sup_f))
        w, bias = fit_logreg_batched(torch.stack(sup_f[a:b]), torch.as_tensor(np.stack(sup_y[a:b])), ways, C)
        pred = predict_batched(w, bias, all_q[torch.as_tensor(np.stack(q_idx[a:b]))]).numpy()
        acc[a:b] = (pred == np.stack(q_y[a:b])).mean(1)
    return acc


def evaluate(model: torch.nn.Module, test: PreparedSplit, cfg: EvalConfig, device: torch.device,
             progress: bool = True) -> dict[str, Any]:
    extract = FeatureExtractor(model, device, cfg.feature_batch)
    tt = TestTransform(cfg.image_size, test.mean, test.std)
    # query features once per test image, reused by every episode
    all_q = torch.cat([extract(tt(test.images[i:i + cfg.feature_batch])) for i in range(0, len(test.labels), cfg.feature_batch)])
    out: dict[str, Any] = {}
    for shots in cfg.shots:
        sup_f, sup_y, q_idx, q_y = episode_features(extract, test, cfg, shots, progress)
        acc = accuracies(sup_f, sup_y, all_q, q_idx, q_y, cfg.ways, cfg.C, cfg.solver)
        mean, std, ci = mean_confidence_interval(acc)
        out[f"{shots}shot"] = {"mean": round(100 * mean, 4), "std": round(100 * std, 4), "ci95": round(100 * ci, 4),
                               "episodes": len(acc), "shots": shots, "ways": cfg.ways, "queries": cfg.queries,
                               "solver": cfg.solver, "per_episode": [round(float(a), 6) for a in acc]}
        log.info("%d-way %d-shot: %.2f +- %.2f (95%% CI, %d episodes)", cfg.ways, shots, 100 * mean, 100 * ci, len(acc))
    return out
