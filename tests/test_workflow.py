"""Integration: the Snakemake DAG end to end on the tiny config, the provenance audit, and DVC."""
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PY, ROOT, require, run_script

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TREE = ["Snakefile", "workflow", "config", "scripts", "tests/configs", "dvc.yaml"]


def _copy_tree(dest: Path) -> Path:
    for name in TREE:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def snakemake(*args, cwd=ROOT, check=True):
    proc = subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


@pytest.mark.parametrize("configs", [[], ["--configfile", "config/smoke.yaml"]])
def test_dry_run_lists_the_grid(configs, tmp_path):
    proc = snakemake("-n", "--cores", "1", *configs, cwd=_copy_tree(tmp_path))
    n_runs = 42 if not configs else 20
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert counts["train"] == counts["evaluate"] == str(n_runs)
    assert counts["prepare_data"] == ("2" if not configs else "1")


def test_bad_config_stops_snakemake_with_one_line(tmp_path):
    wd = _copy_tree(tmp_path)
    (wd / "bad.yaml").write_text("search: {repeats: 0}\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=wd, check=False)
    assert proc.returncode != 0 and "config: search.repeats: expected a value >= 1, got 0" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    wd = _copy_tree(tmp_path_factory.mktemp("wf"))
    snakemake("--cores", "2", "--configfile", "tests/configs/tiny.yaml", cwd=wd)
    return wd


def _dirty() -> bool:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                         text=True).stdout
    return bool(out.strip())


def audit(wd, target, *extra):
    flags = ["--allow-dirty"] if _dirty() else []
    return run_script(ROOT / "scripts/audit.py", target, "--quiet", *flags, *extra, cwd=wd, check=False)


def test_whole_dag_produces_the_tables(tiny_run):
    tables = tiny_run / "results/tiny/tables"
    for f in ("table1.tex", "table2.tex", "table1.md", "table2.csv", "comparison.md"):
        assert (tables / f).stat().st_size > 0
    tex = (tables / "table2.tex").read_text()
    assert "\\toprule" in tex and "MetaNTK-NAS" in tex
    few = json.loads((tiny_run / "results/tiny/synthetic/metantk/cells5/seed0/fewshot.json").read_text())
    for shots in (1, 5):      # the stage's summary keys are its per-episode accuracies' mean, in %
        per = few["results"][f"{shots}shot"]["per_episode"]
        assert len(per) == 10 and few[f"acc_{shots}shot"] == pytest.approx(100 * sum(per) / len(per), abs=1e-3)


def test_audit_passes_from_the_table_to_the_raw_data(tiny_run):
    proc = audit(tiny_run, "results/tiny/tables/table1.tex")
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    if _dirty():  # without --allow-dirty the audit must refuse artifacts of uncommitted code
        strict = run_script(ROOT / "scripts/audit.py", "results/tiny/tables/table1.tex", "--quiet", cwd=tiny_run, check=False)
        assert strict.returncode == 1 and "uncommitted code" in strict.stderr


@pytest.mark.parametrize("victim", ["data/prepared-tiny/synthetic/test_images.npy",
                                    "results/tiny/synthetic/metantk/cells5/seed0/genotype.json",
                                    "results/tiny/synthetic/linreg/cells5/seed0/model.pt"])
def test_audit_names_a_tampered_file(tiny_run, tmp_path, victim):
    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    with open(wd / victim, "ab") as f:
        f.write(b"\0tampered")
    proc = audit(wd, "results/tiny/tables/table1.tex")
    assert proc.returncode == 1
    named = {line.split(":")[1].strip() for line in proc.stderr.splitlines() if line.startswith("audit:")}
    assert named == {victim}, proc.stderr


def test_second_snakemake_run_is_a_no_op(tiny_run):
    proc = snakemake("-n", "--cores", "1", "--configfile", "tests/configs/tiny.yaml", cwd=tiny_run)
    assert "Nothing to be done" in proc.stdout + proc.stderr


ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def dvc(wd, *args, check=True):
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=wd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)}: " + proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def ran_stages(proc) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout))


def _dvc_repo(dest: Path) -> Path:
    """A fresh git + DVC repository holding the pipeline, with dvc.yaml generated for the tiny config."""
    dest.mkdir(parents=True, exist_ok=True)
    wd = _copy_tree(dest)
    shutil.copytree(ROOT / "src", wd / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q",
                                          "--allow-empty", "-m", "init"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=wd, check=True, env=ENV, capture_output=True)
    run_script(ROOT / "scripts/make_dvc.py", "--configfile", "config/config.yaml", "tests/configs/tiny.yaml",
               "--out", "dvc.yaml", cwd=wd)
    return wd


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory):
    """`dvc repro` of the whole tiny DAG (every stage, sequentially), as a user would run it."""
    wd = _dvc_repo(tmp_path_factory.mktemp("dvc") / "repo")
    proc = dvc(wd, "repro")
    return wd, proc


def _stages(wd) -> set[str]:
    import yaml

    out = set()
    for name, st in yaml.safe_load((wd / "dvc.yaml").read_text())["stages"].items():
        out |= {f"{name}@{k}" for k in st["foreach"]} if "foreach" in st else {name}
    return out


def test_dvc_repro_runs_the_whole_dag_then_is_a_no_op(dvc_run):
    wd, first = dvc_run
    assert ran_stages(first) == _stages(wd)
    assert (wd / "results/tiny/tables/table1.tex").stat().st_size > 0
    second = dvc(wd, "repro")
    assert ran_stages(second) == set() and "up to date" in second.stdout, second.stdout
    metrics = json.loads(dvc(wd, "metrics", "show", "--json").stdout)
    shown = json.dumps(metrics)
    assert "acc_1shot" in shown and "results/tiny/synthetic/metantk/cells5/seed0/fewshot.json" in shown
    plots = dvc(wd, "plots", "show", "--json").stdout
    assert "train_log.csv" in plots


def test_dvc_push_and_pull_round_trip_every_artifact(dvc_run, tmp_path):
    import yaml

    wd, _ = dvc_run
    lock = yaml.safe_load((wd / "dvc.lock").read_text())["stages"]
    outs = {o["path"]: o["md5"] for st in lock.values() for o in st.get("outs", [])}
    assert len(outs) > 20
    dvc(wd, "remote", "add", "-f", "-d", "store", str(tmp_path / "remote"))
    dvc(wd, "push")
    saved = tmp_path / "saved"
    saved.mkdir()
    shutil.move(str(wd / "results"), saved / "results")
    shutil.move(str(wd / "data"), saved / "data")
    shutil.rmtree(wd / ".dvc/cache")
    assert "deleted" in dvc(wd, "status").stdout
    dvc(wd, "pull")
    for path in outs:
        a, b = wd / path, saved / path
        if a.is_dir():
            files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
            assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()), path
            for f in files:
                assert (a / f).read_bytes() == (b / f).read_bytes(), f
        else:
            assert a.read_bytes() == b.read_bytes(), path
    assert ran_stages(dvc(wd, "repro")) == set()


def snakemake_dag(wd, configfile: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Jobs and edges of `snakemake --dag --forceall all study`, each job named as its DVC stage.

    A dot label shows only the wildcards a job does not share with its dependencies, so a job's wildcards are
    collected from its label and those of all its ancestors."""
    from metantk_nas.config import Run

    dot = snakemake("--dag", "--forceall", "--cores", "1", "all", "study", "--configfile", configfile, cwd=wd).stdout
    labels = {i: lab.split("\\n") for i, lab in re.findall(r'^\s*(\d+)\[label = "([^"]*)"', dot, flags=re.M)}
    edges = re.findall(r"^\s*(\d+) -> (\d+)$", dot, flags=re.M)
    parents: dict[str, set[str]] = {i: set() for i in labels}
    for a, b in edges:
        parents[b].add(a)

    def wildcards(i: str) -> dict[str, str]:
        out = dict(kv.split(": ", 1) for kv in labels[i][1:])
        for p in parents[i]:
            out = {**wildcards(p), **out}
        return out

    def name(i: str) -> str:
        rule, wc = labels[i][0], wildcards(i)
        if rule in ("tables", "all", "study"):
            return rule
        if rule == "prepare_data":
            return f"prepare_data@{wc['dataset']}"
        if rule == "compare_cells":     # an unrolled DVC stage (scripts/make_dvc.py says why)
            return f"compare_cells-{wc['dataset']}-{wc['cells']}-{wc['seed']}"
        return f"{rule}@" + Run(wc["dataset"], wc["method"], int(wc["cells"]), int(wc["seed"])).tag

    names = {i: name(i) for i in labels}
    return ({n for n in names.values() if n != "all"},
            {(names[a], names[b]) for a, b in edges if names[b] != "all"})


def test_dvc_dag_equals_the_snakemake_dag(dvc_run):
    """Same nodes and the same edges: DVC's stage graph (`dvc dag --dot`) against Snakemake's job graph for the
    same config, after naming."""
    wd, _ = dvc_run
    dot = dvc(wd, "dag", "--dot").stdout
    dvc_nodes = set(re.findall(r'^"([^"]+)";$', dot, flags=re.M))
    dvc_edges = set(re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, flags=re.M))
    smk_nodes, smk_edges = snakemake_dag(wd, "tests/configs/tiny.yaml")
    assert smk_nodes == dvc_nodes
    assert smk_edges == dvc_edges
    assert {("train@synthetic-metanas-5-0", "evaluate@synthetic-metanas-5-0"),
            ("published_genotype@synthetic-metanas-5-0", "train@synthetic-metanas-5-0"),
            ("prepare_data@synthetic", "search@synthetic-metantk-5-0")} <= dvc_edges


def test_dvc_train_param_change_reruns_only_the_trainings_evaluations_tables_and_study(dvc_run):
    """Runs last: it edits the config of the shared repository."""
    wd, _ = dvc_run
    tiny = wd / "tests/configs/tiny.yaml"
    tiny.write_text(tiny.read_text().replace("{lr: 0.05,", "{lr: 0.04,"))
    before = {p: p.read_bytes() for p in (wd / "results/tiny").rglob("search.json")}
    proc = dvc(wd, "repro")
    stages = _stages(wd)
    # the tiny study trains on its own tree (a budget of the same recipe), so its trainings and analysis rerun too
    retrained = ("train@", "evaluate@", "study_train@", "study_evaluate@")
    assert ran_stages(proc) == {s for s in stages if s.startswith(retrained)} | {"tables", "study"}, proc.stdout
    assert all(p.read_bytes() == b for p, b in before.items())
    assert ran_stages(dvc(wd, "repro")) == set()


def test_dvc_repro_prepare_data_then_no_op(tmp_path):
    wd = _dvc_repo(tmp_path / "repo")
    env = ENV
    first = subprocess.run([str(BIN / "dvc"), "repro", "prepare_data@synthetic"], cwd=wd, env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (wd / "data/prepared-tiny/synthetic/manifest.json").exists()
    second = subprocess.run([str(BIN / "dvc"), "repro", "prepare_data@synthetic"], cwd=wd, env=env,
                            capture_output=True, text=True)
    assert second.returncode == 0 and "didn't change, skipping" in second.stdout, second.stdout
    # tamper with a prepared file: dvc status and the audit name the same file
    victim = "data/prepared-tiny/synthetic/train_images.npy"
    with open(wd / victim, "ab") as f:
        f.write(b"\0")
    status = subprocess.run([str(BIN / "dvc"), "status", "prepare_data@synthetic"], cwd=wd, env=env,
                            capture_output=True, text=True)
    assert "modified" in status.stdout and victim in status.stdout, status.stdout
    flags = ["--allow-dirty"] if _dirty() else []
    proc = run_script(ROOT / "scripts/audit.py", victim, "--quiet", *flags, cwd=wd, check=False)
    named = {line.split(":")[1].strip() for line in proc.stderr.splitlines() if line.startswith("audit:")}
    assert proc.returncode == 1 and named == {victim}, proc.stderr


def test_dvc_yaml_is_generated_from_the_smoke_config(tmp_path):
    run_script(ROOT / "scripts/make_dvc.py", "--configfile", "config/config.yaml", "config/smoke.yaml",
               "--out", tmp_path / "dvc.yaml")
    assert (tmp_path / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()


def test_snakemake_report_has_tables_cells_and_training_curves(tiny_run):
    snakemake("--report", "report.html", "--configfile", "tests/configs/tiny.yaml", cwd=tiny_run)
    html = (tiny_run / "report.html").read_text(errors="replace")
    assert (tiny_run / "results/tiny/synthetic/metantk/cells5/seed0/train_curve.png").stat().st_size > 1000
    assert (tiny_run / "results/tiny/figures/cells-synthetic-5-0.png").stat().st_size > 10_000
    for needle in ("train_curve.png", "cell_normal.png", "table1.csv", "Training curves", "cells-synthetic-5-0.png",
                   "synthetic 5 cells: every method"):
        assert needle in html, needle



@pytest.fixture(scope="module")
def tiny_study(tiny_run):
    """`snakemake study` on the tiny config, after the grid: its own tree (a budget, 6 episodes)."""
    snakemake("study", "--cores", "2", "--configfile", "tests/configs/tiny.yaml", cwd=tiny_run)
    return tiny_run


def test_study_dag_runs_end_to_end_on_the_tiny_config(tiny_study):
    import pandas as pd
    from scipy.stats import kendalltau, spearmanr

    out = tiny_study / "results/tiny/study"
    archs = pd.read_csv(out / "architectures.csv")
    # 3 random cells (seeds 10..12) + the grid's metantk, linreg and random runs
    assert sorted(zip(archs.method, archs.seed)) == [("linreg", 0), ("metantk", 0), ("random", 0), ("random", 10),
                                                     ("random", 11), ("random", 12)]
    for r in archs.itertuples():
        run = f"synthetic/{r.method}/cells5/seed{r.seed}"
        few = json.loads((tiny_study / f"results/tiny/study-runs/{run}/fewshot.json").read_text())["results"]
        assert len(few["1shot"]["per_episode"]) == 6                                  # study.episodes
        assert r.acc_1shot == pytest.approx(few["1shot"]["mean"])
        scores = json.loads((tiny_study / f"results/tiny/{run}/scores.json").read_text())["scores"]
        assert r.ntk == pytest.approx(scores["ntk"]) and r.regions == scores["regions"]
    # the reported statistics are scipy's on the table of architectures
    corr = json.loads((out / "study.json").read_text())["correlations"]
    for c in corr:
        if c["score"] == "rank_sum":
            continue
        x, y = archs[c["score"]], archs[f"acc_{c['shots']}shot"]
        tau, rho = kendalltau(x, y).statistic, spearmanr(x, y).statistic
        assert (c["tau"] is None and np.isnan(tau)) or c["tau"] == pytest.approx(tau), c
        assert (c["rho"] is None and np.isnan(rho)) or c["rho"] == pytest.approx(rho), c
    assert "Kendall $\\tau$" in (out / "study.tex").read_text()
    assert (out / "figures/scatter-synthetic-5-metantk_maml.png").stat().st_size > 10_000
    proc = audit(tiny_study, "results/tiny/study/study.tex")
    assert proc.returncode == 0, proc.stderr
    noop = snakemake("-n", "study", "--cores", "1", "--configfile", "tests/configs/tiny.yaml", cwd=tiny_study)
    assert "Nothing to be done" in noop.stdout + noop.stderr


def test_study_report_has_table3_and_the_scatter_plots(tiny_study):
    snakemake("--report", "study.html", "study", "--configfile", "tests/configs/tiny.yaml", cwd=tiny_study)
    html = (tiny_study / "study.html").read_text(errors="replace")
    for needle in ("Study", "study.csv", "stability.csv", "scatter-synthetic-5-ntk.png", "synthetic 5 cells"):
        assert needle in html, needle


def test_killed_run_leaves_a_lock_with_an_unlock_hint(tmp_path):
    """SIGKILL (an OOM kill, a node failure) leaves Snakemake's lock behind: the next run names `--unlock`, which
    clears it, and `--rerun-incomplete` then plans the interrupted jobs again."""
    import signal
    import time

    wd = _copy_tree(tmp_path)
    args = [str(BIN / "snakemake"), "--cores", "1", "--configfile", "tests/configs/tiny.yaml"]
    proc = subprocess.Popen(args, cwd=wd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    locks = wd / ".snakemake/locks"
    deadline = time.time() + 120
    while time.time() < deadline and not (locks.is_dir() and any(locks.iterdir())):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(locks.iterdir())
    # The whole DAG as the target: Snakemake checks the lock only when it has jobs to run, and the tables cannot be
    # finished a second after the lock appeared (an early target such as the prepared manifest may be, and then the
    # run says 'Nothing to be done' without looking at the lock).  A real (not dry) run checks the lock.
    # --rerun-incomplete: the kill may have left incomplete outputs, whose check would otherwise come first.
    blocked = snakemake("--rerun-incomplete", "--cores", "1", "--configfile", "tests/configs/tiny.yaml", cwd=wd,
                        check=False)
    assert blocked.returncode != 0 and "--unlock" in blocked.stdout + blocked.stderr
    snakemake("--unlock", "--cores", "1", "--configfile", "tests/configs/tiny.yaml", cwd=wd)
    snakemake("-n", "--rerun-incomplete", "--cores", "1", "--configfile", "tests/configs/tiny.yaml", cwd=wd)


@pytest.mark.parametrize("configs", [[], ["--configfile", "config/smoke.yaml"]])
def test_workflow_passes_snakemake_lint(configs):
    """The snakemake-workflows catalog's bar: no lint findings on the paper and the smoke config."""
    proc = snakemake("--lint", *configs)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_snakefile_and_rules_are_snakefmt_formatted():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_conda_environments_pin_what_requirements_txt_pins():
    """`--software-deployment-method conda` gets the same software as the venv from `make` (GPU: a CUDA torch)."""
    import yaml

    pins = {line.split("==")[0].lower(): line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    runtime = {k: v for k, v in pins.items() if not k.startswith(("snakemake", "snakefmt", "dvc", "pytest"))}
    for env in ("pipeline.yaml", "pipeline-cuda.yaml"):
        spec = yaml.safe_load((ROOT / "workflow/envs" / env).read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        got = {p.split("==")[0].lower(): p for p in pip if "==" in p}
        assert got == runtime, env
        assert any("python=3.11" == d for d in spec["dependencies"] if isinstance(d, str))
    cuda = (ROOT / "workflow/envs/pipeline-cuda.yaml").read_text()
    assert "download.pytorch.org/whl/cu" in cuda
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    assert len(re.findall(r"^    conda:", rules, re.M)) == len(re.findall(r"^rule ", rules, re.M)) == 10
