"""The score-vs-accuracy study (docs/study.md): do the training-free scores predict few-shot accuracy?

Per (dataset, cells), over its architectures (N random cells plus the grid's searched cells): Kendall's tau-b and
Spearman's rho (scipy.stats) between each score and the mean test accuracy of the trained network, each with a
percentile bootstrap 95% CI over resamples of the architectures (one set of resamples per (dataset, cells),
shared by every score and shot setting, so that the scores' intervals are comparable).  Table 3 (tex, md, csv),
the stability of the grid's searches, and a scatter plot per score.
"""
from __future__ import annotations

import json
import warnings
import zlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..config import Run
from ..errors import PipelineError
from ..nas.genotype import CELL_TYPES, Genotype
from ..provenance import atomic_path
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
    """``count`` bootstrap resamples (rows of indices, drawn with replacement) of ``n`` architectures."""
    return np.random.default_rng([seed, *key]).integers(0, n, size=(count, n))


def correlation(x: Sequence[float], y: Sequence[float], boot: np.ndarray) -> Correlation:
    """tau-b and rho of (x, y) and their percentile 95% CIs over the resamples ``boot`` (rows of indices)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    tau, rho = _tau_rho(x, y)
    if len(boot) == 0:
        return Correlation(tau, (np.nan, np.nan), rho, (np.nan, np.nan), len(x))
    pairs = np.array([_tau_rho(x[i], y[i]) for i in boot])

    def ci(values: np.ndarray) -> tuple[float, float]:
        if np.isnan(values).all():
            return (np.nan, np.nan)
        lo, hi = np.nanpercentile(values, [2.5, 97.5])
        return (float(lo), float(hi))

    return Correlation(tau, ci(pairs[:, 0]), rho, ci(pairs[:, 1]), len(x))


def rank_sum(kappa: Sequence[float], regions: Sequence[float]) -> np.ndarray:
    """The search's combination for whole architectures: rank of kappa (low = good) + rank of -regions (many =
    good), average ranks for ties; low = predicted good."""
    return stats.rankdata(np.asarray(kappa, dtype=float)) + stats.rankdata(-np.asarray(regions, dtype=float))


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


def collect(results: Path, runs: Iterable[Run], accuracy_root: Path, shots: Sequence[int],
            sampled: set[Run], search_inner: Mapping[tuple[str, int], str]) -> pd.DataFrame:
    """One row per architecture: its run, origin (sampled | grid), scores, per-repeat values, accuracy per shot
    setting; ``rank_sum`` combines the kappa of the search's kernel for its (dataset, cells) with the regions."""
    rows = []
    for run in runs:
        sc = _read_json(results / run.path / "scores.json")
        few = _read_json(accuracy_root / run.path / "fewshot.json")["results"]
        row: dict[str, Any] = {"dataset": run.dataset, "cells": run.cells, "method": run.method, "seed": run.seed,
                               "origin": "sampled" if run in sampled else "grid", "genotype": sc["genotype_string"]}
        row |= {k: float(v) for k, v in sc["scores"].items()}
        row |= {f"repeats_{k}": list(v) for k, v in sc["repeats"].items()}
        for s in shots:
            if f"{s}shot" not in few:
                raise PipelineError(f"{accuracy_root / run.path / 'fewshot.json'}: no {s}-shot result")
            row[f"acc_{s}shot"] = float(few[f"{s}shot"]["mean"])
        rows.append(row)
    df = pd.DataFrame(rows)
    df["rank_sum"] = np.nan
    for (d, c), group in df.groupby(["dataset", "cells"], sort=False):
        kappa = group[f"metantk_{search_inner[(d, c)]}"]
        df.loc[group.index, "rank_sum"] = rank_sum(kappa, group["regions"])
    return df


def correlations(df: pd.DataFrame, shots: Sequence[int], count: int, seed: int) -> pd.DataFrame:
    rows = []
    for (d, c), group in df.groupby(["dataset", "cells"], sort=False):
        boot = resamples(len(group), count, seed, zlib.crc32(str(d).encode()), int(c))
        for score in SCORE_TITLES:
            for s in shots:
                r = correlation(group[score].to_numpy(), group[f"acc_{s}shot"].to_numpy(), boot)
                rows.append({"dataset": d, "cells": int(c), "score": score, "shots": s, "n": r.n,
                             "n_sampled": int((group["origin"] == "sampled").sum()), "tau": r.tau,
                             "tau_lo": r.tau_ci[0], "tau_hi": r.tau_ci[1], "rho": r.rho, "rho_lo": r.rho_ci[0],
                             "rho_hi": r.rho_ci[1], "expected_sign": EXPECTED_SIGN[score]})
    return pd.DataFrame(rows)


def table3(corr: pd.DataFrame, shots: Sequence[int], resamples_n: int, synthetic: bool) -> Table:
    groups = [("", 5)] + [(f"{s}-shot", 2) for s in shots]
    columns = ["Dataset", "#Cells", "Score", "Sign", "N"] + ["Kendall τ", "Spearman ρ"] * len(shots)
    rows = []
    for (d, c, score), g in corr.groupby(["dataset", "cells", "score"], sort=False):
        first = g.iloc[0]
        row: list[Any] = [DATASET_TITLES.get(d, d), str(c), SCORE_TITLES[score], EXPECTED_SIGN[score],
                          f"{first['n']} ({first['n_sampled']} random)"]
        for s in shots:
            r = g[g["shots"] == s].iloc[0]
            row += [Correlation.fmt(r["tau"], (r["tau_lo"], r["tau_hi"])),
                    Correlation.fmt(r["rho"], (r["rho_lo"], r["rho_hi"]))]
        rows.append(row)
    notes = ["Kendall τ-b and Spearman ρ (scipy.stats) between each training-free score and the mean test accuracy (%) "
             "of the trained network, over the N architectures of each (dataset, cells): random cells and the grid's "
             "searched cells.",
             f"[lo, hi]: percentile bootstrap 95% CI over {resamples_n} resamples of the architectures; -- : undefined "
             "(a constant score or accuracy).",
             "Sign: the sign expected if the score predicts accuracy as the search uses it (lower κ and rank sum, "
             "more linear regions). Rank sum: rank of the κ of the search's kernel plus rank of -#regions."]
    if synthetic:
        notes.append("Synthetic data: these correlations test the machinery and say nothing about mini-ImageNet.")
    return Table(groups, columns, rows, [False] * len(rows), [], "Score-vs-accuracy study: do the training-free "
                 "scores predict few-shot accuracy? (Table 3, beyond the paper.)", notes, source_column=False)


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


def spread(per_repeat: Iterable[Sequence[float]]) -> float:
    """Mean over architectures of the coefficient of variation (population std / mean) over repeats; NaN with
    one repeat."""
    cvs = [float(np.std(v) / np.mean(v)) for v in per_repeat if len(v) > 1 and np.mean(v) != 0]
    return float(np.mean(cvs)) if cvs else float("nan")


def stability(genotypes: Mapping[tuple[str, str, int], list[Genotype]], df: pd.DataFrame,
              search_inner: Mapping[tuple[str, int], str]) -> pd.DataFrame:
    """Per (dataset, method, cells) of the grid: seeds, edge and op agreement across seeds, and the spread over
    repeats of the study's scores of those cells (where the study scored them)."""
    rows = []
    for (d, m, c), gs in genotypes.items():
        mine = df[(df["dataset"] == d) & (df["method"] == m) & (df["cells"] == c) & (df["origin"] == "grid")] \
            if len(df) else df
        inner = search_inner.get((d, c))
        rows.append({"dataset": d, "method": m, "cells": c, "seeds": len(gs),
                     "edge_agreement": agreement(gs, False), "op_agreement": agreement(gs, True),
                     "kappa_cv": spread(mine[f"repeats_metantk_{inner}"]) if inner and len(mine) else float("nan"),
                     "regions_cv": spread(mine["repeats_regions"]) if len(mine) else float("nan")})
    return pd.DataFrame(rows)


def stability_table(st: pd.DataFrame) -> Table:
    columns = ["Dataset", "Method", "#Cells", "Seeds", "Edges agree", "Ops agree", "κ CV", "Regions CV"]

    def f(v: float) -> str:
        return "--" if not np.isfinite(v) else f"{v:.2f}"

    rows = [[DATASET_TITLES.get(r.dataset, r.dataset), r.method, str(r.cells), str(r.seeds), f(r.edge_agreement),
             f(r.op_agreement), f(r.kappa_cv), f(r.regions_cv)] for r in st.itertuples()]
    notes = ["Edges/Ops agree: mean over pairs of seeds of the fraction of a searched genotype's edges (edges with "
             "their op) that the other seed's genotype has too (1 = the same cell every seed; -- : one seed).",
             "κ CV, Regions CV: mean over those cells of the population std / mean over search.repeats of the "
             "study's score (κ of the search's kernel; -- : one repeat, or the cells are not in the study)."]
    return Table([("", len(columns))], columns, rows, [False] * len(rows), [], "Stability of the search across "
                 "seeds.", notes, source_column=False)


# ---------------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------------
METHOD_STYLE = {"metantk": ("tab:red", "*"), "tenas": ("tab:blue", "s"), "linreg": ("tab:green", "^"),
                "random": ("tab:purple", "D")}


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
                 f"(N = {len(g)})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
