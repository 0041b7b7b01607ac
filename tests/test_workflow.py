"""Integration: the Snakemake DAG end to end on the tiny config, the provenance audit, the report and the study
(DVC: test_dvc.py, test_dvc_repos.py)."""
import json
import re
import os
import shutil
import subprocess

import numpy as np
import pytest

from helpers import BIN, ENV, ROOT, audit, copy_tree, git_dirty, placeholder_raw, run_script, snakemake

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("configs", [[], ["--configfile", "config/smoke.yaml"]])
def test_dry_run_lists_the_grid(configs, tmp_path):
    proc = snakemake("-n", "--cores", "1", *configs, cwd=placeholder_raw(copy_tree(tmp_path)))
    n_runs = 42 if not configs else 20
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert counts["train"] == counts["evaluate"] == str(n_runs)
    assert counts["prepare_data"] == ("2" if not configs else "1")
    claim = re.search(r"The smoke DAG has (\d+) jobs and the paper grid (\d+)", (ROOT / "README.md").read_text())
    assert claim and counts["total"] == claim.group(2 if not configs else 1), counts["total"]   # the README's counts


def test_a_missing_raw_dataset_stops_the_dry_run_naming_the_path_and_its_key(tmp_path):
    """prepare_data's input is the raw files: without them the paper grid's dry run fails before any job, naming
    the directory and the config key that sets it."""
    proc = snakemake("-n", "--cores", "1", cwd=copy_tree(tmp_path), check=False)
    assert proc.returncode != 0
    assert "data/raw/miniImageNet: dataset directory not found (set data.datasets.mini.source)" in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--config", "experiment=x"], "--config experiment: overrides are not supported"),
    (["--configfile", "extra.yaml"], "config: resources.stages.search.extra: '--constraint=a100' sets the node "
                                     "constraints, which the SLURM executor plugin sets itself")])
def test_settings_the_scripts_would_never_see_stop_the_dry_run_with_one_line(args, message, tmp_path):
    """A --config override (the scripts read the config files) and an sbatch flag the SLURM plugin manages (it
    would refuse the job at submission, hours into a run) stop the dry run with one line naming them."""
    wd = copy_tree(tmp_path)
    (wd / "extra.yaml").write_text("resources: {stages: {search: {extra: '--constraint=a100'}}}\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "config/smoke.yaml", *args, cwd=wd, check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stderr[-2000:]


def test_bad_config_stops_snakemake_with_one_line(tmp_path):
    wd = copy_tree(tmp_path)
    (wd / "bad.yaml").write_text("search: {repeats: 0}\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=wd, check=False)
    assert proc.returncode != 0 and "config: search.repeats: expected a value >= 1, got 0" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    wd = copy_tree(tmp_path_factory.mktemp("wf"))
    snakemake("--cores", "2", "--configfile", "tests/configs/tiny.yaml", cwd=wd)
    return wd


def test_whole_dag_produces_the_tables(tiny_run):
    tables = tiny_run / "results/tiny/tables"
    for f in ("table1.tex", "table2.tex", "table1.md", "table2.csv", "comparison.md"):
        assert (tables / f).stat().st_size > 0
    tex = (tables / "table2.tex").read_text()
    assert "\\toprule" in tex and "MetaNTK-NAS" in tex
    # the README's sample of the demo's table1.md has the columns and row labels the code writes today
    sample = (ROOT / "README.md").read_text().split("`results/smoke/tables/table1.md` of that run", 1)[1]
    sample_rows = [line for line in sample.split("\n\n", 2)[1].splitlines() if line.startswith("|")]
    ours = [line for line in (tables / "table1.md").read_text().splitlines() if line.startswith("|")]
    cells = lambda row: [c.strip() for c in row.strip("|").split("|")]   # noqa: E731
    assert cells(sample_rows[0]) == cells(ours[0])
    assert {tuple(cells(r)[:2]) for r in sample_rows[2:]} >= {tuple(cells(r)[:2]) for r in ours[2:]}
    few = json.loads((tiny_run / "results/tiny/synthetic/metantk/cells5/seed0/fewshot.json").read_text())
    for shots in (1, 5):      # the stage's summary keys are its per-episode accuracies' mean, in %
        per = few["results"][f"{shots}shot"]["per_episode"]
        assert len(per) == 10 and few[f"acc_{shots}shot"] == pytest.approx(100 * sum(per) / len(per), abs=1e-3)


def test_audit_passes_from_the_table_to_the_raw_data(tiny_run):
    proc = audit(tiny_run, "results/tiny/tables/table1.tex")
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    if git_dirty():  # without --allow-dirty the audit must refuse artifacts of uncommitted code
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
    archs = pd.read_csv(out / "architectures.csv", converters={"seeds": json.loads})
    # 3 random cells (seeds 10..12) + the grid's metantk, linreg and random runs; one row per distinct cell
    assert sorted(s for r in archs.itertuples() for s in r.seeds) == [0, 0, 0, 10, 11, 12]
    assert set(archs[archs.origin == "grid"].method) == {"linreg", "metantk", "random"}
    assert set(archs[archs.origin == "sampled"].method) == {"random"}
    assert archs.runs.sum() == 6 and archs.groupby(["origin", "method"]).genotype.nunique().eq(
        archs.groupby(["origin", "method"]).size()).all()                       # no genotype twice in a group
    for r in archs.itertuples():
        runs = [f"synthetic/{r.method}/cells5/seed{s}" for s in r.seeds]
        few = [json.loads((tiny_study / f"results/tiny/study-runs/{run}/fewshot.json").read_text())["results"]
               for run in runs]
        assert all(len(f["1shot"]["per_episode"]) == 6 for f in few)                 # study.episodes
        assert r.acc_1shot == pytest.approx(np.mean([f["1shot"]["mean"] for f in few]))
        scores = json.loads((tiny_study / f"results/tiny/{runs[0]}/scores.json").read_text())["scores"]
        assert r.ntk == pytest.approx(scores["ntk"]) and r.regions == scores["regions"]
    # the reported statistics are scipy's on the random sample of the table of architectures
    sample = archs[archs.origin == "sampled"]
    corr = json.loads((out / "study.json").read_text())["correlations"]
    for c in corr:
        if c["score"] == "rank_sum":
            continue
        ok = sample[c["score"]].notna()
        x, y = sample[c["score"]][ok], sample[f"acc_{c['shots']}shot"][ok]
        tau, rho = kendalltau(x, y).statistic, spearmanr(x, y).statistic
        assert (c["tau"] is None and np.isnan(tau)) or c["tau"] == pytest.approx(tau), c
        assert (c["rho"] is None and np.isnan(rho)) or c["rho"] == pytest.approx(rho), c
        assert c["n"] + c["excluded"] == len(sample)
    assert "Table 3b" in (out / "study.md").read_text() and (out / "searched.csv").stat().st_size > 0
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

    wd = copy_tree(tmp_path)
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


FAKE_SLURM = {   # what the SLURM executor plugin calls, faked: sbatch records its arguments and refuses the job
    "sbatch": 'printf "%s\\n" "$*" >> "$SBATCH_LOG"; echo "sbatch: error: recorded by the test" >&2; exit 1',
    "sacctmgr": 'echo site-acct',   # the plugin validates a given account against the user's accounts
    **{tool: "exit 1" for tool in ("scontrol", "sinfo", "squeue", "sacct", "sshare")}}


def test_sbatch_gets_the_account_the_gpu_type_and_the_stages_extra_flags_with_the_signal_kept(tmp_path):
    """The sbatch arguments the SLURM executor plugin builds for a search job (a fake sbatch records them): the
    account (resources.account), the GPU type (resources.gpu_type -> --gpus=<type>:1), and the stage's extra flags
    after the early-warning --signal, which they do not replace; a CPU job gets no GPU."""
    (tmp_path / "wd").mkdir()
    wd = copy_tree(tmp_path / "wd")
    (wd / "site.yaml").write_text("resources:\n  account: site-acct\n  gpu_type: a100\n"
                                  "  stages:\n    search: {extra: '--reservation=paper --nice=10'}\n")
    configs = ["--configfile", "tests/configs/tiny.yaml", "site.yaml"]
    snakemake("--cores", "1", "data/prepared-tiny/synthetic/manifest.json", *configs, cwd=wd)   # locally
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool, body in FAKE_SLURM.items():
        (fake / tool).write_text(f"#!/bin/bash\n{body}\n")
        (fake / tool).chmod(0o755)
    log = tmp_path / "sbatch.log"
    env = {**ENV, "PATH": f"{fake}:{ENV['PATH']}", "SBATCH_LOG": str(log)}
    search = "results/tiny/synthetic/metantk/cells5/seed0/search.json"
    for target in (search, "results/tiny/synthetic/metanas/cells5/seed0/genotype.json"):
        proc = subprocess.run([str(BIN / "snakemake"), "--executor", "slurm", "--jobs", "1", target, *configs,
                               "--slurm-init-seconds-before-status-checks", "1"],
                              cwd=wd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and "recorded by the test" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    gpu_job, cpu_job = log.read_text().splitlines()
    assert " -A site-acct " in gpu_job and " -p gpu " in gpu_job and "--gpus=a100:1" in gpu_job, gpu_job
    assert "--signal=TERM@300 --reservation=paper --nice=10" in gpu_job, gpu_job
    assert " -A site-acct " in cpu_job and " -p cpu " in cpu_job and "--gpus" not in cpu_job, cpu_job
    assert "--signal" not in cpu_job and "--reservation" not in cpu_job, cpu_job


def test_a_local_run_holds_at_most_k_gpu_jobs_at_once():
    """GPU stages declare `gpu: 1`, so `snakemake --cores N --resources gpu=K` never runs more than K of them at
    once on one machine; CPU stages declare none."""
    proc = snakemake("-n", "--cores", "1", "--configfile", "config/smoke.yaml", "-p", "--resources", "gpu=1")
    blocks = proc.stdout.split("\n\n")
    for rule, gpu in (("search", True), ("train", True), ("evaluate", True), ("prepare_data", False),
                      ("tables", False)):
        jobs = [b for b in blocks if re.search(rf"^rule {rule}:", b, flags=re.M)]
        assert jobs and all(("gpu=1" in b) == gpu for b in jobs), rule
