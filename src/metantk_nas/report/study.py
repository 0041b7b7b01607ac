"""The score-vs-accuracy study (docs/study.md): do the training-free scores predict few-shot accuracy?

Per (dataset, cells), over the random sample only (N cells drawn uniformly from the configured search space, one
point per distinct genotype, its accuracy the mean over the runs that trained it): Kendall's tau-b and Spearman's
rho (scipy.stats) between each score and accuracy, each with a percentile bootstrap 95% CI over resamples of the
architectures (one set of resamples per (dataset, cells), shared by every score and shot setting; the rank sum is
recomputed inside every resample). A score value from a non-positive-definite or non-finite kernel is excluded and
counted. The grid's searched cells are not in these correlations (they were chosen on the scores): a second block
places each of them within the random sample (percentiles of its scores and accuracies). Table 3 (a, b), the
stability of the grid's searches against chance, and a scatter plot per score.
"""
from __future__ import annotations

import json
import warnings
import zlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..config import Run
from ..errors import PipelineError
from ..nas.genotype import CELL_TYPES, N_NODES, Genotype, from_mask
from ..provenance import atomic_path
from ..ranking import dense_ranks
from ..methods import REGISTRY
from .tables import DATASET_TITLES, Table

SCORE_TITLES = {"metantk_maml": "MetaNTK κ (MAML)", "metantk_anil": "MetaNTK κ (ANIL)", "ntk": "NTK κ",
                "regions": "#Linear regions", "params": "#Params", "rank_sum": "Rank sum (search)"}
# the sign of the correlation if the score predicts accuracy the way the search uses it
EXPECTED_SIGN = {"metantk_maml": "-", "metantk_anil": "-", "ntk": "-", "regions": "+", "params": "+",
                 "rank_sum": "-"}
LOG_SCALE = {"metantk_maml", "metantk_anil", "ntk"}


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Correlation:
    tau: float
    tau_ci: tuple[float, float]
    rho: float
    rho_ci: tuple[float, float]
    n: int

    @staticmethod
    def fmt(value: float, ci: tuple[float, float]) -> str:
        if not np.isfinite(value):
            return "--"
        if not all(np.isfinite(ci)):
            return f"{value:.2f}"
        return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _tau_rho(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():   # a constant sample has no rank correlation: NaN, not a warning per resample
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def resamples(n: int, count: int, seed: int, *key: int) -> np.ndarray:
    """``count`` bootstrap resamples (rows of indices, drawn with replacement) of ``n`` architectures (none of
    an empty sample)."""
    if n == 0:
        return np.empty((0, 0), dtype=np.int64)
    return np.random.default_rng([seed, *key]).integers(0, n, size=(count, n))


def correlation(x: Sequence[float] | np.ndarray, y: Sequence[float], boot: np.ndarray,
                score: Callable[[np.ndarray], np.ndarray] | None = None) -> Correlation:
    """tau-b and rho of (score(x), y) and their percentile 95% CIs over the resamples ``boot`` (rows of indices);
    ``score`` (default: x itself) is applied to each resample's rows of x, so that a statistic of the sample such
    as the rank sum is recomputed inside every resample."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    f = score or (lambda v: v)
    tau, rho = _tau_rho(f(x), y)
    if len(boot) == 0:
        return Correlation(tau, (np.nan, np.nan), rho, (np.nan, np.nan), len(x))
    pairs = np.array([_tau_rho(f(x[i]), y[i]) for i in boot])

    def ci(values: np.ndarray) -> tuple[float, float]:
        if np.isnan(values).all():
            return (np.nan, np.nan)
        lo, hi = np.nanpercentile(values, [2.5, 97.5])
        return (float(lo), float(hi))

    return Correlation(tau, ci(pairs[:, 0]), rho, ci(pairs[:, 1]), len(x))


def rank_sum(kappa: Sequence[float], regions: Sequence[float], figures: int = 3) -> np.ndarray:
    """The search's rule for whole architectures: dense rank of kappa ascending plus dense rank of regions
    descending, both on values sorted by their ``figures`` significant figures (ties only for equal values, as the
    search ranks its candidates: metantk_nas.ranking); 0 + 0 = predicted best, so low = predicted good."""
    k = [float(v) for v in kappa]
    r = [float(v) for v in regions]
    return np.asarray(dense_ranks(k, False, figures), dtype=float) + np.asarray(dense_ranks(r, True, figures),
                                                                               dtype=float)


def _rank_sum_columns(xy: np.ndarray) -> np.ndarray:
    return rank_sum(xy[:, 0], xy[:, 1])


def with_rank_sum(arch: pd.DataFrame, search_inner: Mapping[tuple[str, int], str]) -> pd.DataFrame:
    """``arch`` with a ``rank_sum`` column over each (dataset, cells)'s valid random cells (NaN elsewhere: a rank
    sum is a rank within the sample, and the searched cells are not in it)."""
    out = arch.assign(rank_sum=np.nan)
    for (d, c), group in out[out["origin"] == "sampled"].groupby(["dataset", "cells"], sort=False):
        cols = [f"metantk_{search_inner[(d, c)]}", "regions"]
        ok = group[cols].notna().all(axis=1)
        if ok.any():
            out.loc[group.index[ok], "rank_sum"] = rank_sum(group.loc[ok, cols[0]], group.loc[ok, cols[1]])
    return out


# ---------------------------------------------------------------------------------------------------------------
# collection
# ---------------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing (run the study's score/train/evaluate jobs first)") from None
    except ValueError as e:
        raise PipelineError(f"{path}: not valid JSON ({e})") from None


def canonical_genotype(text: str) -> str:
    """The genotype string read back from its mask: one string per architecture, whatever the pairs' order."""
    try:
        return from_mask(Genotype.from_darts(text).to_mask()).to_darts()
    except ValueError as e:
        raise PipelineError(f"study: unreadable genotype string {text!r} ({e})") from None


KERNEL_SCORE_NAMES = ("metantk_maml", "metantk_anil", "ntk")
SCORES = (*KERNEL_SCORE_NAMES, "regions", "params")


def collect(results: Path, runs: Iterable[Run], accuracy_root: Path, shots: Sequence[int],
            sampled: set[Run]) -> pd.DataFrame:
    """One row per run: its origin (sampled | grid), canonical genotype, scores (NaN: no valid repeat), the count
    of invalid repeats per kernel score, per-repeat values, and accuracy per shot setting."""
    rows = []
    for run in runs:
        sc = _read_json(results / run.path / "scores.json")
        few = _read_json(accuracy_root / run.path / "fewshot.json")["results"]
        row: dict[str, Any] = {"dataset": run.dataset, "cells": run.cells, "method": run.method, "seed": run.seed,
                               "origin": "sampled" if run in sampled else "grid",
                               "genotype": canonical_genotype(sc["genotype_string"])}
        row |= {k: np.nan if v is None else float(v) for k, v in sc["scores"].items()}
        row |= {f"invalid_{k}": int(sc.get("invalid", {}).get(k, 0)) for k in KERNEL_SCORE_NAMES}
        row |= {f"repeats_{k}": list(v) for k, v in sc["repeats"].items()}
        for s in shots:
            if f"{s}shot" not in few:
                raise PipelineError(f"{accuracy_root / run.path / 'fewshot.json'}: no {s}-shot result")
            row[f"acc_{s}shot"] = float(few[f"{s}shot"]["mean"])
        rows.append(row)
    return pd.DataFrame(rows)


def distinct(df: pd.DataFrame, shots: Sequence[int]) -> pd.DataFrame:
    """One row per architecture: the random sample's distinct genotypes, and per grid method its distinct
    genotypes. Scores and ``seed`` are those of the first run (every run of a genotype is scored with the same
    draws); accuracies are the mean over its runs; ``runs`` counts them and ``seeds`` lists them."""
    if df.empty:
        return df.assign(runs=pd.Series(dtype=int), seeds=pd.Series(dtype=object))
    keys = ["dataset", "cells", "origin", "method", "genotype"]
    acc = [f"acc_{s}shot" for s in shots]
    firsts = df.groupby(keys, sort=False, as_index=False).first()
    means = df.groupby(keys, sort=False, as_index=False)[acc].mean()
    counts = df.groupby(keys, sort=False).agg(runs=("seed", "size"), seeds=("seed", list)).reset_index()
    return firsts.drop(columns=acc).merge(means, on=keys).merge(counts, on=keys)


def correlations(arch: pd.DataFrame, shots: Sequence[int], count: int, seed: int,
                 search_inner: Mapping[tuple[str, int], str]) -> pd.DataFrame:
    """Per (dataset, cells) of the random sample, each score against each shot setting's accuracy: tau, rho and
    their CIs over the valid architectures (``excluded``: those whose score had no valid repeat). ``rank_sum``
    combines the kappa of the search's kernel for the (dataset, cells) with the regions, recomputed per resample."""
    rows = []
    for (d, c), group in arch[arch["origin"] == "sampled"].groupby(["dataset", "cells"], sort=False):
        kappa = f"metantk_{search_inner[(d, c)]}"
        for score in SCORE_TITLES:
            cols = [kappa, "regions"] if score == "rank_sum" else [score]
            ok = group[cols].notna().all(axis=1).to_numpy()
            x = group.loc[ok, cols].to_numpy(dtype=float)
            x = x if score == "rank_sum" else x[:, 0]
            boot = resamples(int(ok.sum()), count, seed, zlib.crc32(str(d).encode()), int(c))
            for s in shots:
                r = correlation(x, group.loc[ok, f"acc_{s}shot"].to_numpy(), boot,
                                _rank_sum_columns if score == "rank_sum" else None)
                rows.append({"dataset": d, "cells": int(c), "score": score, "shots": s, "n": r.n,
                             "excluded": int((~ok).sum()), "runs": int(group.loc[ok, "runs"].sum()), "tau": r.tau,
                             "tau_lo": r.tau_ci[0], "tau_hi": r.tau_ci[1], "rho": r.rho, "rho_lo": r.rho_ci[0],
                             "rho_hi": r.rho_ci[1], "expected_sign": EXPECTED_SIGN[score]})
    return pd.DataFrame(rows)


def percentile(sample: np.ndarray, value: float, higher_is_better: bool) -> float:
    """The share (%) of the valid random sample that ``value`` is at least as good as: 100 = better than or equal
    to every random cell; NaN for a NaN value or an empty sample."""
    sample = sample[np.isfinite(sample)]
    if not np.isfinite(value) or len(sample) == 0:
        return float("nan")
    return float(100.0 * np.mean(sample <= value if higher_is_better else sample >= value))


def searched(arch: pd.DataFrame, shots: Sequence[int], search_inner: Mapping[tuple[str, int], str]) -> pd.DataFrame:
    """Each distinct searched cell of the grid, placed within its (dataset, cells)'s random sample: its kappa (the
    search's kernel), regions and accuracies, each with its percentile among the random cells (100 = as good as
    the best: lowest kappa, most regions, highest accuracy)."""
    rows = []
    for (d, c), group in arch.groupby(["dataset", "cells"], sort=False):
        rand = group[group["origin"] == "sampled"]
        kappa = f"metantk_{search_inner[(d, c)]}"
        for r in group[group["origin"] == "grid"].itertuples():
            row = {"dataset": d, "cells": int(c), "method": r.method, "runs": r.runs, "genotype": r.genotype,
                   "kappa": getattr(r, kappa), "kappa_pct": percentile(rand[kappa].to_numpy(float),
                                                                       getattr(r, kappa), False),
                   "regions": r.regions, "regions_pct": percentile(rand["regions"].to_numpy(float), r.regions, True)}
            for s in shots:
                acc = getattr(r, f"acc_{s}shot")
                row |= {f"acc_{s}shot": acc, f"acc_{s}shot_pct": percentile(rand[f"acc_{s}shot"].to_numpy(float),
                                                                             acc, True)}
            rows.append(row)
    return pd.DataFrame(rows)


def _num(v: float, fmt: str = "{:.2f}") -> str:
    return "--" if not np.isfinite(v) else fmt.format(v)


def table3(corr: pd.DataFrame, shots: Sequence[int], resamples_n: int, synthetic: bool) -> Table:
    """Table 3a: the random sample's correlations."""
    groups = [("", 5)] + [(f"{s}-shot", 2) for s in shots]
    columns = ["Dataset", "#Cells", "Score", "Sign", "N"] + ["Kendall τ", "Spearman ρ"] * len(shots)
    rows = []
    for (d, c, score), g in corr.groupby(["dataset", "cells", "score"], sort=False):
        first = g.iloc[0]
        n = f"{first['n']} ({first['runs']} runs)"
        if first["excluded"]:
            n += f"; {first['excluded']} of {first['n'] + first['excluded']} excluded"
        row: list[Any] = [DATASET_TITLES.get(d, d), str(c), SCORE_TITLES[score], EXPECTED_SIGN[score], n]
        for s in shots:
            r = g[g["shots"] == s].iloc[0]
            row += [Correlation.fmt(r["tau"], (r["tau_lo"], r["tau_hi"])),
                    Correlation.fmt(r["rho"], (r["rho_lo"], r["rho_hi"]))]
        rows.append(row)
    comparisons = len(rows) * len(shots) * 2
    notes = ["Kendall τ-b and Spearman ρ (scipy.stats) between each training-free score and the mean test accuracy (%) "
             "over the random sample of each (dataset, cells): cells drawn uniformly from the configured search space "
             "(search.ops), one point per distinct genotype (its accuracy the mean over the runs that trained it). "
             "The grid's searched cells are left out: they were chosen on these scores (Table 3b places them).",
             f"[lo, hi]: percentile bootstrap 95% CI over {resamples_n} resamples of the architectures (not BCa: "
             "with the same resamples for every score, the intervals are comparable across scores, and at N of a "
             "few dozen BCa's acceleration estimate is itself noisy); -- : undefined (a constant score or accuracy).",
             "N: distinct architectures (runs). Excluded: a κ with no valid repeat (a non-positive-definite kernel, "
             "NaN or inf); invalid repeats are never averaged in.",
             "Sign: the sign expected if the score predicts accuracy as the search uses it (lower κ and rank sum, "
             "more linear regions). Rank sum: the search's rule (dense ranks of κ of the search's kernel and of "
             "-#regions at 3 significant figures), recomputed in every resample.",
             f"{comparisons} intervals (τ and ρ per score, shot setting and (dataset, cells)), each at 95% and not "
             f"adjusted for multiplicity: about {comparisons * 0.05:.0f} of them would miss by chance."]
    if synthetic:
        notes.append("Synthetic data: these correlations test the machinery and say nothing about mini-ImageNet.")
    return Table(groups, columns, rows, [False] * len(rows), [], "Table 3a. Score-vs-accuracy study: do the "
                 "training-free scores predict few-shot accuracy over random cells? (Beyond the paper.)", notes,
                 source_column=False)


def searched_table(sd: pd.DataFrame, shots: Sequence[int]) -> Table:
    """Table 3b: the searched cells within the random sample."""
    groups = [("", 4), ("κ (search's kernel)", 2), ("#Linear regions", 2)] + [(f"{s}-shot", 2) for s in shots]
    columns = ["Dataset", "#Cells", "Method", "Runs", "Value", "Pct", "Value", "Pct"] + ["Acc. (%)", "Pct"] * len(shots)
    rows = []
    for r in sd.itertuples():
        row: list[Any] = [DATASET_TITLES.get(r.dataset, r.dataset), str(r.cells), r.method, str(r.runs),
                          _num(r.kappa, "{:.4g}"), _num(r.kappa_pct, "{:.0f}"), _num(r.regions, "{:.0f}"),
                          _num(r.regions_pct, "{:.0f}")]
        for s in shots:
            row += [_num(getattr(r, f"acc_{s}shot")), _num(getattr(r, f"acc_{s}shot_pct"), "{:.0f}")]
        rows.append(row)
    notes = ["One row per distinct cell a grid method found (Runs: the seeds that found it; accuracy: their mean).",
             "Pct: the share (%) of the random sample of Table 3a that the cell is at least as good as (lowest κ, most "
             "regions, highest accuracy): 100 = as good as the best random cell. A search that finds top cells has "
             "high κ and region percentiles; a score that predicts accuracy carries them over to the accuracy's."]
    return Table(groups, columns, rows, [False] * len(rows), [], "Table 3b. The searched cells within the random "
                 "sample.", notes, source_column=False)


# ---------------------------------------------------------------------------------------------------------------
# stability of the search
# ---------------------------------------------------------------------------------------------------------------
def _edges(g: Genotype, with_ops: bool) -> set[tuple[Any, ...]]:
    out = set()
    for ct in CELL_TYPES:
        for i, node in enumerate(getattr(g, ct)):
            for op, inp in node:
                out.add((ct, i, inp, op) if with_ops else (ct, i, inp))
    return out


def agreement(genotypes: Sequence[Genotype], with_ops: bool) -> float:
    """Mean over pairs of genotypes of the fraction of one's edges (with their ops: ``with_ops``) the other has
    too (every genotype has the same number of edges); NaN for fewer than two."""
    pairs = list(combinations(genotypes, 2))
    if not pairs:
        return float("nan")
    fr = [len(_edges(a, with_ops) & _edges(b, with_ops)) / len(_edges(a, with_ops)) for a, b in pairs]
    return float(np.mean(fr))


def chance_agreement(n_ops: int, nodes: int = N_NODES) -> tuple[float, float]:
    """(edges, ops): the expected agreement of two cells drawn independently and uniformly from the search space
    (per node two distinct inputs of the i + 2 available, an op of ``n_ops`` each), by enumeration of every pair
    of input choices per node: E|A & B| / |A| over the cell's 2 * nodes edges (both cell types alike); an edge
    shared by both carries the same op with probability 1 / n_ops."""
    shared = 0.0
    for i in range(nodes):
        choices = list(combinations(range(i + 2), 2))
        shared += float(np.mean([len(set(a) & set(b)) for a in choices for b in choices]))
    edges = shared / (2 * nodes)
    return edges, edges / n_ops


def above_chance(observed: float, chance: float) -> float:
    """Cohen's-kappa-style agreement: (observed - chance) / (1 - chance); NaN where chance is 1 or observed NaN."""
    return float("nan") if not np.isfinite(observed) or chance >= 1 else (observed - chance) / (1 - chance)


def spread(per_repeat: Iterable[Sequence[float]]) -> float:
    """Mean over architectures of the coefficient of variation (population std / mean) over repeats; NaN with
    one repeat."""
    cvs = [float(np.std(v) / np.mean(v)) for v in per_repeat if len(v) > 1 and np.mean(v) != 0]
    return float(np.mean(cvs)) if cvs else float("nan")


def stability(genotypes: Mapping[tuple[str, str, int], list[Genotype]], df: pd.DataFrame,
              search_inner: Mapping[tuple[str, int], str], n_ops: int) -> pd.DataFrame:
    """Per (dataset, method, cells) of the grid: seeds, edge and op agreement across seeds with their chance levels
    (two random cells of the ``n_ops``-op space) and agreement above chance, and the spread over repeats of the
    study's scores of those cells (where the study scored them)."""
    edge_chance, op_chance = chance_agreement(n_ops)
    rows = []
    for (d, m, c), gs in genotypes.items():
        mine = df[(df["dataset"] == d) & (df["method"] == m) & (df["cells"] == c) & (df["origin"] == "grid")] \
            if len(df) else df
        inner = search_inner.get((d, c))
        edges, ops = agreement(gs, False), agreement(gs, True)
        rows.append({"dataset": d, "method": m, "cells": c, "seeds": len(gs),
                     "edge_agreement": edges, "edge_chance": edge_chance, "edge_kappa": above_chance(edges, edge_chance),
                     "op_agreement": ops, "op_chance": op_chance, "op_kappa": above_chance(ops, op_chance),
                     "kappa_cv": spread(mine[f"repeats_metantk_{inner}"]) if inner and len(mine) else float("nan"),
                     "regions_cv": spread(mine["repeats_regions"]) if len(mine) else float("nan")})
    return pd.DataFrame(rows)


def stability_table(st: pd.DataFrame) -> Table:
    groups = [("", 4), ("Edges", 3), ("Edges with op", 3), ("", 2)]
    columns = ["Dataset", "Method", "#Cells", "Seeds", "Agree", "Chance", "Above chance", "Agree", "Chance",
               "Above chance", "κ CV", "Regions CV"]
    rows = [[DATASET_TITLES.get(r.dataset, r.dataset), r.method, str(r.cells), str(r.seeds), _num(r.edge_agreement),
             _num(r.edge_chance), _num(r.edge_kappa), _num(r.op_agreement), _num(r.op_chance), _num(r.op_kappa),
             _num(r.kappa_cv), _num(r.regions_cv)] for r in st.itertuples()]
    notes = ["Agree: mean over pairs of seeds of the fraction of a searched genotype's edges (edges with their op) "
             "that the other seed's genotype has too (1 = the same cell every seed; -- : one seed).",
             "Chance: the same for two cells drawn uniformly from the search space (exact, by enumeration: node 0 "
             "always takes both inputs, so edges agree 13/18 by chance with 3 nodes). Above chance: (agree - chance) "
             "/ (1 - chance), as Cohen's κ: 0 = no more stable than chance, 1 = the same cell every seed.",
             "κ CV, Regions CV: mean over those cells of the population std / mean over search.repeats of the "
             "study's score (κ of the search's kernel; -- : one repeat, or the cells are not in the study)."]
    return Table(groups, columns, rows, [False] * len(rows), [], "Stability of the search across seeds, against "
                 "chance.", notes, source_column=False)


# ---------------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------------
METHOD_STYLE = {n: m.style for n, m in REGISTRY.items() if m.style}   # the searched methods' colours and markers


def scatter(df: pd.DataFrame, corr: pd.DataFrame, dataset: str, cells: int, score: str, shots: Sequence[int],
            path: Path) -> None:
    """Accuracy against ``score``, one panel per shot setting: random cells grey, the grid's cells by method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = df[(df["dataset"] == dataset) & (df["cells"] == cells)]
    fig, axes = plt.subplots(1, len(shots), figsize=(4.6 * len(shots), 3.8), squeeze=False)
    for ax, s in zip(axes[0], shots):
        sampled = g[g["origin"] == "sampled"]
        ax.scatter(sampled[score], sampled[f"acc_{s}shot"], c="0.55", s=22, label="random cells", zorder=2)
        for m, (colour, marker) in METHOD_STYLE.items():
            mine = g[(g["origin"] == "grid") & (g["method"] == m)]
            if len(mine):
                ax.scatter(mine[score], mine[f"acc_{s}shot"], c=colour, marker=marker, s=60, edgecolors="k",
                           linewidths=0.5, label=f"{m} (grid)", zorder=3)
        if score in LOG_SCALE and (g[score] > 0).all():
            ax.set_xscale("log")
        r = corr[(corr["dataset"] == dataset) & (corr["cells"] == cells) & (corr["score"] == score)
                 & (corr["shots"] == s)].iloc[0]
        ax.set_title(f"{s}-shot: τ = {Correlation.fmt(r['tau'], (r['tau_lo'], r['tau_hi']))}\n"
                     f"ρ = {Correlation.fmt(r['rho'], (r['rho_lo'], r['rho_hi']))}", fontsize=9)
        ax.set_xlabel(SCORE_TITLES[score])
        ax.set_ylabel(f"{s}-shot accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(f"{DATASET_TITLES.get(dataset, dataset)}, {cells} cells: {SCORE_TITLES[score]} vs accuracy "
                 f"(N = {int((g['origin'] == 'sampled').sum())} random cells; the grid's shown, not in τ, ρ)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
