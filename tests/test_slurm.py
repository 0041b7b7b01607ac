"""Integration: the tiny DAG through the Snakemake SLURM executor on a real single-node SLURM (tests/slurm/)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TREE = ["Snakefile", "workflow", "config", "scripts", "tests/configs", "tests/slurm", "slurm"]
GPU_STAGES = {"search", "train", "evaluate"}


def _copy(dest: Path) -> Path:
    for name in TREE:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, dest / name)
    return dest


def _snakemake(wd, *args, timeout=900):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=wd, capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def slurm():
    tools = [shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged")]
    require(all(tools) and os.geteuid() == 0, "SLURM (slurmctld, slurmd, slurm-client, munge) and root are needed")
    up = subprocess.run(["bash", str(ROOT / "tests/slurm/start.sh")], capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    subprocess.run(["bash", str(ROOT / "tests/slurm/stop.sh")], capture_output=True, timeout=60)


def _jobcomp() -> dict[str, dict[str, str]]:
    jobs = {}
    for line in Path("/var/log/slurm/jobcomp.log").read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        jobs[fields["JobId"]] = fields
    return jobs


def test_tiny_dag_runs_through_sbatch_on_the_right_partitions(slurm, tmp_path):
    wd = _copy(tmp_path / "slurm")
    proc = _snakemake(wd, "--profile", "tests/slurm/profile", "--configfile", "tests/configs/tiny.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in wd.rglob("*.prov.json")]
    by_stage: dict[str, set[tuple[str, str]]] = {}
    for r in records:
        by_stage.setdefault(r["stage"], set()).add((r["slurm"]["job_id"], r["slurm"]["partition"]))
    assert set(by_stage) == {"prepare_data", "search", "export_genotype", "train", "evaluate", "tables"}
    comp = _jobcomp()
    for stage, jobs in by_stage.items():
        for job_id, partition in jobs:
            assert job_id is not None, f"{stage} did not run under SLURM"
            assert partition == ("gpu" if stage in GPU_STAGES else "cpu"), (stage, partition)
            assert comp[job_id]["JobState"] == "COMPLETED" and comp[job_id]["Partition"] == partition
    # the results equal those of a local run
    local = _copy(tmp_path / "local")
    proc = _snakemake(local, "--cores", "2", "--configfile", "tests/configs/tiny.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for few in (local / "results/tiny").rglob("fewshot.json"):
        ours = json.loads((wd / few.relative_to(local)).read_text())["results"]
        assert ours == json.loads(few.read_text())["results"]


def test_paper_grid_dry_run_with_the_shipped_profile(slurm, tmp_path):
    wd = _copy(tmp_path / "dry")
    proc = _snakemake(wd, "--profile", "slurm", "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert counts["train"] == counts["evaluate"] == "42" and counts["search"] == "30"
    blocks = out.split("\n\n")
    for rule, partition in (("train", "gpu"), ("search", "gpu"), ("prepare_data", "cpu"), ("tables", "cpu")):
        jobs = [b for b in blocks if re.search(rf"^rule {rule}:", b, flags=re.M)]
        assert jobs and all(f"slurm_partition={partition}" in b for b in jobs), rule
    assert all("gres=gpu:1" in b for b in blocks if re.search(r"^rule train:", b, flags=re.M))
    # the early warning (resources.signal_before_limit) on the stages that checkpoint, and only there
    for rule, warned in (("train", True), ("search", True), ("evaluate", False), ("prepare_data", False)):
        jobs = [b for b in blocks if re.search(rf"^rule {rule}:", b, flags=re.M)]
        assert all(("slurm_extra=--signal=TERM@300" in b) == warned for b in jobs), rule



def _signal_jobs_when(watch: dict[str, Path], proc: subprocess.Popen, timeout: float = 300) -> dict[str, str]:
    """For each rule in ``watch``: when its file appears (a checkpoint: the job is inside its work), send its
    running SLURM job `scancel --signal=TERM`, as SLURM does on preemption (to every process of the job step: the
    inner Snakemake under srun and the script).  Returns the signalled job id per rule."""
    import time

    deadline, signalled = time.time() + timeout, {}
    while len(signalled) < len(watch):
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"no {set(watch) - set(signalled)} checkpoint:\n" + proc.stdout.read()[-4000:])
        for rule, path in watch.items():
            if rule not in signalled and path.exists():
                queue = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True,
                                       text=True).stdout.split("\n")
                jobs = [line.split()[0] for line in queue if f" rule_{rule}_" in line]
                assert len(jobs) == 1, queue
                subprocess.run(["scancel", "--signal=TERM", jobs[0]], check=True)
                signalled[rule] = jobs[0]
        time.sleep(0.05)
    return signalled


def test_signalled_search_and_train_jobs_resume_on_retry_to_identical_artifacts(slurm, tmp_path):
    """Preemption on the real SLURM: a search job is signalled mid-round and a training job mid-epoch (both at
    once); each checkpoints and exits 75, Snakemake's retry resubmits it, it resumes from its checkpoint, and
    search.json and model.pt equal, byte for byte, those of an uninterrupted local run."""
    configs = ["--configfile", "tests/configs/tiny.yaml", "tests/configs/preempt.yaml"]
    search_run, train_run = (f"results/tiny/synthetic/{m}/cells5/seed0" for m in ("metantk", "metanas"))
    targets = [f"{search_run}/search.json", f"{train_run}/model.pt"]
    wd = _copy(tmp_path / "preempt")
    # their inputs (prepared data, the published cell) locally: the test is about the two long jobs
    inputs = _snakemake(wd, f"{train_run}/genotype.json", "--cores", "1", *configs)
    assert inputs.returncode == 0, inputs.stderr[-3000:]
    local = tmp_path / "local"
    shutil.copytree(wd, local)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen([str(BIN / "snakemake"), *targets, "--profile", "tests/slurm/profile", "--retries", "2",
                             *configs], cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        jobs = _signal_jobs_when({"search": wd / search_run / "search_state.json",
                                  "train": wd / train_run / "checkpoints/ckpt_last.pt"}, proc)
        out, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-4000:]
    comp = _jobcomp()
    for rule, job in jobs.items():
        assert comp[job]["JobState"] == "FAILED", comp[job]     # the inner Snakemake exits 1 after the script's 75
        log = next((wd / ".snakemake/slurm_logs" / f"rule_{rule}").rglob(f"{job}.log")).read_text()
        assert "exit status 75" in log, log[-3000:]
    resumed = json.loads((wd / search_run / "cost.json").read_text())["resumed_at"]
    assert len(resumed) == 1 and re.fullmatch(r"\d+ candidates of round 0", resumed[0]), resumed
    assert int(resumed[0].split()[0]) > 0                        # mid-round
    resumed = json.loads((wd / train_run / "metrics.json").read_text())["resumed_at"]
    assert len(resumed) == 1 and resumed[0]["step"] > 0, resumed  # mid-epoch
    done = _snakemake(local, *targets, "--cores", "2", *configs)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((local / train_run / "metrics.json").read_text())["resumed_at"] == []
    for name in (f"{search_run}/search.json", f"{train_run}/model.pt"):
        assert (wd / name).read_bytes() == (local / name).read_bytes(), name
