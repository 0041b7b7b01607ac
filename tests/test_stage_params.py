"""Stage parameters proven by what each stage reads: every stage script of the tiny DAG run again with its config
read through a RecordingMapping; every key a stage reads is a result key (STAGE_PARAMS), an operational one
(OPERATIONAL_PARAMS) or a global one, and every entry names a key the stage reads.  Operational keys provably leave
the outputs unchanged; changing them reruns nothing in Snakemake (test_dvc.py: DVC)."""
import json
import re
import runpy
import shlex
import sys
from collections import defaultdict

import pytest

from helpers import ROOT, copy_tree, snakemake

pytestmark = pytest.mark.integration
CONFIGS = ["tests/configs/tiny.yaml", "tests/configs/stage-params.yaml"]
OVERLAY = "grid:\n  - {dataset: synthetic, methods: [metantk, tenas, linreg, random, metanas], cells: [5], seeds: [0]}\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny DAG with every searched method (tenas too), and its study, run by Snakemake."""
    wd = copy_tree(tmp_path_factory.mktemp("params"))
    (wd / CONFIGS[1]).write_text(OVERLAY)
    snakemake("--cores", "2", "--configfile", *CONFIGS, "--", "all", "study", cwd=wd)
    return wd


def stage_of(script: str, argv: list[str]) -> str:
    return f"study_{script}" if "--study" in argv and script in ("train", "evaluate") else script


def commands(wd) -> dict[str, list[list[str]]]:
    """Per stage, the argument lists of its jobs (one per search method, one of every other stage)."""
    proc = snakemake("-n", "-p", "--forceall", "--cores", "1", "--configfile", *CONFIGS, "--", "all", "study", cwd=wd)
    out: dict[str, list[list[str]]] = defaultdict(list)
    seen = set()
    for line in proc.stdout.splitlines():
        m = re.search(r"(scripts/(\w+)\.py .*?) 2> ", line)
        if not m:
            continue
        argv = shlex.split(m.group(1))
        stage = stage_of(m.group(2), argv)
        method = argv[argv.index("--method") + 1] if "--method" in argv else ("published" if "--published" in argv else "")
        if (stage, method) not in seen:
            seen.add((stage, method))
            out[stage].append(argv)
    return out


def reads_of(wd, argv, tmp_path, monkeypatch) -> set[str]:
    """Run one stage script in this process, as its job runs it but into a fresh output folder, with the config
    it loads wrapped in a RecordingMapping; the dotted keys it read."""
    from metantk_nas import cli
    from metantk_nas.config import RecordingMapping

    reads: set[str] = set()
    load = cli.load_config
    monkeypatch.setattr(cli, "load_config", lambda paths: RecordingMapping(load(paths), reads))
    if "--out" in argv:
        argv = list(argv)
        argv[argv.index("--out") + 1] = str(tmp_path / f"out{len(list(tmp_path.iterdir()))}")
    monkeypatch.chdir(wd)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(wd / argv[0]), run_name="__main__")
    assert e.value.code in (0, None), argv
    return reads


def covered(key: str, entries) -> bool:
    return any(key == e or key.startswith(e + ".") for e in entries)


def test_every_stage_reads_exactly_its_stage_parameters(tiny, tmp_path, monkeypatch):
    from metantk_nas.config import GLOBAL_KEYS, OPERATIONAL_PARAMS, STAGE_PARAMS

    jobs = commands(tiny)
    assert set(STAGE_PARAMS) <= set(jobs), set(STAGE_PARAMS) - set(jobs)
    assert len(jobs["search"]) == 4                                   # metantk, tenas, linreg, random
    problems = []
    for stage in STAGE_PARAMS:
        reads = set().union(*(reads_of(tiny, argv, tmp_path, monkeypatch) for argv in jobs[stage]))
        entries = (*STAGE_PARAMS[stage], *OPERATIONAL_PARAMS.get(stage, ()))
        problems += [f"{stage} reads {k}, which no entry covers" for k in sorted(reads)
                     if not covered(k, (*entries, *GLOBAL_KEYS))]
        problems += [f"{stage}'s entry {e} is never read" for e in entries
                     if not any(covered(k, [e]) or covered(e, [k]) for k in reads)]
    assert not problems, "\n".join(problems)


def test_operational_keys_are_not_in_the_hashes_and_result_keys_are(tiny):
    """The records' config_hash and Snakemake's params come from the result keys alone: changing the operational
    keys in a config file leaves Snakemake nothing to do; changing search.ops reruns the searches and what follows
    them, not prepare_data."""
    over = tiny / CONFIGS[1]
    try:
        over.write_text(OVERLAY + "search: {checkpoint_seconds: 0}\n")
        proc = snakemake("-n", "--cores", "1", "--configfile", *CONFIGS, "--", "all", "study", cwd=tiny)
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
        over.write_text(OVERLAY + "search: {ops: [conv_3x3, max_pool_3x3, avg_pool_3x3]}\n")
        proc = snakemake("-n", "--cores", "1", "--configfile", *CONFIGS, "--", "all", "study", cwd=tiny)
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
        assert counts["search"] == "7" and "prepare_data" not in counts, counts   # 4 methods + the study's 3
    finally:
        over.write_text(OVERLAY)
    record = json.loads(next((tiny / "results/tiny").rglob("search.json.prov.json")).read_text())
    assert "checkpoint_seconds" not in json.dumps(record["config"]) and "ops" in record["config"]["search"]


def test_the_search_result_does_not_depend_on_the_operational_keys(tiny, tmp_path):
    """search.checkpoint_seconds: the same search.json (tiny, metantk and tenas) with a checkpoint after every
    candidate as with the config's 5 s.  (search.ntk_chunk 3 instead of 16 moves dK values in their third
    decimal here, e.g. tenas -10.860 -> -10.863: a result key.)  One torch thread, as the DAG's jobs: another thread
    count is another reduction order."""
    from helpers import run_script

    over = tmp_path / "op.yaml"
    over.write_text("search: {checkpoint_seconds: 0}\n")
    for method in ("metantk", "tenas"):
        out = tmp_path / method
        run_script(ROOT / "scripts/search.py", "--configfile", "config/config.yaml", CONFIGS[0], CONFIGS[1], over,
                   "--dataset", "synthetic", "--method", method, "--cells", "5", "--seed", "0", "--threads", "1",
                   "--no-progress",
                   "--prepared", "data/prepared-tiny/synthetic", "--out", out, cwd=tiny)
        ours = json.loads((out / "search.json").read_text())
        theirs = json.loads((tiny / f"results/tiny/synthetic/{method}/cells5/seed0/search.json").read_text())
        ours.pop("seconds", None), theirs.pop("seconds", None)
        assert ours == theirs, method
