"""Integration: the Snakemake DAG end to end on the tiny config, the provenance audit, and DVC."""
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    assert 0 <= few["acc_1shot"] <= 100 and len(few["results"]["5shot"]["per_episode"]) == 10


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


def test_dvc_repro_prepare_data_then_no_op(tmp_path):
    wd = _copy_tree(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    shutil.copytree(ROOT / "src", wd / "src")
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q",
                                          "--allow-empty", "-m", "init"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=wd, check=True, env=env, capture_output=True)
    run_script(ROOT / "scripts/make_dvc.py", "--configfile", "config/config.yaml", "tests/configs/tiny.yaml",
               "--out", "dvc.yaml", cwd=wd)
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


def test_dvc_stages_match_the_snakemake_jobs(tiny_run, tmp_path):
    """The same nodes: every Snakemake job of the tiny DAG has exactly one DVC stage (after naming)."""
    import yaml
    from metantk_nas.config import iter_runs, load_config

    run_script(ROOT / "scripts/make_dvc.py", "--configfile", "config/config.yaml", "tests/configs/tiny.yaml",
               "--out", tmp_path / "dvc.yaml", cwd=tiny_run)
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    dvc_nodes = set()
    for name, st in stages.items():
        items = st.get("foreach")
        dvc_nodes |= {f"{name}@{k}" for k in (items if isinstance(items, (list, dict)) else [])} if items else {name}
    cfg = load_config([ROOT / "config/config.yaml", ROOT / "tests/configs/tiny.yaml"])
    smk_nodes = {"prepare_data@synthetic", "tables"}
    for r in iter_runs(cfg):
        if r.method == "metanas":
            smk_nodes.add(f"published_genotype@{r.tag}")
        else:
            smk_nodes |= {f"search@{r.tag}", f"export_genotype@{r.tag}"}
        smk_nodes |= {f"train@{r.tag}", f"evaluate@{r.tag}"}
    assert dvc_nodes == smk_nodes
    # and Snakemake ran exactly those jobs
    log = "".join(p.read_text() for p in (tiny_run / ".snakemake/log").glob("*.log"))
    ran = {line.split("rule ")[1].rstrip(":") for line in log.splitlines() if line.strip().startswith(("rule ", "localrule "))}
    assert ran - {"all"} == {n.split("@")[0] for n in smk_nodes}


def test_snakemake_report_has_tables_cells_and_training_curves(tiny_run):
    snakemake("--report", "report.html", "--configfile", "tests/configs/tiny.yaml", cwd=tiny_run)
    html = (tiny_run / "report.html").read_text(errors="replace")
    assert (tiny_run / "results/tiny/synthetic/metantk/cells5/seed0/train_curve.png").stat().st_size > 1000
    for needle in ("train_curve.png", "cell_normal.png", "table1.csv", "Training curves"):
        assert needle in html, needle

