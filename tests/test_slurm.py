"""Integration: the tiny DAG through the Snakemake SLURM executor on a real single-node SLURM (tests/slurm/)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, placeholder_raw, require

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TREE = ["Snakefile", "workflow", "config", "scripts", "tests/configs", "tests/slurm", "slurm", "slurm-noacct"]
# the shipped no-accounting profile, unmodified; on the command line only what makes a test run quick (a smaller
# jobs limit, a short latency wait and first status check) and keeps the logs the test reads
QUICK = ["--jobs", "4", "--latency-wait", "5", "--slurm-init-seconds-before-status-checks", "1",
         "--slurm-keep-successful-logs"]
GPU_STAGES = {"search", "train", "evaluate"}


def _copy(dest: Path) -> Path:
    for name in TREE:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, dest / name)
    return dest


ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}   # the venv's tools first (the job step's python)


def _snakemake(wd, *args, timeout=900):
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=wd, capture_output=True, text=True, env=ENV,
                          timeout=timeout)


@pytest.fixture(scope="module")
def slurm():
    tools = [shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged", "slurmdbd", "mariadbd")]
    require(all(tools) and os.geteuid() == 0,
            "SLURM (slurmctld, slurmd, slurm-client, munge, slurmdbd), MariaDB and root are needed")
    up = subprocess.run(["bash", str(ROOT / "tests/slurm/start.sh"), "--accounting"], capture_output=True, text=True,
                        timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    subprocess.run(["bash", str(ROOT / "tests/slurm/stop.sh")], capture_output=True, timeout=60)


def _jobcomp() -> dict[str, dict[str, str]]:
    jobs = {}
    for line in Path("/var/log/slurm/jobcomp.log").read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        jobs[fields["JobId"]] = fields
    return jobs


def test_paper_grid_dry_run_with_the_shipped_profile(slurm, tmp_path):
    wd = placeholder_raw(_copy(tmp_path / "dry"))
    proc = _snakemake(wd, "--profile", "slurm", "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert counts["train"] == counts["evaluate"] == "42" and counts["search"] == "30"
    blocks = out.split("\n\n")
    for rule, partition in (("train", "gpu"), ("search", "gpu"), ("prepare_data", "cpu"), ("tables", "cpu")):
        jobs = [b for b in blocks if re.search(rf"^rule {rule}:", b, flags=re.M)]
        assert jobs and all(f"slurm_partition={partition}" in b for b in jobs), rule
    assert all(re.search(r"\bgpu=1\b", b) for b in blocks if re.search(r"^rule train:", b, flags=re.M))
    # the early warning (resources.signal_before_limit) on the stages that checkpoint, and only there
    for rule, warned in (("train", True), ("search", True), ("evaluate", False), ("prepare_data", False)):
        jobs = [b for b in blocks if re.search(rf"^rule {rule}:", b, flags=re.M)]
        assert all(("slurm_extra=--signal=TERM@300" in b) == warned for b in jobs), rule


def test_paper_study_dry_run_uses_the_stages_resources(slurm, tmp_path):
    """`snakemake study --profile slurm`: the study's jobs get the per-stage requests of search, train, evaluate
    and tables (config/config.yaml: 30 random cells + 12 grid cells per cell count on mini)."""
    wd = placeholder_raw(_copy(tmp_path / "study"))
    proc = _snakemake(wd, "study", "--profile", "slurm", "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert counts["study_score"] == "84" and counts["study"] == "1" and "study_train" not in counts
    blocks = out.split("\n\n")
    for rule, partition, request in (("study_score", "gpu", "mem_mb=16000"), ("study", "cpu", "mem_mb=4000"),
                                     ("train", "gpu", "mem_mb=24000")):
        jobs = [b for b in blocks if re.search(rf"^rule {rule}:", b, flags=re.M)]
        assert jobs and all(f"slurm_partition={partition}" in b and request in b for b in jobs), rule




def _signal_jobs_when(watch: dict[str, Path], proc: subprocess.Popen, timeout: float = 600) -> dict[str, str]:
    """For each job comment in ``watch`` (rule_<rule>_wildcards_<values>): when its file appears (a checkpoint: the
    job is inside its work), send that running SLURM job `scancel --signal=TERM`, as SLURM does on preemption (to
    every process of the job step: the inner Snakemake under srun and the script).  Returns the job id per key."""
    import time

    deadline, signalled = time.time() + timeout, {}
    while len(signalled) < len(watch):
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"no {set(watch) - set(signalled)} checkpoint:\n" + proc.stdout.read()[-4000:])
        for key, path in watch.items():
            if key not in signalled and path.exists():
                queue = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True,
                                       text=True).stdout.split("\n")
                jobs = [line.split()[0] for line in queue if line.endswith(f" {key}")]
                assert len(jobs) == 1, (key, queue)
                subprocess.run(["scancel", "--signal=TERM", jobs[0]], check=True)
                signalled[key] = jobs[0]
        time.sleep(0.05)
    return signalled


CONFIGS = ["--configfile", "tests/configs/tiny.yaml", "tests/configs/preempt.yaml"]
SITE = "tests/configs/slurm-site.yaml"   # the test cluster's account, as a user's overlay sets it
SEARCH_RUN, TRAIN_RUN = (f"results/tiny/synthetic/{m}/cells5/seed0" for m in ("metantk", "metanas"))
SIGNALLED = {"rule_search_wildcards_synthetic_metantk_5_0": ("search", f"{SEARCH_RUN}/search_state.json"),
             "rule_train_wildcards_synthetic_metanas_5_0": ("train", f"{TRAIN_RUN}/checkpoints/ckpt_last.pt")}


@pytest.fixture(scope="module")
def slurm_dag(slurm, tmp_path_factory):
    """One run of the tiny DAG (tests/configs/preempt.yaml: metantk and the published cell, jobs long enough to be
    interrupted) through `snakemake --profile slurm` (the shipped profile: jobs tracked by sacct, its `retries: 2`)
    with the account from a site overlay, on the cluster with its accounting database, during which the metantk
    search is signalled mid-round and the metanas training job mid-epoch; and the same DAG run locally,
    uninterrupted."""
    wd = _copy(tmp_path_factory.mktemp("slurm"))
    proc = subprocess.Popen([str(BIN / "snakemake"), "--profile", "slurm", *QUICK, *CONFIGS, SITE],
                            cwd=wd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        jobs = _signal_jobs_when({k: wd / f for k, (_, f) in SIGNALLED.items()}, proc)
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-4000:]
    local = _copy(tmp_path_factory.mktemp("local"))
    done = _snakemake(local, "--cores", "2", *CONFIGS)
    assert done.returncode == 0, done.stderr[-3000:]
    return wd, local, jobs


def test_tiny_dag_runs_through_sbatch_on_the_right_partitions(slurm_dag):
    wd, local, _ = slurm_dag
    records = [json.loads(p.read_text()) for p in wd.rglob("*.prov.json")]
    by_stage: dict[str, set[tuple[str, str]]] = {}
    for r in records:
        by_stage.setdefault(r["stage"], set()).add((r["slurm"]["job_id"], r["slurm"]["partition"]))
    assert set(by_stage) == {"prepare_data", "search", "export_genotype", "train", "evaluate", "tables",
                             "compare_cells"}
    comp = _jobcomp()
    for stage, jobs in by_stage.items():
        for job_id, partition in jobs:
            assert job_id is not None, f"{stage} did not run under SLURM"
            assert partition == ("gpu" if stage in GPU_STAGES else "cpu"), (stage, partition)
            assert comp[job_id]["JobState"] == "COMPLETED" and comp[job_id]["Partition"] == partition
    # the accounting database has every job, under the overlay's account (what the plugin's sacct queries read)
    acct = subprocess.run(["sacct", "-n", "-P", "-X", "-a", "-o", "JobID,Account,Partition,State"], capture_output=True,
                          text=True, check=True).stdout
    rows = {line.split("|")[0]: line.split("|") for line in acct.splitlines()}
    for stage, jobs in by_stage.items():
        for job_id, partition in jobs:
            assert rows[job_id][1:4] == ["metantk-lab", partition, "COMPLETED"], (stage, rows.get(job_id))
    # the results equal those of the local run
    fewshot = list((local / "results/tiny").rglob("fewshot.json"))
    assert len(fewshot) == 2
    for few in fewshot:
        ours = json.loads((wd / few.relative_to(local)).read_text())["results"]
        assert ours == json.loads(few.read_text())["results"]


def test_signalled_search_and_train_jobs_resume_on_retry_to_identical_artifacts(slurm_dag):
    """Preemption on the real SLURM: the search job signalled mid-round and the training job mid-epoch each
    checkpoint and exit 75; Snakemake's retry resubmits them, they resume from their checkpoints, and search.json
    and model.pt equal, byte for byte, those of the uninterrupted local run."""
    wd, local, jobs = slurm_dag
    comp = _jobcomp()
    for key, job in jobs.items():
        rule = SIGNALLED[key][0]
        assert comp[job]["JobState"] == "FAILED", comp[job]     # the inner Snakemake exits 1 after the script's 75
        log = next((wd / ".snakemake/slurm_logs" / f"rule_{rule}").rglob(f"{job}.log")).read_text()
        assert "exit status 75" in log, log[-3000:]
    resumed = json.loads((wd / SEARCH_RUN / "cost.json").read_text())["resumed_at"]
    assert len(resumed) == 1 and re.fullmatch(r"\d+ candidates of round 0", resumed[0]), resumed
    assert int(resumed[0].split()[0]) > 0                        # mid-round
    resumed = json.loads((wd / TRAIN_RUN / "metrics.json").read_text())["resumed_at"]
    assert len(resumed) == 1 and resumed[0]["step"] > 0, resumed  # mid-epoch
    assert json.loads((local / TRAIN_RUN / "metrics.json").read_text())["resumed_at"] == []
    for name in (f"{SEARCH_RUN}/search.json", f"{TRAIN_RUN}/model.pt", f"{SEARCH_RUN}/model.pt"):
        assert (wd / name).read_bytes() == (local / name).read_bytes(), name


def test_the_no_accounting_profile_completes_the_dag_on_a_cluster_without_accounting(slurm_dag, tmp_path):
    """The same cluster restarted without its accounting database (sacct exits 1, as on a site that runs no
    slurmdbd): the shipped slurm-noacct/ profile (squeue for status, no account) completes the published cell's
    runs from scratch, on the right partitions, to the results of the local run. Runs last in this module."""
    _, local, _ = slurm_dag
    down = subprocess.run(["bash", str(ROOT / "tests/slurm/start.sh"), "--no-accounting"], capture_output=True,
                          text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode != 0   # no accounting now
    wd = _copy(tmp_path / "noacct")
    target = f"{TRAIN_RUN}/fewshot.json"
    proc = _snakemake(wd, "--profile", "slurm-noacct", *QUICK, target, *CONFIGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in wd.rglob("*.prov.json")]
    assert {r["stage"] for r in records} >= {"prepare_data", "export_genotype", "train", "evaluate"}
    assert all(r["slurm"]["job_id"] and r["slurm"]["partition"] == ("gpu" if r["stage"] in GPU_STAGES else "cpu")
               for r in records)
    assert (json.loads((wd / target).read_text())["results"] == json.loads((local / target).read_text())["results"])
