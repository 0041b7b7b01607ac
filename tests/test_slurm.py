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
