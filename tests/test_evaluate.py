"""Few-shot evaluation (fsl/evaluate.py and scripts/evaluate.py): the batched solver against scikit-learn, the
original's stopping rule, the episodes end to end, the numbers reported by hand, the network rebuilt from its record."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from metantk_nas.data.prepared import load_split
from metantk_nas.data.episodes import EpisodeSampler
from metantk_nas.fsl.evaluate import (FeatureExtractor, TestTransform, accuracies, evaluate, fit_logreg_batched,
                                      mean_confidence_interval, predict_batched)
from metantk_nas.fsl.train import train_model
from metantk_nas.nas.genotype import random_genotype

from helpers import ROOT, ecfg, tcfg

CPU = torch.device("cpu")



@pytest.fixture(scope="module")
def trained(tiny_prepared, tmp_path_factory):
    data = load_split(tiny_prepared, "train")
    model, _ = train_model(random_genotype(3, 5), tcfg(epochs=2), data, tmp_path_factory.mktemp("ck"), CPU, progress=False)
    return model


def test_confidence_interval_uses_the_t_distribution():
    from scipy import stats

    acc = np.random.default_rng(0).uniform(0.3, 0.9, size=1000)
    m, sd, h = mean_confidence_interval(acc)
    assert m == pytest.approx(acc.mean()) and sd == pytest.approx(acc.std())
    assert h == pytest.approx(1.96234 * acc.std(ddof=1) / np.sqrt(1000), rel=1e-5)  # t_{0.975, 999}
    assert h == pytest.approx(stats.sem(acc) * stats.t.ppf(0.975, 999))
    m, sd, h = mean_confidence_interval(np.array([0.4, 0.6]))    # two episodes: t_{0.975, 1} = 12.7062 (a table)
    assert (m, sd) == pytest.approx((0.5, 0.1)) and h == pytest.approx(12.7062 * 0.1, rel=1e-5)   # sem 0.1414 / sqrt 2
    m, sd, h = mean_confidence_interval(np.array([0.7]))          # one episode: no interval
    assert (m, sd) == (0.7, 0.0) and np.isnan(h)


def test_batched_solver_matches_sklearn_on_real_features(trained, tiny_prepared):
    """On features of a trained network: the predictions of scikit-learn run to convergence (all but at most one
    query in 1% of episodes); against scikit-learn with the original's settings (tol 1e-4 on the summed loss, scikit-learn 1.0.2's
    stopping rule, which stops short of the optimum near decision boundaries) within one query on >= 99% of
    episodes and means within 0.1 points."""
    from sklearn.linear_model import LogisticRegression
    from metantk_nas.fsl.evaluate import episode_features

    test = load_split(tiny_prepared, "test")
    cfg = ecfg(episodes=200, queries=7)
    ext = FeatureExtractor(trained, CPU, 64)
    qf = ext(TestTransform(16, test.mean, test.std)(test.images))
    for shots in (1, 5):
        sf, sy, qi, qy = episode_features(ext, test, cfg, shots, progress=False)
        fast = accuracies(sf, sy, qf, qi, qy, 5, 1.0, "batched")
        converged = np.array([(LogisticRegression(C=1.0, max_iter=20000, tol=1e-12).fit(sf[i].double().numpy(), sy[i])
                               .predict(qf[qi[i]].double().numpy()) == qy[i]).mean() for i in range(len(sf))])
        # two solvers of one convex problem: a query within rounding of a tie may fall either way on another
        # CPU, so at most one query in 1% of episodes (on the machines seen so far: none)
        assert np.mean(fast != converged) <= 0.01 and np.max(np.abs(fast - converged)) <= 1 / (5 * cfg.queries) + 1e-9
        ref = accuracies(sf, sy, qf, qi, qy, 5, 1.0, "sklearn")
        one_query = 1 / (5 * cfg.queries)
        assert np.mean(np.abs(fast - ref) <= one_query + 1e-9) >= 0.99
        assert abs(fast.mean() - ref.mean()) * 100 <= 0.1


def test_sklearn_reference_stops_where_scikit_learn_1_0_2_did():
    """The original ran scikit-learn 1.0.2: lbfgs on sum_i loss_i + ||W||^2 / (2C) until every gradient entry is
    <= tol = 1e-4.  Today's scikit-learn divides that objective by n (PR #26721); the reference passes tol / n, so
    at its solution the 1.0.2 gradient is <= 1e-4 again, where today's default stops well above it."""
    from sklearn.linear_model import LogisticRegression
    from metantk_nas.fsl.evaluate import ORIGINAL_LBFGS_TOL, fit_predict_sklearn

    def legacy_gradient(clf: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
        diff = clf.predict_proba(x) - np.eye(5)[y]           # P - Y
        return float(max(np.abs(diff.T @ x + clf.coef_).max(), np.abs(diff.sum(0)).max()))   # C = 1

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 5)
    worst_legacy, worst_default = 0.0, 0.0
    for _ in range(10):
        x = rng.normal(size=(5, 64))[y] + 1.5 * rng.normal(size=(25, 64))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        legacy = LogisticRegression(C=1.0, max_iter=1000, random_state=0, tol=ORIGINAL_LBFGS_TOL / len(x)).fit(x, y)
        default = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(x, y)
        worst_legacy = max(worst_legacy, legacy_gradient(legacy, x, y))
        worst_default = max(worst_default, legacy_gradient(default, x, y))
        assert np.array_equal(fit_predict_sklearn(x, y, x), legacy.predict(x))
    assert worst_legacy <= ORIGINAL_LBFGS_TOL < worst_default


def _assert_reaches_sklearn_optimum(x: np.ndarray, y: np.ndarray, C: float | None = None, atol: float = 1e-4) -> None:
    """Our fit (in x's own dtype) against scikit-learn run to convergence on the same values in float64; without C,
    each side's default (scikit-learn's and the original's C = 1)."""
    from sklearn.linear_model import LogisticRegression

    kw = {} if C is None else {"C": C}
    w, b = fit_logreg_batched(torch.as_tensor(x), torch.as_tensor(y), 5, **kw)
    for e in range(len(x)):
        x64 = x[e].astype(np.float64)
        clf = LogisticRegression(max_iter=20000, tol=1e-12, **kw).fit(x64, y[e])
        probs = torch.softmax(torch.as_tensor(x64) @ w[e].T + b[e], -1).numpy()
        assert np.allclose(probs, clf.predict_proba(x64), atol=atol)


def test_batched_solver_reaches_the_sklearn_optimum():
    x = np.random.default_rng(0).normal(size=(3, 25, 40))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    _assert_reaches_sklearn_optimum(x, np.tile(np.repeat(np.arange(5), 5), (3, 1)))


@pytest.mark.parametrize("spread", [1e-2, 1e-4])
def test_batched_solver_is_exact_on_nearly_collinear_float32_features(spread):
    """The gram and the CG run in float32: on float32 features within ``spread`` of one common direction (a nearly
    singular gram, like an untrained network's), still scikit-learn's optimum."""
    rng = np.random.default_rng(0)
    y = np.tile(np.repeat(np.arange(5), 25), (3, 1))
    x = rng.normal(size=(3, 1, 64)) + spread * (rng.normal(size=(3, 5, 64))[:, y[0]] + 0.3 * rng.normal(size=(3, 125, 64)))
    _assert_reaches_sklearn_optimum((x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32), y, atol=1e-6)


def test_batched_solver_is_exact_with_a_weak_ridge():
    """C = 1e4 (the Hessian's ridge 1e-4: far worse conditioned than C = 1) on separable classes."""
    rng = np.random.default_rng(1)
    y = np.tile(np.repeat(np.arange(5), 25), (3, 1))
    x = 5 * rng.normal(size=(3, 5, 64))[:, y[0]] + rng.normal(size=(3, 125, 64))
    _assert_reaches_sklearn_optimum((x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32), y, C=1e4,
                                    atol=1e-6)


def test_float32_prediction_refines_near_ties_in_float64():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 50, 32, generator=g), dim=-1)
    w = torch.randn(4, 5, 32, generator=g, dtype=torch.float64)
    b = torch.zeros(4, 5, dtype=torch.float64)
    w[:, 1], b[:, :2] = w[:, 0], 10.0
    b[:, 1] += 1e-9                       # class 1 beats class 0 by 1e-9: invisible in float32
    reference = (torch.einsum("emd,ekd->emk", q.double(), w) + b[:, None]).argmax(-1)
    assert bool((reference == 1).all())
    assert torch.equal(predict_batched(w, b, q), reference)
    zero_sum = w - w.mean(1, keepdim=True)               # fitted weights' rows sum to zero: K - 1 of them suffice
    assert torch.equal(predict_batched(zero_sum[:, :-1], b, q, zero_sum=True), predict_batched(zero_sum, b, q))
    assert bool((predict_batched(zero_sum[:, :-1], b, q, zero_sum=True) == 1).all())


def test_batched_solver_handles_repeated_support_vectors():
    """Identical augmented copies make the support gram singular; the solver still reaches sklearn's optimum, and
    non-finite features are refused rather than fitted."""
    base = np.random.default_rng(1).normal(size=(2, 5, 30))
    base /= np.linalg.norm(base, axis=-1, keepdims=True)
    x = np.repeat(base, 5, axis=1)                      # 25 rows, rank 5
    y = np.tile(np.repeat(np.arange(5), 5), (2, 1))
    _assert_reaches_sklearn_optimum(x, y)
    x[1, 3, 0] = np.nan
    with pytest.raises(FloatingPointError, match="^non-finite support features$"):
        fit_logreg_batched(torch.as_tensor(x), torch.as_tensor(y), 5, C=1.0)


class PooledPixels(torch.nn.Module):
    """A stand-in network whose features are 4x4-pooled pixels: the synthetic classes differ in colour and
    pattern, so these features separate them, independently of any training."""

    def features(self, x):
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)


def _queried_images(test, shots, episodes):
    """The test images the first ``episodes`` episodes of each shot setting query, sorted: the episodes of
    evaluate.seed 42 (sampler seed 42 * 1000 + shots), 5-way, 4 queries per class, as ecfg() sets them."""
    return np.unique(np.concatenate([EpisodeSampler(test.labels, 5, s, 4, 42 * 1000 + s).episode(i).query
                                     for s in shots for i in range(episodes)]))


def test_evaluate_end_to_end_against_scikit_learn_on_its_own_episodes(tiny_prepared, monkeypatch):
    """The stage function itself: above chance on separable features; its mean is 100 x the mean of its
    per-episode accuracies; every episode's accuracy is scikit-learn's (run to convergence) on the same
    episode's features; every episode's query labels name its 5 classes, `queries` images each."""
    from sklearn.linear_model import LogisticRegression

    import metantk_nas.fsl.evaluate as ev

    test = load_split(tiny_prepared, "test")
    seen = []
    real = ev.accuracies
    monkeypatch.setattr(ev, "accuracies", lambda *a, **k: seen.append(a) or real(*a, **k))
    cfg = ecfg(episodes=30, queries=4)
    out = evaluate(PooledPixels(), test, cfg, CPU, progress=False)
    assert set(out) == {"1shot", "5shot"} and len(seen) == 2
    # the query features, L2-normalised (computed here without the extractor) of the images each episode queries
    # (the episodes of evaluate.seed: seed * 1000 + shots), one row per image any episode queries
    expected_q = PooledPixels().features(TestTransform(16, test.mean, test.std)(test.images))
    expected_q = expected_q / expected_q.norm(dim=1, keepdim=True)
    queried = {s: np.stack([EpisodeSampler(test.labels, 5, s, 4, 42 * 1000 + s).episode(i).query for i in range(30)])
               for s in cfg.shots}
    distinct = len(np.unique(np.concatenate(list(queried.values()))))
    for shots, (sup_f, sup_y, all_q, q_rows, q_y, *_) in zip(cfg.shots, seen):
        assert len(all_q) == distinct
        assert torch.allclose(all_q[q_rows], expected_q[queried[shots]], atol=1e-6)
        q_idx = q_rows                          # what the solver indexes all_q with, below
        r = out[f"{shots}shot"]
        per = np.array(r["per_episode"])
        assert set(r) == {"mean", "std", "ci95", "episodes", "shots", "ways", "queries", "solver", "per_episode"}
        assert (r["shots"], r["ways"], r["queries"], r["solver"]) == (shots, 5, 4, "batched")
        assert len(per) == r["episodes"] == 30 and r["mean"] == pytest.approx(100 * per.mean(), abs=1e-3)
        assert r["std"] == pytest.approx(100 * per.std(), abs=1e-3)                     # population std
        t975_29 = 2.045229642132703                                                      # t quantile, 29 d.o.f.
        assert r["ci95"] == pytest.approx(100 * t975_29 * per.std(ddof=1) / np.sqrt(30), abs=1e-3)
        assert r["mean"] > 2 * 100 / cfg.ways, r["mean"]                       # chance: 20
        assert sup_y.shape == (30, cfg.ways * shots * cfg.support_augmentations)
        true = np.asarray(test.labels)[queried[shots]]
        for i in range(30):
            pred = (LogisticRegression(C=cfg.C, max_iter=20000, tol=1e-12).fit(sup_f[i].double().numpy(), sup_y[i])
                    .predict(all_q[q_idx[i]].double().numpy()))
            assert per[i] == pytest.approx((pred == q_y[i]).mean(), abs=1e-6), i
            by_label = [set(true[i][q_y[i] == k]) for k in range(cfg.ways)]
            assert all(len(c) == 1 for c in by_label) and len(set.union(*by_label)) == cfg.ways
            assert np.bincount(q_y[i], minlength=cfg.ways).tolist() == [cfg.queries] * cfg.ways
    assert out["5shot"]["mean"] > out["1shot"]["mean"]
    seen.clear()                                # one episode: only its query images are extracted
    evaluate(PooledPixels(), test, replace(cfg, episodes=1), CPU, progress=False)
    one = _queried_images(test, cfg.shots, 1)
    assert len(seen[0][2]) == len(one) < len(test.labels)
    assert torch.allclose(seen[0][2], expected_q[one], atol=1e-6)


def test_evaluation_is_deterministic(trained, tiny_prepared):
    test = load_split(tiny_prepared, "test")
    a = evaluate(trained, test, ecfg(episodes=10), CPU, progress=False)
    b = evaluate(trained, test, ecfg(episodes=10), CPU, progress=False)
    assert a == b
    assert set(a) == {"1shot", "5shot"} and len(a["5shot"]["per_episode"]) == 10
    assert a["1shot"]["mean"] != evaluate(trained, test, ecfg(episodes=10, seed=7), CPU, progress=False)["1shot"]["mean"]


def test_nan_weights_fail_evaluation_clearly(trained, tiny_prepared):
    import copy

    broken = copy.deepcopy(trained)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite features"):
        evaluate(broken, load_split(tiny_prepared, "test"), ecfg(episodes=2), CPU, progress=False)


def test_fit_predict_sklearn_calls_scikit_learn_as_the_original_did(monkeypatch):
    """The reference's LogisticRegression: C as given, lbfgs, max_iter=1000, random_state=0 (the original's
    call), with tol 1e-4 / n (scikit-learn 1.0.2's unscaled stopping rule on today's scikit-learn) or, without
    legacy_scaling, 1e-4 itself; fitted on the support, predicting the queries."""
    import sklearn.linear_model

    from metantk_nas.fsl.evaluate import fit_predict_sklearn

    made, fitted = [], []

    class Recording:
        def __init__(self, **kw):
            made.append(kw)

        def fit(self, x, y):
            fitted.append((x.shape, list(y)))
            return self

        def predict(self, x):
            return np.full(len(x), 3)

    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", Recording)
    y = np.repeat(np.arange(5), 5)
    assert fit_predict_sklearn(np.zeros((25, 3)), y, np.zeros((4, 3)), C=0.5).tolist() == [3] * 4
    fit_predict_sklearn(np.zeros((25, 3)), y, np.zeros((4, 3)), C=0.5, legacy_scaling=False)
    common = {"C": 0.5, "solver": "lbfgs", "max_iter": 1000, "random_state": 0}
    assert made == [{**common, "tol": 1e-4 / 25}, {**common, "tol": 1e-4}]
    assert fitted == [((25, 3), y.tolist())] * 2
    made.clear()                                # evaluate.solver: sklearn runs it with the original's stopping rule
    accuracies(torch.zeros(2, 25, 3), np.tile(y, (2, 1)), torch.zeros(4, 3), np.zeros((2, 4), int),
               np.full((2, 4), 3), 5, 0.5, "sklearn")
    assert made == [{**common, "tol": 1e-4 / 25}] * 2


def test_float64_recheck_covers_the_margin_computed_by_hand():
    """Queries whose top two float32 logits are within 1e-4 (1 + |q| max_k |w_k| + max_k |b_k|) of each other
    are recomputed in float64, each episode with its own scale.  Episode 0: w_0 = (100, 100, 100, 100), w_1 the
    same but 99.9829 last, q = e_4: gap 0.0171 within 1e-4 (1 + 200) = 0.0201 (rechecked; a margin with the
    largest column norm, 141.4, would be 0.0142 and miss it).  Episode 1: rows of norm 2, class 1 ahead by 4.5e-4,
    beyond its own 1e-4 (1 + 2) = 3e-4 (not rechecked; episode 0's scale would take it)."""
    w = torch.tensor([[[100.0] * 4, [100.0] * 3 + [100 - 0.0171]],
                      [[1.0] * 3 + [1 - 4.5e-4], [1.0] * 4]], dtype=torch.float64)
    b = torch.zeros(2, 2, dtype=torch.float64)
    q = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(2, 1, 4)
    asked = []
    pred = predict_batched(w, b, q, exact_w=lambda e: asked.append(e.tolist()) or w[e])
    assert asked == [[0]] and pred.tolist() == [[0], [1]]


def test_the_line_search_halves_an_overshooting_newton_step():
    """A support point 30 times farther out than the others makes the first Newton step from zero overshoot
    (the line search halves it, seen when this test was written); the fit still reaches scikit-learn's optimum."""
    x = np.random.default_rng(0).normal(size=(1, 25, 3))
    x[0, 0] *= 30
    _assert_reaches_sklearn_optimum(x, np.repeat(np.arange(5), 5)[None], C=10.0, atol=1e-6)


def test_an_episode_with_a_non_finite_step_keeps_its_start_and_spares_the_others():
    """Episode 1's features overflow float32 (1e100): its every Newton step is non-finite and is rejected, so it
    stays at theta = 0 (uniform probabilities 1/5), finite; episode 0 in the same batch is fitted as it is
    alone."""
    import torch.nn.functional as F

    from metantk_nas.fsl.evaluate import _newton_cg

    z = torch.as_tensor(np.random.default_rng(0).normal(size=(2, 25, 6)))
    z[1] *= 1e100
    zt = torch.cat([z, torch.ones(2, 25, 1, dtype=torch.float64)], -1)
    y1h = F.one_hot(torch.arange(5).repeat_interleave(5).expand(2, 25), 5).double().transpose(1, 2)
    theta, p = _newton_cg(zt, y1h, 1.0, 50, 1e-9, 200)
    alone, p_alone = _newton_cg(zt[:1], y1h[:1], 1.0, 50, 1e-9, 200)
    assert torch.equal(theta[1], torch.zeros_like(theta[1])) and torch.equal(p[1], torch.full_like(p[1], 0.2))
    assert torch.allclose(theta[0], alone[0], atol=1e-7) and torch.allclose(p[0], p_alone[0], atol=1e-8)


def test_a_ridge_too_weak_for_the_features_scale_is_refused_not_fitted(monkeypatch):
    """Features of norm about 630 with C = 1e4: W = C (Y - P)^T x multiplies the fit's remaining gradient by about
    C |x|^2 = 4e9, and W's support logits would miss the fit's by tens (before this check: NaN weights, and
    accuracies of them, without a word).  Refused, naming C and the sklearn solver; the same features at norm 1
    fit (``test_batched_solver_is_exact_with_a_weak_ridge``)."""
    x = 100 * np.random.default_rng(0).normal(size=(1, 25, 40))
    with pytest.raises(FloatingPointError, match=r"C = 10000 is too weak a ridge for features of norm up to "
                                                 r"\d+.*; set evaluate.solver: sklearn$"):
        fit_logreg_batched(torch.as_tensor(x), torch.as_tensor(np.repeat(np.arange(5), 5)[None]), 5, C=1e4)
    import metantk_nas.fsl.evaluate as ev                   # a fit gone NaN, however it got there, is refused too
    real = ev._newton_cg
    monkeypatch.setattr(ev, "_newton_cg", lambda *a: (real(*a)[0] * np.nan, real(*a)[1]))
    with pytest.raises(FloatingPointError, match=r"miss its own fit by nan"):
        fit_logreg_batched(torch.as_tensor(x / 100), torch.as_tensor(np.repeat(np.arange(5), 5)[None]), 5)


def test_support_features_go_through_the_network_feature_batch_images_at_a_time(tiny_prepared):
    """5 episodes of 5-way 1-shot with 2 augmentations: 10 images each.  Episodes are gathered until they hold
    feature_batch images or more: batches of 20, 20, 10 for feature_batch 20; 30, 20 for 25; 10 each for 10."""
    from metantk_nas.fsl.evaluate import episode_features

    test = load_split(tiny_prepared, "test")
    real = FeatureExtractor(PooledPixels(), CPU, 64)
    for fb, expected in [(20, [20, 20, 10]), (25, [30, 20]), (10, [10] * 5)]:
        sizes = []
        sup_f, *_ = episode_features(lambda x: sizes.append(len(x)) or real(x), test,
                                     ecfg(episodes=5, shots=(1,), feature_batch=fb), 1, progress=False)
        assert sizes == expected and sup_f.shape == (5, 10, 48)


def test_evaluate_reports_and_logs_its_numbers_by_hand(tiny_prepared, caplog, capsys):
    """With channels_last off and the progress bar on: the mean is 100 x the per-episode mean rounded to 4
    places; the log names the query images extracted and each setting's mean +- the t-based CI (t(0.975, 5) =
    2.5706 for 6 episodes, from a table), the bar each shot setting."""
    import logging

    test = load_split(tiny_prepared, "test")
    cfg = ecfg(episodes=6, channels_last=False)
    with caplog.at_level(logging.INFO, logger="metantk_nas.fsl.evaluate"):
        out = evaluate(PooledPixels(), test, cfg, CPU, progress=True)
    bar = capsys.readouterr().err
    used = _queried_images(test, cfg.shots, 6)
    assert any(m.startswith(f"query features of {len(used)} test images: ") for m in caplog.messages)
    for shots in cfg.shots:
        per = np.array(out[f"{shots}shot"]["per_episode"])
        assert out[f"{shots}shot"]["mean"] == round(100 * per.mean(), 4)
        ci = 100 * 2.570581835636314 * per.std(ddof=1) / np.sqrt(6)
        assert f"5-way {shots}-shot: {100 * per.mean():.2f} +- {ci:.2f} (95% CI, 6 episodes)" in caplog.messages
        assert f"{shots}-shot support features" in bar


def test_support_augmentations_draw_from_the_seed_shots_and_episode_stream(tiny_prepared, monkeypatch):
    """Episode i of a shot setting augments its support with the generator of (evaluate.seed, shots, i): another
    seed, shot setting or episode draws other crops and flips."""
    import metantk_nas.fsl.evaluate as ev

    keys = []
    real = ev.torch_gen
    monkeypatch.setattr(ev, "torch_gen", lambda *k: keys.append(k) or real(*k))
    extract = FeatureExtractor(PooledPixels(), CPU, 64)
    ev.episode_features(extract, load_split(tiny_prepared, "test"), ecfg(episodes=3, seed=7), 5, progress=False)
    assert keys == [(7, 5, 0), (7, 5, 1), (7, 5, 2)]


def test_a_fit_stopped_by_its_iteration_limit_returns_each_samples_class_probabilities():
    """One Newton step (iters=1, still in the float32 phase): the probabilities returned are each support
    sample's softmax over the 5 classes of theta's logits, computed here, summing to 1 over the classes."""
    import torch.nn.functional as F

    from metantk_nas.fsl.evaluate import _newton_cg

    z = torch.as_tensor(np.random.default_rng(0).normal(size=(2, 25, 6)))
    zt = torch.cat([z, torch.ones(2, 25, 1, dtype=torch.float64)], -1)
    y1h = F.one_hot(torch.arange(5).repeat_interleave(5).expand(2, 25), 5).double().transpose(1, 2)
    theta, p = _newton_cg(zt, y1h, 1.0, 1, 1e-9, 200)
    logits = torch.einsum("ekr,enr->ekn", theta, zt)
    assert torch.allclose(p, logits.exp() / logits.exp().sum(1, keepdim=True), atol=1e-12)
    assert torch.allclose(p.sum(1), torch.ones(2, 25, dtype=torch.float64))


def test_accuracies_recheck_near_ties_with_the_fits_float64_weights(monkeypatch):
    """The batched accuracies hand predict_batched float32 weights (K - 1 rows) and, for the float64 recheck of
    near-ties, the float64 W of the same fit: fit_logreg_batched's, episode by episode."""
    import metantk_nas.fsl.evaluate as ev

    x = np.random.default_rng(0).normal(size=(2, 25, 12))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    sup = torch.as_tensor(x, dtype=torch.float32)
    y = np.tile(np.repeat(np.arange(5), 5), (2, 1))
    exact = []
    real = ev.predict_batched
    monkeypatch.setattr(ev, "predict_batched", lambda w, b, q, qn, exact_w, **kw: exact.append(exact_w) or
                        real(w, b, q, qn, exact_w, **kw))
    accuracies(sup, y, sup.reshape(50, 12), np.arange(50).reshape(2, 25), y, 5, 1.0, "batched", workers=1)
    w64, _ = fit_logreg_batched(sup, torch.as_tensor(y), 5, C=1.0)
    assert len(exact) == 1 and exact[0] is not None
    assert exact[0](torch.tensor([1])).dtype == torch.float64
    assert torch.allclose(exact[0](torch.tensor([1, 0])), w64[[1, 0]], rtol=1e-12, atol=1e-14)


def test_the_evaluation_rebuilds_the_network_from_its_trainings_record(tiny_prepared, tmp_path):
    """model.pt's shape comes from the metrics.json its training wrote beside it (channels, cells, training
    classes): with a config that agrees the evaluation runs on it; a config with another train.channels, or no
    record at all, stops in one line naming the values and the file, before any episode."""
    import json

    import torch
    import yaml

    from helpers import run_script
    from metantk_nas.nas.genotype import random_genotype
    from metantk_nas.nas.networks import EvalNet

    g = random_genotype(0, 5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "genotype.json").write_text(g.to_json())
    torch.save(EvalNet(g, 4, 5, 8).state_dict(), run / "model.pt")
    (run / "metrics.json").write_text(json.dumps({"channels": 4, "cells": 5, "n_classes": 8, "params": 1}))
    over = tmp_path / "o.yaml"
    cfg = {"device": "cpu", "train": {"channels": 4, "image_size": 16, "crop_padding": 2},
           "evaluate": {"episodes": 2, "queries": 5, "support_augmentations": 1}}
    over.write_text(yaml.safe_dump(cfg))
    args = ["--configfile", ROOT / "config/config.yaml", over, "--dataset", "tiny", "--method", "random", "--cells",
            "5", "--seed", "0", "--no-progress", "--model", run / "model.pt", "--genotype", run / "genotype.json",
            "--prepared", tiny_prepared, "--out", run]
    run_script(ROOT / "scripts/evaluate.py", *args, cwd=tmp_path)
    res = json.loads((run / "fewshot.json").read_text())["results"]
    assert set(res) == {"1shot", "5shot"} and all(r["episodes"] == len(r["per_episode"]) == 2 for r in res.values())
    prov = json.loads((run / "fewshot.json.prov.json").read_text())
    assert str(run / "metrics.json") in prov["inputs"]
    over.write_text(yaml.safe_dump({**cfg, "train": {**cfg["train"], "channels": 8}}))
    proc = run_script(ROOT / "scripts/evaluate.py", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: {run / 'model.pt'}: trained as another network than this run's: channels 4 (metrics.json) vs 8 "
        "(train.channels); rerun its training for this config")
    over.write_text(yaml.safe_dump(cfg))
    (run / "metrics.json").unlink()
    proc = run_script(ROOT / "scripts/evaluate.py", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(
        f"error: {run / 'metrics.json'}: no record of the network's shape (channels, cells, n_classes) beside "
        f"{run / 'model.pt'} (FileNotFoundError")
    assert proc.stderr.strip().endswith("; rerun its training") and "\n" not in proc.stderr.strip()
