#!/usr/bin/env python
"""Benchmark few-shot evaluation: the batched Newton solver over all episodes vs the per-episode scikit-learn
LogisticRegression loop (the original protocol) on the same features, in one run; prints the ratio and the
agreement.  Two references: scikit-learn with the original's stopping rule (scikit-learn 1.0.2, which the original
pinned: tol 1e-4 on the summed loss; today's scikit-learn needs tol / n for it) and today's default tol (which stops
earlier, see metantk_nas.fsl.evaluate.fit_predict_sklearn).

  .venv/bin/python bench/evaluate.py                       # 1000 episodes, 5-way, 50 queries, 5x augmented 1- and 5-shot
  .venv/bin/python bench/evaluate.py --episodes 200 --dim 576
"""
import argparse

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU
import numpy as np
import torch

from metantk_nas.fsl.evaluate import accuracies, l2_normalise, sklearn_accuracies


def synthetic_features(episodes, ways, shots, aug, queries, dim, seed=0):
    """Class-clustered L2-normalised features shaped like the real ones (576-d for C=48): per episode the support
    features and labels, and the episode's query rows in one table of query features (as the evaluation computes
    them once per test image) with their labels."""
    g = torch.Generator().manual_seed(seed)
    sf, sy, qf, qi, qy = [], [], [], [], []
    for e in range(episodes):
        centres = torch.randn(ways, dim, generator=g)
        ys = np.repeat(np.arange(ways), shots * aug)
        yq = np.repeat(np.arange(ways), queries)
        sf.append(l2_normalise(centres[ys] + 6.0 * torch.randn(len(ys), dim, generator=g)))
        qf.append(l2_normalise(centres[yq] + 6.0 * torch.randn(len(yq), dim, generator=g)))
        qi.append(np.arange(e * len(yq), (e + 1) * len(yq)))
        sy.append(ys)
        qy.append(yq)
    return torch.stack(sf), np.stack(sy), torch.cat(qf), np.stack(qi), np.stack(qy)


def best_of(repeats, fn):
    """Fastest of ``repeats`` runs (the same for both sides, so neither pays first-call costs alone)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = clock()
        out = fn()
        times.append(clock() - t0)
    return min(times), out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--dim", type=int, default=576)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--aug", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="runs of each side; the fastest is reported")
    args = p.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.episodes} episodes, 5-way, "
          f"{args.queries} queries/class, {args.aug}x augmented support, {args.dim}-d features, best of {args.repeats}")
    refs = (("original's stopping rule", True), ("today's default tol", False))
    for shots in (1, 5):
        data = synthetic_features(args.episodes, 5, shots, args.aug, args.queries, args.dim)
        t_fast, fast = best_of(args.repeats, lambda: accuracies(*data, 5, 1.0, "batched"))
        print(f"{shots}-shot: batched {t_fast:7.2f} s, mean acc {100 * fast.mean():.2f}")
        for name, legacy in refs:
            t_ref, ref = best_of(args.repeats, lambda: sklearn_accuracies(*data, 1.0, legacy_scaling=legacy))
            agree = np.mean(np.abs(fast - ref) <= 1 / (5 * args.queries) + 1e-9)
            print(f"  sklearn loop, {name:25s} {t_ref:7.2f} s, ratio {t_ref / t_fast:5.1f}x; episodes within one "
                  f"query: {100 * agree:.1f}%, mean acc {100 * ref.mean():.2f}")


if __name__ == "__main__":
    main()
