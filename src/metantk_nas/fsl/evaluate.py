"""Few-shot evaluation (research §7.3, §A.6): frozen network, L2-normalised penultimate features, multinomial
logistic regression (L2, C) fitted on the augmented support set, accuracy on the queries; mean, std and 95% CI
(t distribution) over episodes.

The ``batched`` solver fits a chunk of episodes at once with Newton-CG in the support set's row space: only
the n x n gram X X^T enters the problem (the ridge pulls every weight component orthogonal to the support to
zero), so with Z Z^T = X X^T (Cholesky) it has K (n + 1) unknowns instead of K (d + 1), and the weights come
back from the optimality condition W = C (Y - P)^T X.
``sklearn`` fits scikit-learn's LogisticRegression per episode (the reference), stopping where the original's
scikit-learn 1.0.2 did (:func:`fit_predict_sklearn`).
"""
from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
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
from ..seeding import torch_gen

log = logging.getLogger(__name__)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------------------------
# logistic regression
# ---------------------------------------------------------------------------------------------------------------
def _zero_sum_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-episode inner product of two zero-sum class matrices (E, K, r) given by their first K - 1 rows (E, K-1, r):
    sum_k a_k b_k over all K rows, the last row being minus the sum of the others (= sum_k<K a_k (b_k + sum_j b_j))."""
    return (a * (b + b.sum(1, keepdim=True))).sum((1, 2))


def _expand(a: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """(E, K-1, m) -> (E, K, m) (or along ``dim``): the zero-sum matrix whose first K - 1 rows are ``a``."""
    return torch.cat([a, -a.sum(dim, keepdim=True)], dim)


def _cg(hvp: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], g: torch.Tensor, minv: torch.Tensor,
        iters: int, tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched preconditioned conjugate gradients for H d = g (one system per episode) on zero-sum class matrices
    (:func:`_zero_sum_dot`; ``minv``: the inverse of a diagonal preconditioner that is the same for every class), to
    relative residual ``tol`` per episode.  ``hvp(v)`` returns (H v, A v) for a linear map A; CG returns d and A d
    (accumulated from the A p of its search directions, so it costs no extra product)."""
    tiny = torch.finfo(g.dtype).tiny
    d = torch.zeros_like(g)
    ad: torch.Tensor | None = None
    r = g.clone()
    z = r * minv
    p = z.clone()
    rz = _zero_sum_dot(r, z)
    stop = tol * tol * _zero_sum_dot(r, r)
    for _ in range(iters):
        hp, ap = hvp(p)
        alpha = (rz / _zero_sum_dot(p, hp).clamp_min(tiny))[:, None, None]
        d.addcmul_(alpha, p)
        ad = alpha * ap if ad is None else ad.addcmul_(alpha, ap)
        r.addcmul_(alpha, hp, value=-1)
        if bool((_zero_sum_dot(r, r) <= stop).all()):
            break
        z = r * minv
        rz_new = _zero_sum_dot(r, z)
        p = z + (rz_new / rz.clamp_min(tiny))[:, None, None] * p
        rz = rz_new
    assert ad is not None, "CG needs at least one iteration"
    return d, ad


def _row_space(x: torch.Tensor, jitter: float = 1e-10) -> torch.Tensor:
    """x (E, n, d) -> z (E, n, n) float64 lower triangular with z z^T = x x^T (Cholesky of the n x n gram).

    The gram is formed in the features' own precision (float32 features: float32 products, an absolute error of
    about 1e-7 |x|^2 that perturbs the support logits by the same order, see :func:`fit_logreg_coefficients`). An
    episode whose gram is not numerically positive definite (repeated support vectors) is refactored from a
    float64 gram plus ``jitter`` times its largest diagonal entry; non-finite features fail.  The factorisation is
    G = U^T U, z = U^T (LAPACK's upper factorisation is a little faster here than the lower one).
    """
    up, info = torch.linalg.cholesky_ex(torch.bmm(x, x.transpose(1, 2)).double(), upper=True)
    bad = torch.nonzero(info).flatten()
    if len(bad):
        xb = x[bad].double()
        if not bool(torch.isfinite(xb).all()):
            raise FloatingPointError("non-finite support features")
        gram = xb @ xb.transpose(1, 2)
        diagonal = gram.diagonal(dim1=1, dim2=2)
        diagonal.add_(jitter * diagonal.amax(-1, keepdim=True).clamp_min(1e-300))
        up_b, info_b = torch.linalg.cholesky_ex(gram, upper=True)
        if bool((info_b != 0).any()):
            raise FloatingPointError("support gram not positive definite")
        up[bad] = up_b
    return up.transpose(1, 2)


def _newton_cg(zt: torch.Tensor, y1h: torch.Tensor, inv_c: float, iters: int, gtol: float,
               cg_iters: int, exact_below: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """min over theta (E, K, r+1) of sum_i CE(theta zt_i, y_i) + ||theta[..., :-1]||^2 / (2C), zt (E, n, r+1)
    float64 with a last column of ones (the unpenalised intercept), labels one-hot (E, K, n).  Returns theta and
    the class probabilities of the support (E, K, n) at the optimum.

    The softmax is unchanged by adding one vector to every class's row, so the penalised optimum has rows summing to
    zero, and the intercepts can be taken so; theta is kept as its first K - 1 rows (the last is minus their sum).
    That removes the intercepts' flat shift direction and makes every product with zt one of K - 1 rows (4 rows run
    far faster than 5 in the BLAS here).

    Inexact Newton (Nocedal & Wright Alg. 7.1) with the iterate and objective in float64, so |g| reaches ``gtol``
    |g0| in every episode:

    - the Newton system by CG in float32 to the forcing tolerance min(0.5, sqrt(|g|/|g0|)), floored at 1e-5 so that
      it never chases float32 rounding, preconditioned by the Hessian's diagonal at the start (uniform
      probabilities, so the same for every class; it took fewer CG steps than the current diagonal);
    - a backtracking line search along the step's logits, which are linear in theta;
    - while |g| > ``exact_below`` |g0| in some episode, the gradient and the step's logits are float32 products too
      (the step's logits come out of CG: the HVP's first product); once every episode is below, or an episode's
      |g| stops halving (float32 rounding is large against |g0|, as on nearly collinear features, where the
      classes' common direction cancels in g0), the logits are recomputed from theta in float64 and every later
      gradient and step logit is float64.
    """
    e, k, n = y1h.shape
    ztc = zt.float()
    reg = torch.full((zt.shape[-1],), inv_c, dtype=torch.float32)
    reg[-1] = 0.0
    minv = (1.0 / (reg + (1 - 1 / k) / k * (ztc * ztc).sum(1)).clamp_min(1e-12))[:, None, :]
    theta = torch.zeros(e, k - 1, zt.shape[-1], dtype=torch.float64)
    logits = torch.zeros(e, k, n, dtype=torch.float64)
    exact = False

    def gradient() -> torch.Tensor:
        res = (p - y1h)[:, :-1]
        grad = torch.bmm(res, zt) if exact else torch.bmm(res.float(), ztc).double()
        grad[..., :-1].add_(theta[..., :-1], alpha=inv_c)
        return grad

    def objective(lsm: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return -(y1h * lsm).sum((1, 2)) + 0.5 * inv_c * _zero_sum_dot(w, w)

    lsm = torch.log_softmax(logits, 1)
    p, f = lsm.exp(), objective(lsm, theta[..., :-1])
    g0, prev_rel = None, torch.inf
    for _ in range(iters):
        grad = gradient()
        g0 = _zero_sum_dot(grad, grad).sqrt().clamp_min(1e-300) if g0 is None else g0
        rel = _zero_sum_dot(grad, grad).sqrt() / g0
        if not exact and (bool((rel <= exact_below).all()) or bool((rel > 0.5 * prev_rel).any())):
            exact = True
            logits = _expand(torch.bmm(theta, zt.transpose(1, 2)))
            lsm = torch.log_softmax(logits, 1)
            p, f = lsm.exp(), objective(lsm, theta[..., :-1])
            grad = gradient()
            rel = _zero_sum_dot(grad, grad).sqrt() / g0
        if exact and bool((rel <= gtol).all()):
            break
        prev_rel = rel
        pc = p.float()

        def hvp(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            sv = _expand(torch.bmm(v, ztc.transpose(1, 2)))
            a = pc * (sv - (pc * sv).sum(1, keepdim=True))
            return torch.baddbmm(reg * v, a[:, :-1], ztc), sv

        step, dlogits = _cg(hvp, grad.float(), minv, cg_iters, rel.sqrt().clamp(1e-5, 0.5).float())
        step = step.double()
        dlogits = _expand(torch.bmm(step, zt.transpose(1, 2))) if exact else dlogits.double()
        t = torch.ones(e, 1, 1, dtype=torch.float64)
        for _ in range(30):
            lsm_new = torch.log_softmax(logits - t * dlogits, 1)
            f_new = objective(lsm_new, theta[..., :-1] - t * step[..., :-1])
            bad = ~(f_new <= f + 1e-12 * f.abs())          # a NaN objective is a rejected step too
            if not bad.any():
                break
            t = torch.where(bad[:, None, None], t * 0.5, t)
        else:  # no decrease within 30 halvings (converged to rounding, or a non-finite step): keep the iterate
            rejected = bad[:, None, None]
            step, dlogits = step.masked_fill(rejected, 0.0), dlogits.masked_fill(rejected, 0.0)
            lsm_new = torch.log_softmax(logits - t * dlogits, 1)
            f_new = torch.where(bad, f, f_new)
        theta, logits, lsm, f = theta - t * step, logits - t * dlogits, lsm_new, f_new
        p = lsm.exp()
    if not exact:  # the iteration limit came first: probabilities of the float64 logits
        p = torch.softmax(_expand(torch.bmm(theta, zt.transpose(1, 2))), 1)
    return _expand(theta), p


SUPPORT_LOGIT_TOL = 1e-3   # largest gap allowed between W's support logits and the fit's (1e-6 or less when sound)


def fit_logreg_coefficients(x: torch.Tensor, y: torch.Tensor, n_classes: int, C: float, iters: int = 50,
                            gtol: float = 1e-9, cg_iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit E independent problems min_W,b sum_i CE(W x_i + b, y_i) + ||W||^2 / (2C), W = coef x.

    x: (E, n, d), y: (E, n) -> coef (E, K, n), b (E, K) in float64.  Newton-CG (:func:`_newton_cg`) in the row space
    of each support set: with z z^T = x x^T, the problem in (B, b) with logits z B^T + b and penalty ||B||^2 is the
    same problem (only the gram enters), with (K - 1) (n + 1) unknowns (the class rows sum to zero, see
    :func:`_newton_cg`).  The support is centred first (the intercept is
    not penalised, so b absorbs the shift). W comes back through the optimality condition W = C (Y - P)^T x, which
    needs no inverse of z (so a nearly singular gram costs no accuracy: an error E in the gram moves the support
    logits by about C |E|, never by |E| / lambda_min).
    """
    e, n, _ = x.shape
    low = _row_space(x)
    zbar = low.mean(1, keepdim=True)
    zt = torch.empty(e, n, n + 1, dtype=torch.float64)
    torch.sub(low, zbar, out=zt[..., :-1])
    zt[..., -1] = 1.0
    y1h = F.one_hot(y.long(), n_classes).double().transpose(1, 2)
    theta, prob = _newton_cg(zt, y1h, 1.0 / C, iters, gtol, cg_iters)
    coef = C * (y1h - prob)
    b = theta[..., -1] - torch.einsum("ekr,er->ek", theta[..., :-1], zbar[:, 0])
    # W's support logits, coef (x x^T) + b = (coef z) z^T + b, against the fit's own: the map W = C (Y - P)^T x
    # multiplies the fit's residual gradient by about C |x|^2, so a ridge far weaker than the features' scale
    # (or a non-finite step) would give weights of another fit
    off = (torch.bmm(torch.bmm(coef, low), low.transpose(1, 2)) + b[..., None] - torch.bmm(theta, zt.transpose(1, 2)))
    worst = float(off.abs().amax())
    if not worst <= SUPPORT_LOGIT_TOL:    # NaN too
        raise FloatingPointError(f"the batched solver's weights miss its own fit by {worst:.2g} in a support logit "
                                 f"(C = {C:g} is too weak a ridge for features of norm up to "
                                 f"{float(x.norm(dim=-1).amax()):.3g}); set evaluate.solver: sklearn")
    return coef, b


def fit_logreg_batched(x: torch.Tensor, y: torch.Tensor, n_classes: int, C: float = 1.0, iters: int = 50,
                       gtol: float = 1e-9, cg_iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit E independent problems min_W,b sum_i CE(W x_i + b, y_i) + ||W||^2 / (2C): x (E, n, d), y (E, n) ->
    W (E, K, d), b (E, K), float64 (see :func:`fit_logreg_coefficients`)."""
    coef, b = fit_logreg_coefficients(x, y, n_classes, C, iters, gtol, cg_iters)
    return weights(coef, x), b


def weights(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W = coef x in float64, from :func:`fit_logreg_coefficients`'s coefficients (E, K, n) and the support
    features.  coef = C (Y - P) has columns summing to zero, and so has W: its last row is minus the sum of the
    others (K - 1 products per episode)."""
    return _expand(torch.bmm(coef[:, :-1], x.double()))


def predict_batched(w: torch.Tensor, b: torch.Tensor, q: torch.Tensor, q_norm: torch.Tensor | None = None,
                    exact_w: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    zero_sum: bool = False) -> torch.Tensor:
    """argmax of the float64 logits q W^T + b, without a float64 copy of the queries: float32 logits (error about
    1e-6 |q| |W|), then the few queries whose top two logits are within a margin far above that error are
    recomputed in float64, with ``exact_w(episodes)`` (float64 W of those episodes; default ``w``) when ``w`` is
    itself a float32 product.  ``q_norm``: the queries' norms, when known, saves a pass over ``q``.
    ``zero_sum``: ``w`` (E, K-1, d) holds the first K - 1 rows of a W whose rows sum to zero (fitted weights do,
    W = C (Y - P)^T x), so each query costs K - 1 products; ``exact_w`` still returns all K rows."""
    q32, w32, b32 = q.float(), w.float(), b.float()
    u = torch.bmm(q32, w32.transpose(1, 2))
    if zero_sum:
        u, w32 = _expand(u, -1), _expand(w32)
    logits = u.add_(b32[:, None, :])
    top, pred = logits.max(-1)
    second = logits.scatter(-1, pred[..., None], -torch.inf).amax(-1)
    q_norm = q32.norm(dim=-1) if q_norm is None else q_norm
    scale = 1.0 + q_norm * w32.norm(dim=-1).amax(-1, keepdim=True) + b32.abs().amax(-1, keepdim=True)
    e, m = torch.nonzero(top - second <= 1e-4 * scale, as_tuple=True)
    if len(e):
        episodes, inverse = torch.unique(e, return_inverse=True)
        if exact_w is not None:
            w64 = exact_w(episodes)
        else:
            w64 = _expand(w[episodes].double()) if zero_sum else w[episodes].double()
        pred[e, m] = (torch.einsum("nd,nkd->nk", q[e, m].double(), w64[inverse]) + b[e].double()).argmax(-1)
    return pred


ORIGINAL_LBFGS_TOL = 1e-4   # scikit-learn's default tol, which the original (pinned scikit-learn 1.0.2) ran with


def fit_predict_sklearn(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, C: float = 1.0,
                        tol: float = ORIGINAL_LBFGS_TOL, legacy_scaling: bool = True) -> np.ndarray:
    """The original protocol: LogisticRegression(l2, C, lbfgs, max_iter=1000, multinomial, random_state=0).

    The original pinned scikit-learn 1.0.2, whose lbfgs minimised sum_i loss_i + ||W||^2 / (2C) and stopped when
    the largest gradient entry fell below ``tol``.  Since 1.4 (scikit-learn PR #26721) it minimises that objective
    divided by the n support samples: the same ``tol`` lets it stop with a gradient n times larger, short of the
    optimum near decision boundaries.  ``legacy_scaling`` passes tol / n, the original's stopping rule on today's
    scikit-learn; False gives today's default behaviour.
    """
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=1000, random_state=0,  # L2 is the default penalty
                             tol=tol / len(xs) if legacy_scaling else tol)
    clf.fit(xs, ys)
    return clf.predict(xq)


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------
def mean_confidence_interval(acc: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, std (ddof=0), half-width of the CI = t_{(1+c)/2, n-1} * sem) as RFS's mean_confidence_interval."""
    from scipy.special import stdtrit   # the t quantile (scipy.stats.t.ppf) without scipy.stats' 1 s import

    acc = np.asarray(acc, dtype=np.float64)
    n = len(acc)
    if n < 2:
        return float(acc.mean()), 0.0, float("nan")
    sem = acc.std(ddof=1) / math.sqrt(n)
    return float(acc.mean()), float(acc.std()), float(sem * stdtrit(n - 1, (1 + confidence) / 2))


# ---------------------------------------------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FeatureExtractor:
    model: torch.nn.Module
    device: torch.device
    batch: int
    channels_last: bool = False   # the network and inputs in channels_last (faster; float32 either way)

    def __post_init__(self) -> None:
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.features(x).float().cpu()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        out = [self._features(x[i:i + self.batch]) for i in range(0, len(x), self.batch)]
        feats = torch.cat(out)
        if not bool(torch.isfinite(feats).all()):
            raise FloatingPointError("the network produces non-finite features (NaN/inf weights?)")
        return l2_normalise(feats)


def episode_sampler(test: PreparedSplit, cfg: EvalConfig, shots: int) -> EpisodeSampler:
    """The episodes of a shot setting: fixed by evaluate.seed and the shots."""
    return EpisodeSampler(test.labels, cfg.ways, shots, cfg.queries, cfg.seed * 1000 + shots)


def query_images(test: PreparedSplit, cfg: EvalConfig) -> np.ndarray:
    """The test images some episode queries, sorted: all of them, in effect, at 1000 episodes; fewer episodes (a
    study's, a rehearsal's) need fewer query features."""
    return np.unique(np.concatenate([episode_sampler(test, cfg, s).episode(i).query
                                     for s in cfg.shots for i in range(cfg.episodes)]))


def episode_features(extract: FeatureExtractor, test: PreparedSplit, cfg: EvalConfig, shots: int,
                     progress: bool = True) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """All episodes' augmented support features (E, n, d) and labels (E, n), query indices and labels (E, m)."""
    sampler = episode_sampler(test, cfg, shots)
    aug = TrainAugment(cfg.image_size, cfg.crop_padding, cfg.color_jitter, test.mean, test.std)
    sup_f: torch.Tensor | None = None
    sup_y, q_idx, q_y = [], [], []
    pending: list[torch.Tensor] = []   # augmented supports of consecutive episodes, one forward per feature_batch

    def flush(first: int) -> None:
        nonlocal sup_f
        feats = extract(torch.cat(pending))
        if sup_f is None:
            sup_f = feats.new_empty((cfg.episodes, len(pending[0]), feats.shape[1]))
        sup_f[first:first + len(pending)] = feats.view(len(pending), -1, feats.shape[1])
        pending.clear()

    first = 0
    for i in tqdm(range(cfg.episodes), desc=f"{shots}-shot support features", disable=not progress,
                  dynamic_ncols=True, leave=False):
        ep = sampler.episode(i)
        tiled = np.tile(ep.support, cfg.support_augmentations)
        pending.append(aug(test.images[tiled], torch_gen(cfg.seed, shots, i)))   # each episode's own draws
        if len(pending) * len(tiled) >= cfg.feature_batch:
            flush(first)
            first = i + 1
        sup_y.append(np.tile(ep.support_labels, cfg.support_augmentations))
        q_idx.append(ep.query)
        q_y.append(ep.query_labels)
    if pending:
        flush(first)
    assert sup_f is not None, "no episodes"
    return sup_f, np.stack(sup_y), np.stack(q_idx), np.stack(q_y)


def sklearn_accuracies(sup_f: torch.Tensor, sup_y: np.ndarray, all_q: torch.Tensor, q_idx: np.ndarray,
                       q_y: np.ndarray, C: float, legacy_scaling: bool = True) -> np.ndarray:
    """Per-episode accuracy of :func:`fit_predict_sklearn`, one episode at a time (the reference)."""
    return np.array([float((fit_predict_sklearn(sup_f[i].double().numpy(), np.asarray(sup_y[i]),
                                                all_q[q_idx[i]].double().numpy(), C,
                                                legacy_scaling=legacy_scaling) == np.asarray(q_y[i])).mean())
                     for i in range(len(sup_f))])


def accuracies(sup_f: torch.Tensor, sup_y: np.ndarray, all_q: torch.Tensor, q_idx: np.ndarray, q_y: np.ndarray,
               ways: int, C: float, solver: str, chunk: int = 50, workers: int = 2) -> np.ndarray:
    """Per-episode accuracy: episode i fits on (sup_f[i], sup_y[i]) and predicts the query features
    ``all_q[q_idx[i]]`` (computed once per test image) against ``q_y[i]``.  The batched solver takes ``chunk``
    episodes at a time, ``workers`` chunks concurrently (each chunk's serial parts, such as LAPACK's loop over
    the batch of Cholesky factorisations, overlap with the other's parallel ones)."""
    q_y = np.asarray(q_y)
    if solver == "sklearn":
        return sklearn_accuracies(sup_f, sup_y, all_q, q_idx, q_y, C)
    sup_y_t, q_idx_t = torch.as_tensor(np.asarray(sup_y)), torch.as_tensor(np.asarray(q_idx))
    q_norm = all_q.norm(dim=-1)

    def chunk_accuracy(a: int) -> np.ndarray:
        x, idx = sup_f[a:a + chunk], q_idx_t[a:a + chunk]
        coef, bias = fit_logreg_coefficients(x, sup_y_t[a:a + chunk], ways, C)
        w32 = torch.bmm(coef[:, :-1].to(x.dtype), x)          # W's rows sum to zero: K - 1 of them
        flat = idx.flatten()       # index_select: a plain row gather, twice as fast as advanced indexing here
        q = all_q.index_select(0, flat).view(*idx.shape, -1)
        pred = predict_batched(w32, bias, q, q_norm.index_select(0, flat).view(idx.shape),
                               lambda e: weights(coef[e], x[e]), zero_sum=True)
        return (pred.numpy() == q_y[a:a + chunk]).mean(1)

    starts = range(0, len(sup_f), chunk)
    if workers <= 1:
        return np.concatenate([chunk_accuracy(a) for a in starts])
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(chunk_accuracy, starts)))


def evaluate(model: torch.nn.Module, test: PreparedSplit, cfg: EvalConfig, device: torch.device,
             progress: bool = True) -> dict[str, Any]:
    extract = FeatureExtractor(model, device, cfg.feature_batch, cfg.channels_last)
    tt = TestTransform(cfg.image_size, test.mean, test.std)
    # query features once per queried test image, reused by every episode: row[i] is image i's row of all_q
    t0 = time.perf_counter()
    used = query_images(test, cfg)
    all_q = torch.cat([extract(tt(test.images[used[i:i + cfg.feature_batch]]))
                       for i in range(0, len(used), cfg.feature_batch)])
    row = np.full(len(test.labels), -1, dtype=np.int64)
    row[used] = np.arange(len(used))
    log.info("query features of %d test images: %.2f s", len(all_q), time.perf_counter() - t0)
    out: dict[str, Any] = {}
    for shots in cfg.shots:
        t0 = time.perf_counter()
        sup_f, sup_y, q_idx, q_y = episode_features(extract, test, cfg, shots, progress)
        t1 = time.perf_counter()
        acc = accuracies(sup_f, sup_y, all_q, row[q_idx], q_y, cfg.ways, cfg.C, cfg.solver)
        log.info("%d-shot, %d episodes: support features %.2f s, solver %.2f s", shots, len(acc), t1 - t0,
                 time.perf_counter() - t1)   # per-episode costs (bench/rehearsal.py extrapolates them)
        mean, std, ci = mean_confidence_interval(acc)
        out[f"{shots}shot"] = {"mean": round(100 * mean, 4), "std": round(100 * std, 4), "ci95": round(100 * ci, 4),
                               "episodes": len(acc), "shots": shots, "ways": cfg.ways, "queries": cfg.queries,
                               "solver": cfg.solver, "per_episode": [round(float(a), 6) for a in acc]}
        log.info("%d-way %d-shot: %.2f +- %.2f (95%% CI, %d episodes)", cfg.ways, shots, 100 * mean, 100 * ci, len(acc))
    return out
