"""The score-vs-accuracy study: statistics against hand-computed values, the analysis on fabricated score and
accuracy files, its LaTeX, the config and its errors, the scores against an independent kernel, and (integration)
the study DAG end to end on the tiny config and its dry run on the smoke config."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metantk_nas.config import OPERATIONAL_PARAMS, STAGE_PARAMS, RecordingMapping, Run, budget_recipe, load_config, study_runs, train_config
from metantk_nas.errors import ConfigError, PipelineError
from metantk_nas.nas.genotype import Genotype
from metantk_nas.report.study import (above_chance, agreement, chance_agreement, collect, correlation, correlations,
                                      distinct, percentile, rank_sum, resamples, searched, searched_table, spread,
                                      stability, stability_table, table3)

from helpers import ROOT, compile_latex

SMOKE = [ROOT / "config/config.yaml", ROOT / "config/smoke.yaml"]
TINY = [ROOT / "config/config.yaml", ROOT / "tests/configs/tiny.yaml"]


# ---------------------------------------------------------------------------------------------------------------
# statistics against hand computations
# ---------------------------------------------------------------------------------------------------------------
def test_tau_and_rho_match_a_hand_count():
    # x = 1..5, y = 1 3 2 5 4: of the 10 pairs, (2,3) and (4,5) are discordant, 8 concordant -> tau = (8-2)/10.
    # rank differences 0 1 1 1 1 -> sum d^2 = 4 -> rho = 1 - 6*4 / (5*(25-1)) = 0.8
    r = correlation([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], np.zeros((0, 5), dtype=int))
    assert r.tau == pytest.approx(0.6) and r.rho == pytest.approx(0.8) and r.n == 5
    assert np.isnan(r.tau_ci).all()   # no resamples: no interval
    # ties: x = 1 1 2 3, y = 1 2 3 4. pairs: 5 concordant, 1 tied in x only -> tau-b = 5 / sqrt(6 * 5)
    assert correlation([1, 1, 2, 3], [1, 2, 3, 4], np.zeros((0, 4), dtype=int)).tau == pytest.approx(5 / np.sqrt(30))


def test_perfectly_anticorrelated_scores_give_minus_one_and_a_degenerate_interval():
    x = np.arange(12.0)
    boot = resamples(12, 200, 0, 1)
    r = correlation(x, 50 - 3 * x, boot)
    assert r.tau == pytest.approx(-1) and r.rho == pytest.approx(-1)
    # every resample of a monotone decreasing relation is itself decreasing (duplicates tie in x and y together)
    assert r.tau_ci == pytest.approx((-1, -1)) and r.rho_ci == pytest.approx((-1, -1))


def test_bootstrap_interval_is_the_percentiles_of_the_resampled_statistic():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(5)
    x = rng.normal(size=20)
    y = x + rng.normal(size=20)
    boot = resamples(20, 300, 7, 3)
    r = correlation(x, y, boot)
    taus = [kendalltau(x[i], y[i]).statistic for i in boot]
    assert r.tau_ci == pytest.approx(tuple(np.nanpercentile(taus, [2.5, 97.5])))
    assert r.tau_ci[0] < r.tau < r.tau_ci[1]
    assert (resamples(20, 300, 7, 3) == boot).all() and not (resamples(20, 300, 8, 3) == boot).all()


def test_constant_score_has_no_correlation():
    r = correlation([2.0] * 6, [1, 2, 3, 4, 5, 6], resamples(6, 20, 0))
    assert np.isnan(r.tau) and np.isnan(r.rho)


def test_rank_sum_is_the_searchs_dense_rank_of_kappa_plus_that_of_minus_regions():
    # kappa 3 1 2 -> ascending dense ranks 2 0 1; regions 10 30 20 -> descending 2 0 1; sum 4 0 2
    assert rank_sum([3.0, 1.0, 2.0], [10, 30, 20]).tolist() == [4, 0, 2]
    # ties share a dense rank: kappa 1 1 4 -> 0 0 1; regions 5 5 9 -> 1 1 0; sum 1 1 1
    assert rank_sum([1.0, 1.0, 4.0], [5, 5, 9]).tolist() == [1, 1, 1]
    # the search's quirk: sorted by 3 significant figures (1000.4 and 1000.1 both 1.00e3: kept in their order),
    # ranked by exact value (different: ranks 0, 1), so 1000.4 ranks before 1000.1 where a raw sort would swap them
    assert rank_sum([1000.4, 1000.1, 2000.0], [1, 1, 1]).tolist() == [0, 1, 2]


def test_rank_sum_is_recomputed_inside_every_resample():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(2)
    kappa, regions = rng.permutation(12) + 1.0, rng.permutation(12) * 10.0
    acc = rng.normal(size=12)
    boot = resamples(12, 50, 1)
    r = correlation(np.column_stack([kappa, regions]), acc, boot, lambda xy: rank_sum(xy[:, 0], xy[:, 1]))
    # by hand per resample: ranks among the resample's own rows (a duplicate row ties with its copy)
    taus = []
    for i in boot:
        k, g = kappa[i], regions[i]
        rk = np.searchsorted(np.unique(k), k)                 # dense ascending
        rr = np.searchsorted(np.unique(-g), -g)               # dense, most regions first
        taus.append(kendalltau(rk + rr, acc[i]).statistic)
    assert r.tau_ci == pytest.approx(tuple(np.nanpercentile(taus, [2.5, 97.5])))


# ---------------------------------------------------------------------------------------------------------------
# stability
# ---------------------------------------------------------------------------------------------------------------
A = Genotype.make([[("sep_conv_3x3", 0), ("conv_3x3", 1)], [("max_pool_3x3", 0), ("conv_3x3", 2)],
                   [("skip_connect", 1), ("conv_3x3", 3)]],
                  [[("sep_conv_3x3", 0), ("conv_3x3", 1)], [("max_pool_3x3", 0), ("conv_3x3", 2)],
                   [("skip_connect", 1), ("conv_3x3", 3)]])
# B: normal node 0 has another op on edge 0 (same edge), reduce node 2 takes input 0 instead of 1 (another edge)
B = Genotype.make([[("dil_conv_3x3", 0), ("conv_3x3", 1)], [("max_pool_3x3", 0), ("conv_3x3", 2)],
                   [("skip_connect", 1), ("conv_3x3", 3)]],
                  [[("sep_conv_3x3", 0), ("conv_3x3", 1)], [("max_pool_3x3", 0), ("conv_3x3", 2)],
                   [("skip_connect", 0), ("conv_3x3", 3)]])


def test_agreement_counts_shared_edges_and_ops_by_hand():
    # 12 edges each. Edges: B lacks (reduce, 2, 1) -> 11/12. Ops: B also lacks (normal, 0, 0, sep_conv) -> 10/12
    assert agreement([A, B], with_ops=False) == pytest.approx(11 / 12)
    assert agreement([A, B], with_ops=True) == pytest.approx(10 / 12)
    # three seeds: pairs (A,A)=1, (A,B), (A,B) -> mean
    assert agreement([A, A, B], with_ops=True) == pytest.approx((1 + 10 / 12 + 10 / 12) / 3)
    assert np.isnan(agreement([A], with_ops=True))


def test_spread_is_the_mean_coefficient_of_variation_over_repeats():
    # [1, 3]: mean 2, population std 1 -> 0.5; [4, 4]: 0 -> mean 0.25; one repeat has no spread
    assert spread([[1, 3], [4, 4]]) == pytest.approx(0.25)
    assert np.isnan(spread([[7.0]]))


def test_stability_table_rows(tmp_path):
    import pandas as pd

    df = pd.DataFrame([{"dataset": "mini", "method": "metantk", "cells": 5, "origin": "grid",
                        "repeats_metantk_maml": [1.0, 3.0], "repeats_regions": [10.0, 10.0]}])
    st = stability({("mini", "metantk", 5): [A, B], ("mini", "tenas", 5): [A]}, df, {("mini", 5): "maml"}, n_ops=7)
    rows = stability_table(st).frame()
    # edges 11/12 against chance 13/18: (11/12 - 13/18) / (5/18) = 0.70; ops 10/12 against 13/126:
    # (10/12 - 13/126) / (113/126) = 0.814
    assert rows.iloc[0].tolist() == ["mini-ImageNet", "metantk", "5", "2", "0.92", "0.72", "0.70", "0.83", "0.10",
                                     "0.81", "0.50", "0.00"]
    assert rows.iloc[1].tolist() == ["mini-ImageNet", "tenas", "5", "1", "--", "0.72", "--", "--", "0.10", "--",
                                     "--", "--"]


def test_chance_agreement_by_hand_and_by_drawing_random_cells():
    """Two uniform cells: node 0 has inputs {0, 1} and takes both, so it always agrees (2 of 2 edges); node 1
    picks 2 of 3 inputs: the same pair (1/3) shares 2 edges, another pair shares 1 -> E = 2/3 * ... = 4/3; node 2
    picks 2 of 4: the same pair (1/6) shares 2, the complementary pair (1/6) 0, the other four 1 -> E = 1.
    Edges: (2 + 4/3 + 1) / 6 = 13/18; with ops, each shared edge also needs the same of n ops: 13/18/n."""
    from metantk_nas.nas.genotype import random_genotype

    assert chance_agreement(7) == pytest.approx((13 / 18, 13 / 126))
    assert chance_agreement(2) == pytest.approx((13 / 18, 13 / 36))
    # the generator itself: 1000 independent pairs of random cells of a 2-op space (sd of the mean < 0.005)
    ops = ("sep_conv_3x3", "max_pool_3x3")
    pairs = [(random_genotype(2 * i, 5, ops), random_genotype(2 * i + 1, 5, ops)) for i in range(1000)]
    assert np.mean([agreement(p, False) for p in pairs]) == pytest.approx(13 / 18, abs=0.02)
    assert np.mean([agreement(p, True) for p in pairs]) == pytest.approx(13 / 36, abs=0.02)
    assert above_chance(13 / 18, 13 / 18) == 0 and above_chance(1.0, 13 / 18) == 1
    assert np.isnan(above_chance(1.0, 1.0))


# ---------------------------------------------------------------------------------------------------------------
# the analysis on fabricated files
# ---------------------------------------------------------------------------------------------------------------
def fabricate(results: Path, runs: list[Run], kappa, regions, acc1, acc5, repeats=2, genotypes=None, invalid=None):
    """scores.json and fewshot.json per run; the genotype of run i is random_genotype(1000 + i) unless given."""
    from metantk_nas.nas.genotype import random_genotype

    genotypes = genotypes or [random_genotype(1000 + i, 5) for i in range(len(runs))]
    for i, (run, k, r, a1, a5) in enumerate(zip(runs, kappa, regions, acc1, acc5)):
        d = results / run.path
        d.mkdir(parents=True, exist_ok=True)
        scores = {"metantk_maml": k, "metantk_anil": 2 * k, "ntk": k + 1, "regions": r, "params": 1000.0 + r}
        bad = (invalid or {}).get(i, {})
        scores |= {n: None for n in bad}
        (d / "scores.json").write_text(json.dumps({
            "genotype_string": genotypes[i].to_darts(), "scores": scores, "invalid": bad,
            "repeats": {n: [v] * repeats if v is not None else [1e5] * repeats for n, v in scores.items()
                        if n != "params"}}))
        (d / "fewshot.json").write_text(json.dumps({"results": {"1shot": {"mean": a1}, "5shot": {"mean": a5}}}))


def test_analysis_of_fabricated_scores_gives_the_hand_computed_table(tmp_path):
    """Six random runs of five distinct cells (run 5 trains run 2's cell again, its pairs written in another order)
    and three searched runs whose cells have the lowest kappa and the best accuracy (metantk found one cell twice).
    Over the random sample only, kappa 1..5 against 1-shot 1 3 2 5 4 (run 2's cell: the mean of 1 and 3) gives
    tau 0.6 and rho 0.8 by hand (test_tau_and_rho_match_a_hand_count); the pool with the searched cells, as the
    study computed it before, is pulled the other way by the cells chosen on the score."""
    import pandas as pd
    from scipy.stats import kendalltau

    from metantk_nas.nas.genotype import random_genotype

    rand = [Run("mini", "random", 5, 100 + i) for i in range(6)]
    grid = [Run("mini", "metantk", 5, 0), Run("mini", "metantk", 5, 1), Run("mini", "tenas", 5, 0)]
    cells = [random_genotype(1000 + i, 5) for i in range(5)]
    swapped = Genotype(tuple(tuple(reversed(n)) for n in cells[2].normal), cells[2].normal_concat,
                       tuple(tuple(reversed(n)) for n in cells[2].reduce), cells[2].reduce_concat)
    assert swapped.to_darts() != cells[2].to_darts() and len({c.to_darts() for c in cells}) == 5
    found = [random_genotype(7, 5), random_genotype(7, 5), random_genotype(8, 5)]
    fabricate(tmp_path, rand + grid, [1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 0.5, 0.5, 0.7], [50, 40, 30, 20, 10, 30, 60, 60, 55],
              [1, 3, 1, 5, 4, 3, 90, 80, 70], [9, 8, 7, 6, 5, 7, 99, 97, 95], genotypes=cells + [swapped] + found,
              invalid={4: {"metantk_anil": 2}})
    df = collect(tmp_path, rand + grid, tmp_path, (1, 5), set(rand))
    assert df["origin"].tolist() == ["sampled"] * 6 + ["grid"] * 3
    arch = distinct(df, (1, 5))
    sample = arch[arch["origin"] == "sampled"]
    assert len(sample) == 5 and sample["runs"].tolist() == [1, 1, 2, 1, 1]
    assert sample["acc_1shot"].tolist() == [1, 3, 2, 5, 4]
    assert arch[arch["origin"] == "grid"][["method", "runs", "acc_1shot"]].values.tolist() == [
        ["metantk", 2, 85.0], ["tenas", 1, 70.0]]
    inner = {("mini", 5): "maml"}
    corr = correlations(arch, (1, 5), 100, 0, inner)
    get = lambda score, s: corr[(corr.score == score) & (corr.shots == s)].iloc[0]   # noqa: E731
    assert get("metantk_maml", 1).tau == pytest.approx(0.6) and get("metantk_maml", 1).rho == pytest.approx(0.8)
    assert get("metantk_maml", 1).n == 5 and get("metantk_maml", 1).runs == 6
    assert get("metantk_maml", 5).tau == pytest.approx(-1.0)
    assert get("regions", 1).tau == pytest.approx(-0.6)    # regions decrease in kappa: the opposite sign
    assert get("rank_sum", 1).tau == pytest.approx(0.6)    # dense ranks 0..4 + 0..4: orders like kappa
    # the ANIL kappa of cell 4 had no valid repeat: excluded and counted; 1 2 3 4 against 1 3 2 5 -> tau 4/6
    assert get("metantk_anil", 1).n == 4 and get("metantk_anil", 1).excluded == 1
    assert get("metantk_anil", 1).tau == pytest.approx(4 / 6)
    pooled = kendalltau([1, 2, 3, 4, 5, 0.5, 0.7], [1, 3, 2, 5, 4, 85, 70]).statistic
    assert pooled < 0 < get("metantk_maml", 1).tau   # the selection on kappa turns the sign
    t = table3(corr, (1, 5), 100, synthetic=False)
    frame = t.frame()
    row = frame.iloc[0].tolist()
    assert row[:5] == ["mini-ImageNet", "5", "MetaNTK κ (MAML)", "-", "5 (6 runs)"]
    assert row[5].startswith("0.60 [") and row[6].startswith("0.80 [") and row[7] == "-1.00 [-1.00, -1.00]"
    assert frame.iloc[1].tolist()[4] == "4 (5 runs); 1 of 5 excluded"
    assert "24 intervals" in t.markdown()   # 6 scores x 2 shot settings x (tau, rho)
    assert "say nothing about mini-ImageNet" not in t.markdown()
    assert "say nothing about mini-ImageNet" in table3(corr, (1, 5), 100, synthetic=True).markdown()
    # Table 3b: the searched cells have the lowest kappa, most regions and best accuracy of all: percentile 100
    sd = searched(arch, (1, 5), inner)
    assert sd[["method", "runs", "kappa", "kappa_pct", "regions_pct", "acc_1shot", "acc_1shot_pct"]].values.tolist() \
        == [["metantk", 2, 0.5, 100.0, 100.0, 85.0, 100.0], ["tenas", 1, 0.7, 100.0, 100.0, 70.0, 100.0]]
    assert percentile(np.array([1.0, 2.0, 3.0, 4.0]), 2.5, higher_is_better=False) == 50.0   # as good as 3, 4
    assert percentile(np.array([1.0, 2.0, 3.0, 4.0]), 2.0, higher_is_better=True) == 50.0    # at least 1, 2
    assert searched_table(sd, (1, 5)).frame().iloc[0].tolist()[:4] == ["mini-ImageNet", "5", "metantk", "2"]
    assert isinstance(arch, pd.DataFrame)


def test_missing_or_corrupt_inputs_name_the_file(tmp_path):
    runs = [Run("mini", "random", 5, 0), Run("mini", "random", 5, 1)]
    fabricate(tmp_path, runs, [1.0, 2.0], [1, 2], [1, 2], [1, 2])
    (tmp_path / runs[1].path / "fewshot.json").write_text("{not json")
    with pytest.raises(PipelineError, match=r"seed1/fewshot.json: not valid JSON"):
        collect(tmp_path, runs, tmp_path, (1, 5), set())
    (tmp_path / runs[0].path / "scores.json").unlink()
    with pytest.raises(PipelineError, match=r"seed0/scores.json: missing"):
        collect(tmp_path, runs, tmp_path, (1, 5), set())


def test_study_tables_compile_with_pdflatex(tmp_path):
    import pandas as pd

    runs = [Run("synthetic", "random", 8, i) for i in range(6)]
    fabricate(tmp_path, runs, [3.0, 1.0, 2.0, 6.0, 5.0, 4.0], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
    df = collect(tmp_path, runs, tmp_path, (1, 5), set(runs[:5]))
    arch = distinct(df, (1, 5))
    inner = {("synthetic", 8): "anil"}
    corr = correlations(arch, (1, 5), 50, 0, inner)
    st = stability({("synthetic", "metantk", 8): [A, B]}, pd.DataFrame(columns=df.columns), inner, 7)
    compile_latex(tmp_path, {"t3": table3(corr, (1, 5), 50, synthetic=True),
                             "t3b": searched_table(searched(arch, (1, 5), inner), (1, 5)), "st": stability_table(st)})


# ---------------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------------
def test_smoke_study_has_twelve_random_cells_and_the_grids_searched_cells():
    runs = study_runs(load_config(SMOKE))
    assert [r.seed for r in runs[:12]] == list(range(100, 112)) and {r.method for r in runs[:12]} == {"random"}
    assert sorted((r.method, r.seed) for r in runs[12:]) == sorted(
        (m, s) for m in ("metantk", "tenas", "linreg", "random") for s in (0, 1))
    assert {(r.dataset, r.cells) for r in runs} == {("synthetic", 5)}


def test_study_runs_do_not_repeat_a_grid_run(tmp_path):
    cfg = load_config(SMOKE)
    cfg["study"]["first_seed"] = 0   # random seeds 0, 1 are also the grid's random runs
    runs = study_runs(cfg)
    assert len(runs) == len(set(runs)) == 12 + 6


def test_a_budget_scales_epochs_and_milestones():
    # mini: 100 epochs, steps after 60 and 80; x 0.2 -> 20 epochs, steps after 12 and 16
    r = budget_recipe({"epochs": 100, "decay_epochs": [60, 80], "lr": 0.02}, 0.2)
    assert (r["epochs"], r["decay_epochs"], r["lr"]) == (20, [12, 16], 0.02)
    assert budget_recipe({"epochs": 2, "decay_epochs": [1]}, 0.1) == {"epochs": 1, "decay_epochs": [1]}
    cfg = load_config([ROOT / "config/config.yaml"])
    assert train_config(cfg, "mini", 5, 0, "short").epochs == 20
    assert train_config(cfg, "mini", 5, 0).epochs == 100


@pytest.mark.parametrize("override, message", [
    ("study: {recipe: long}", "config: study.recipe: expected 'full' or a key of study.budgets (short), got 'long'"),
    ("study: {datasets: [cifar]}", "config: study.datasets: dataset 'cifar' is not defined under data.datasets"),
    ("study: {cells: [6]}", "config: study.cells: train.recipes of 'mini' has no batch_size for 6 cells"),
    ("study: {architectures: 0}", "config: study.architectures: expected a value >= 2, got 0"),
    ("study: {budgets: {full: {fraction: 0.5}}}", "config: study.budgets: the name 'full' is reserved"),
    ("study: {budgets: {short: {fraction: 2}}}", "config: study.budgets.short.fraction: expected a value <= 1, got 2"),
])
def test_bad_study_config_is_one_line(tmp_path, override, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override + "\n")
    with pytest.raises(ConfigError) as e:
        load_config([ROOT / "config/config.yaml", bad])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# the scores against an independent computation
# ---------------------------------------------------------------------------------------------------------------
def test_each_metantk_score_takes_its_own_kernel_settings():
    """mini's search kernels (config/config.yaml): 5 cells MAML (t = inf, r = 1e-3), 8 cells ANIL (t = 1, r = 1e-5).
    The score with the search's inner is the search's entry; the other takes study.kernels.<inner> (t = inf,
    r = 1e-3), never the other kernel's t and r (the MAML score at 8 cells used to run with t = 1, r = 1e-5)."""
    import math

    from metantk_nas.config import KernelSpec, study_kernel_spec

    cfg = load_config([ROOT / "config/config.yaml"])
    assert study_kernel_spec(cfg, "mini", 5, "maml") == KernelSpec("maml", math.inf, 1e-3)
    assert study_kernel_spec(cfg, "mini", 8, "anil") == KernelSpec("anil", 1.0, 1e-5)
    assert study_kernel_spec(cfg, "mini", 8, "maml") == KernelSpec("maml", math.inf, 1e-3)
    cfg["study"]["kernels"]["anil"] = {"inner_time": 2.0, "reg": 0.5}
    assert study_kernel_spec(cfg, "mini", 5, "anil") == KernelSpec("anil", 2.0, 0.5)
    assert study_kernel_spec(cfg, "mini", 8, "anil") == KernelSpec("anil", 1.0, 1e-5)


def _tiny_study_config(repeats: int) -> dict:
    """The tiny config with a dataset named "tiny" (the tiny_prepared fixture's) and ``repeats`` repeats."""
    cfg = load_config(TINY)
    cfg["data"]["datasets"]["tiny"] = cfg["data"]["datasets"]["synthetic"]
    cfg["search"]["kernels"]["tiny"] = cfg["search"]["kernels"]["synthetic"]
    cfg["search"]["repeats"] = repeats
    return cfg


@pytest.mark.parametrize("fresh_batch", [True, False])
def test_study_scores_are_the_searchs_own_candidate_scores(tiny_prepared, monkeypatch, fresh_batch):
    """Each study score, repeat by repeat, is the condition number (region count) the search's own code path gives
    that network as a candidate: PruningSearch._scores in round STUDY_KEY with candidate key architecture_key, for
    MetaNTK MAML, MetaNTK ANIL, the NTK (tenas) and the regions, whether the search draws a batch per candidate or
    shares one per round.  One by one (batch_candidates false, the default), whose values are bitwise the search's."""
    import dataclasses

    from metantk_nas.config import search_config, study_kernel_spec
    from metantk_nas.data.prepared import load_split
    from metantk_nas.nas.genotype import random_genotype
    from metantk_nas.nas.networks import full_mask
    from metantk_nas.search import arch_scores
    from metantk_nas.search.pruning import PruningSearch
    from metantk_nas.search.scoring import Scorer

    cfg = _tiny_study_config(repeats=2)
    cfg["search"]["fidelity"]["fresh_batch_per_candidate"] = fresh_batch
    cfg["search"]["batch_candidates"] = False
    train, cpu = load_split(tiny_prepared, "train"), torch.device("cpu")
    genotype = random_genotype(4, 5)
    mask = genotype.to_mask()
    study = arch_scores.score_architecture(cfg, "tiny", 5, genotype, train, cpu)["repeats"]

    seen: list[tuple[str, np.ndarray, float]] = []
    kernel_condition, regions = Scorer.kernel_condition, Scorer.regions

    def record(kind, fn):
        def wrapped(self, m, *args):
            value = fn(self, m, *args)
            seen.append((kind, m.copy(), value))
            return value
        return wrapped

    monkeypatch.setattr(Scorer, "kernel_condition", record("kernel", kernel_condition))
    monkeypatch.setattr(Scorer, "regions", record("regions", regions))
    origin, key = full_mask(), (arch_scores.STUDY_KEY, arch_scores.architecture_key(mask))
    for name, (method, inner) in arch_scores.KERNEL_SCORES.items():
        sc = search_config(cfg, "tiny", method, 5, 0)
        if inner is not None:
            sc = dataclasses.replace(sc, kernel=study_kernel_spec(cfg, "tiny", 5, inner))
        search = PruningSearch(sc, Scorer(sc, train, cpu), progress=False)
        search.scorer.reinit_kernel_net(arch_scores.STUDY_KEY)   # what prune_round does in its round
        seen.clear()
        search._scores(origin, origin, mask, key, search._shared(origin, arch_scores.STUDY_KEY))
        assert [v for kind, m, v in seen if kind == "kernel" and np.array_equal(m, mask)] == study[name], name
        searched_regions = [v for kind, m, v in seen if kind == "regions" and np.array_equal(m, mask)]
        assert [float(v) for v in searched_regions] == study["regions"]
        assert len(study[name]) == 2 and len(set(study[name])) == 2   # the repeats draw their own batches or heads


def test_one_genotype_gets_one_set_of_draws_and_two_genotypes_two():
    """architecture_key reads the mask only: a genotype found by two seeds (the edges of a node in either order) is
    scored once, and distinct genotypes get keys above the search's own (candidate indices, SHARED_KEY)."""
    import dataclasses

    from metantk_nas.nas.genotype import random_genotype
    from metantk_nas.search.arch_scores import architecture_key
    from metantk_nas.search.pruning import SHARED_KEY

    g = random_genotype(5, 5)
    swapped = dataclasses.replace(g, normal=tuple((b, a) for a, b in g.normal))
    assert architecture_key(swapped.to_mask()) == architecture_key(g.to_mask())
    keys = {architecture_key(random_genotype(s, 5).to_mask()) for s in range(200)}
    assert len(keys) == len({random_genotype(s, 5).to_darts() for s in range(200)})
    assert min(keys) > SHARED_KEY


def test_invalid_condition_numbers_are_left_out_and_counted(tiny_prepared, monkeypatch):
    """A kernel score is the mean over its valid repeats: a non-positive-definite kernel (lambda_min < 0 gives a
    negative ratio), the NaN sentinel and +-inf (mapped to the largest float) are left out and counted; a score
    with no valid repeat is null."""
    from metantk_nas.data.prepared import load_split
    from metantk_nas.kernels.metantk import condition_number, valid_condition
    from metantk_nas.nas.genotype import random_genotype
    from metantk_nas.search import arch_scores

    assert condition_number(torch.diag(torch.tensor([4.0, 1.0]))) == 4.0 and valid_condition(4.0)
    assert condition_number(torch.diag(torch.tensor([2.0, -1.0]))) == -2.0 and not valid_condition(-2.0)
    for bad in (1e5, float("inf"), float("nan"), np.finfo(np.float64).max, 0.5, -1.0):
        assert not valid_condition(bad)
    values = {"metantk_maml": [12.0, 1e5, -2.0], "metantk_anil": [1e5, np.finfo(np.float64).max, 1e5],
              "ntk": [3.0, 5.0, 7.0]}
    monkeypatch.setattr(arch_scores, "kernel_conditions",
                        lambda scorer, mask: values["ntk" if scorer.cfg.method == "tenas" else
                                                    f"metantk_{scorer.cfg.kernel.inner}"])
    monkeypatch.setattr(arch_scores, "region_counts", lambda scorer, mask: [10, 20, 30])
    cfg = _tiny_study_config(repeats=3)
    out = arch_scores.score_architecture(cfg, "tiny", 5, random_genotype(3, 5), load_split(tiny_prepared, "train"),
                                         torch.device("cpu"))
    assert out["scores"]["metantk_maml"] == 12.0 and out["scores"]["metantk_anil"] is None
    assert out["scores"]["ntk"] == 5.0 and out["scores"]["regions"] == 20.0
    assert out["invalid"] == {"metantk_maml": 2, "metantk_anil": 3, "ntk": 0, "regions": 0}


def test_scores_match_an_autograd_loop_and_a_direct_parameter_count(tiny_prepared):
    from metantk_nas.data.prepared import load_split
    from metantk_nas.nas.genotype import random_genotype
    from metantk_nas.nas.networks import EvalNet, LogitsNet
    from metantk_nas.search import arch_scores

    cfg = _tiny_study_config(repeats=2)
    cfg["search"]["fidelity"]["fresh_batch_per_candidate"] = True   # each architecture its own images
    train = load_split(tiny_prepared, "train")
    g = random_genotype(3, 5)
    read: set[str] = set()
    out = arch_scores.score_architecture(RecordingMapping(cfg, read), "tiny", 5, g, train, torch.device("cpu"))
    # every config key the scoring reads is a declared result key (a change to it reruns study_score) or an
    # operational one (tests/test_stage_params.py runs the whole stage)
    declared = (*STAGE_PARAMS["study_score"], *OPERATIONAL_PARAMS["study_score"])
    assert read and all(any(k == p or k.startswith(p + ".") for p in declared) for k in read), sorted(read)
    assert "train.channels" in read
    assert set(out["scores"]) == {"metantk_maml", "metantk_anil", "ntk", "regions", "params"}
    assert out["invalid"] == {"metantk_maml": 0, "metantk_anil": 0, "ntk": 0, "regions": 0}
    assert all(len(v) == 2 for v in out["repeats"].values())
    # NTK: per-sample gradients of the summed logits by a plain autograd loop over the kernel's parameters
    scorer = arch_scores._scorer(cfg, "tiny", 5, "tenas", None, train, torch.device("cpu"))
    mask = g.to_mask()
    net = LogitsNet(scorer.kernel_net, mask)
    names = [n for n, idx in scorer._structure(net)[0] if idx is None or mask[idx]]
    params = dict(net.named_parameters())
    for r in range(2):
        x = scorer.kernel_inputs(arch_scores.STUDY_KEY, arch_scores.architecture_key(mask), r)
        rows = []
        for i in range(len(x)):
            gr = torch.autograd.grad(net(x[i:i + 1]).sum(), [params[n] for n in names], allow_unused=True)
            rows.append(torch.cat([(z if z is not None else torch.zeros_like(params[n])).reshape(-1)
                                   for z, n in zip(gr, names)]).double())
        j = torch.stack(rows)
        eig = np.linalg.eigvalsh((j @ j.T).numpy())
        assert out["repeats"]["ntk"][r] == pytest.approx(eig[-1] / eig[0], rel=1e-3)
    n_classes = train.n_classes
    direct = sum(p.numel() for p in EvalNet(g, cfg["train"]["channels"], 5, n_classes).parameters())
    assert out["scores"]["params"] == direct


# ---------------------------------------------------------------------------------------------------------------
# integration
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_smoke_study_dry_run_reuses_the_grids_runs(tmp_path):
    from helpers import copy_tree, snakemake

    proc = snakemake("-n", "study", "--cores", "1", "--configfile", "config/smoke.yaml", cwd=copy_tree(tmp_path))
    import re

    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    # 20 architectures: 12 random cells (searched as random runs) + the 8 searched 5-cell runs of the grid
    assert counts["study_score"] == counts["train"] == counts["evaluate"] == "20"
    # searches: the 12 random cells and all 16 of the grid's (the stability table reads the 8-cell genotypes too)
    assert counts["search"] == counts["export_genotype"] == "28"
    assert "study_train" not in counts and "study_evaluate" not in counts and counts["study"] == "1"
