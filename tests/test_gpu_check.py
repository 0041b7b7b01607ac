"""make gpu-check at tiny size on the CPU (issue 33): what a CUDA machine runs, so the script cannot rot."""
import os
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.integration


def test_make_gpu_check_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "gpu-check.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check",
                           f"GPU_CHECK=--device cpu --size tiny --cores 2 --work {tmp_path / 'w'} --out {out}"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.read_text().splitlines() if line.startswith("| ")}
    assert "tiny DAG (Snakemake, tests/configs/tiny.yaml)" in rows
    assert "4 runs searched, trained and evaluated; tables 1 and 2" in rows["tiny DAG (Snakemake, tests/configs/tiny.yaml)"]
    for stage in ("prepare_data", "export_genotype", "search", "train", "evaluate"):
        assert f"stage {stage}" in rows, stage
    for bench in ("bench/kernels.py", "bench/search.py", "bench/evaluate.py"):
        assert "ratio" in rows[bench] or "original/this" in rows[bench], rows[bench]
    assert out.read_text() in proc.stdout                      # printed as written
