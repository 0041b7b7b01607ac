"""Integration: DVC on repositories of their own (tests/dvc_helpers.py): DVC's stage graph against Snakemake's job
graph, prepare_data and a tampered file, a changed raw byte in both engines, the shipped dvc.yaml, and the README's
DVC walkthrough as written (the demo's record of a Snakemake run included)."""
import re
import subprocess

import pytest
import yaml

from helpers import ROOT, git_dirty, run_script, snakemake
from helpers import BARE_ENV, DVC_RUN, STUDY, _dvc_repo, bare, dvc, ran_stages

pytestmark = pytest.mark.integration


def snakemake_dag(wd, *configfiles: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Jobs and edges of `snakemake --dag --forceall all study`, each job named as its DVC stage.

    A dot label shows only the wildcards a job does not share with its dependencies, so a job's wildcards are
    collected from its label and those of all its ancestors."""
    from metantk_nas.config import Run

    dot = snakemake("--dag", "--forceall", "--cores", "1", "all", "study", "--configfile", *configfiles,
                    cwd=wd).stdout
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


@pytest.mark.parametrize("configs", [("tests/configs/tiny.yaml",), DVC_RUN], ids=["tiny", "dvc-run"])
def test_dvc_dag_equals_the_snakemake_dag(configs, tmp_path):
    """Same nodes and the same edges: DVC's stage graph (`dvc dag --dot`) against Snakemake's job graph for the
    same config, after naming: the whole tiny DAG (every method) and the reproduced repository's."""
    wd = _dvc_repo(tmp_path / "repo", configs)
    dot = dvc(wd, "dag", "--dot").stdout
    dvc_nodes = {bare(n) for n in re.findall(r'^"([^"]+)";$', dot, flags=re.M)}
    dvc_edges = {(bare(a), bare(b)) for a, b in re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, flags=re.M)}
    smk_nodes, smk_edges = snakemake_dag(wd, *configs)
    assert smk_nodes == dvc_nodes
    assert smk_edges == dvc_edges
    assert {("train@synthetic-metanas-5-0", "evaluate@synthetic-metanas-5-0"),
            ("published_genotype@synthetic-metanas-5-0", "train@synthetic-metanas-5-0"),
            ("prepare_data@synthetic", "search@synthetic-metantk-5-0")} <= dvc_edges


def test_dvc_repro_prepare_data_then_no_op(tmp_path):
    wd = _dvc_repo(tmp_path / "repo")
    assert "prepare_data@synthetic" in ran_stages(dvc(wd, "repro", "prepare_data@synthetic"))
    assert (wd / "data/prepared-tiny/synthetic/manifest.json").exists()
    second = dvc(wd, "repro", "prepare_data@synthetic")
    assert "didn't change, skipping" in second.stdout, second.stdout
    # tamper with a prepared file: dvc status and the audit name the same file
    victim = "data/prepared-tiny/synthetic/train_images.npy"
    with open(wd / victim, "ab") as f:
        f.write(b"\0")
    status = dvc(wd, "status", "prepare_data@synthetic")
    assert "modified" in status.stdout and victim in status.stdout, status.stdout
    flags = ["--allow-dirty"] if git_dirty() else []
    proc = run_script(ROOT / "scripts/audit.py", victim, "--quiet", *flags, cwd=wd, check=False)
    named = {line.split(":")[1].strip() for line in proc.stderr.splitlines() if line.startswith("audit:")}
    assert proc.returncode == 1 and named == {victim}, proc.stderr


RAW = """data:
  prepared_root: data/prepared-raw
grid:
  - {dataset: mini, methods: [random], cells: [5], seeds: [0]}
tables:
  datasets: [mini]
study:
  datasets: [mini]
"""


def test_one_changed_raw_byte_reruns_prepare_data_in_both_engines(tmp_path):
    """The raw RFS pickles are prepare_data's input in Snakemake and in dvc.yaml: after preparing a fabricated
    miniImageNet, one changed pixel in one pickle makes both engines rerun prepare_data@mini."""
    from helpers import fake_images, write_pickle
    from metantk_nas.data.readers import MINI_FILES

    import numpy as np

    wd = tmp_path / "repo"
    wd.mkdir()
    (wd / "raw.yaml").write_text(RAW)
    raw = wd / "data/raw/miniImageNet"
    rng = np.random.default_rng(0)
    data = {}
    for split, off in (("train", 0), ("val", 64), ("test", 80)):
        labels = [off + c for c in range(5) for _ in range(4)]
        data[split] = {"data": fake_images(rng, len(labels), 84), "labels": labels,
                       "catname2label": {f"n{l:08d}": l for l in sorted(set(labels))}}
        write_pickle(raw / MINI_FILES[split], data[split])
    wd = _dvc_repo(wd, ("tests/configs/tiny.yaml", "raw.yaml"))
    manifest = "data/prepared-raw/mini/manifest.json"
    dvc(wd, "repro", "prepare_data@mini")
    configs = ["--configfile", "tests/configs/tiny.yaml", "raw.yaml"]   # last: it takes several files
    snakemake(manifest, "--cores", "1", *configs, cwd=wd)
    assert "up to date" in dvc(wd, "status", "prepare_data@mini").stdout
    assert "Nothing to be done" in snakemake("-n", manifest, "--cores", "1", *configs, cwd=wd).stdout
    data["val"]["data"][0, 0, 0, 0] ^= 1                                 # one pixel of one image, one bit
    write_pickle(raw / MINI_FILES["val"], data["val"])
    status = dvc(wd, "status", "prepare_data@mini").stdout
    assert "modified" in status and "data/raw/miniImageNet" in status, status
    plan = snakemake("-n", "all", "--cores", "1", *configs, cwd=wd).stdout
    assert re.search(r"^prepare_data\s+1$", plan, flags=re.M) and re.search(r"^train\s+1$", plan, flags=re.M), plan
    raw.rename(wd / "data/raw/moved")                                 # the raw directory missing: both engines name it
    assert re.search(r"deleted:\s+data/raw/miniImageNet", dvc(wd, "status", "prepare_data@mini").stdout)
    assert "config key data.datasets.mini.source" in dvc(wd, "stage", "list", "prepare_data@mini").stdout
    dry = snakemake("-n", "all", "--cores", "1", *configs, cwd=wd, check=False)
    assert dry.returncode != 0 and "data.datasets.mini.source" in dry.stdout + dry.stderr


def test_dvc_yaml_is_generated_from_the_smoke_config_and_the_study_is_opt_in(tmp_path):
    """The shipped dvc.yaml is the smoke config's; no study/dvc.yaml ships (DVC's `dvc status` would list its unrun
    stages after the demo); --study writes it, and once it exists a plain run keeps it current."""
    smoke = ("--configfile", "config/config.yaml", "config/smoke.yaml", "--out", tmp_path / "dvc.yaml")
    run_script(ROOT / "scripts/make_dvc.py", *smoke)
    assert (tmp_path / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()
    assert not (tmp_path / STUDY).exists() and not (ROOT / STUDY).exists()
    run_script(ROOT / "scripts/make_dvc.py", *smoke, "--study")
    stages = yaml.safe_load((tmp_path / STUDY).read_text())["stages"]
    assert {"study_score", "study"} <= set(stages) and "smoke.yaml" in stages["study"]["cmd"]
    tiny = ("--configfile", "config/config.yaml", "tests/configs/tiny.yaml", "--out", tmp_path / "dvc.yaml")
    refused = run_script(ROOT / "scripts/make_dvc.py", *tiny, check=False)   # another config's DAG over it: asked for
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"error: {tmp_path / 'dvc.yaml'} was generated from config/config.yaml config/smoke.yaml, this run's config is "
        "config/config.yaml tests/configs/tiny.yaml: add --force to replace it, or write another file (--out)")
    run_script(ROOT / "scripts/make_dvc.py", *tiny, "--force")
    assert "tiny.yaml" in yaml.safe_load((tmp_path / STUDY).read_text())["stages"]["study"]["cmd"]


def readme_dvc_lines() -> list[str]:
    """The commands of the README's DVC walkthrough (its first bash block), comments removed."""
    text = (ROOT / "README.md").read_text().split("## Run with DVC", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def sh(wd, line: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", line], cwd=wd, env=BARE_ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{line}: " + proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_the_readmes_dvc_walkthrough_runs_as_written(tmp_path):
    """Every line of the README's DVC walkthrough, as written, in a fresh repository of the tiny DAG with no venv
    on PATH. `make demo` is what its recipe does (the Snakemake run, then scripts/dvc_record); the remote is a local
    folder instead of /shared/metantk-dvc; `dvc pull` runs "elsewhere": in a git clone, which then audits clean."""
    lines = readme_dvc_lines()
    assert lines[0] == "make demo" and "scripts/dvc_record" in (ROOT / "Makefile").read_text()
    assert lines[-1].startswith(".venv/bin/python scripts/make_dvc.py --configfile config/config.yaml")
    wd = _dvc_repo(tmp_path / "repo", study=False)   # as cloned: the study's pipeline is opt-in
    (wd / ".gitignore").write_text(".snakemake/\ncheckpoints/\nlogs/\n")
    snakemake("--cores", "2", "--configfile", *DVC_RUN, cwd=wd)
    sh(wd, "DVC=.venv/bin/dvc scripts/dvc_record")
    remote = tmp_path / "remote"
    for line in lines[1:-1]:
        line = line.replace("/shared/metantk-dvc", str(remote)).replace("config/smoke.yaml", " ".join(DVC_RUN))
        if line == ".venv/bin/dvc pull":   # elsewhere: a clone of the repository, its outputs from the remote
            sh(wd, "git add -A && git -c user.email=t@t -c user.name=t commit -q -m results")
            clone = tmp_path / "clone"
            subprocess.run(["git", "clone", "-q", str(wd), str(clone)], check=True, env=BARE_ENV)
            assert not (clone / "results/tiny/tables/table1.tex").exists()   # DVC ignores its outputs in git
            sh(clone, line)
            flags = " --allow-dirty" if git_dirty() else ""   # strict on a clean checkout (CI)
            audit = sh(clone, f".venv/bin/python scripts/audit.py results/tiny/tables/table1.tex --quiet{flags}")
            assert "OK" in audit.stdout, audit.stdout + audit.stderr
            continue
        proc = sh(wd, line)
        if line == ".venv/bin/dvc status":
            assert "Data and pipelines are up to date." in proc.stdout, proc.stdout
        elif line == ".venv/bin/dvc repro":
            assert ran_stages(proc) == set(), proc.stdout
        elif line == ".venv/bin/dvc repro study/dvc.yaml":
            assert {bare(s) for s in ran_stages(proc)} >= {"study"}, proc.stdout
        elif line.startswith(".venv/bin/dvc metrics show") or line.startswith(".venv/bin/dvc plots show"):
            assert "failed" not in proc.stderr.lower(), proc.stderr
    assert "up to date" in dvc(wd, "status").stdout   # the study ran: now every stage is
