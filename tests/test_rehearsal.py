"""bench/rehearsal.py at tiny size: the real stage scripts on mini-ImageNet-shaped pickles, each stage's peak memory
within the request of the config it ran under, and the extrapolations recomputed from the stages' own files."""
import json
import os
import pickle
import re
import subprocess

import pytest
import torch

from metantk_nas.config import load_config

from helpers import PY, ROOT

pytestmark = pytest.mark.integration
EPISODES, STEPS, WARMUP = 3, 4, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = tmp_path_factory.mktemp("rehearsal")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([PY, "bench/rehearsal.py", "--size", "tiny", "--work", str(work), "--episodes",
                           str(EPISODES), "--steps", str(STEPS), "--warmup-steps", str(WARMUP)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, {r["stage"]: r for r in json.loads((work / "rehearsal.json").read_text())}, proc.stdout


def test_the_pickles_have_mini_imagenets_rfs_format(tiny):
    work, _, _ = tiny
    first = 0
    for name, classes in (("train_phase_train", 64), ("val", 16), ("test", 20)):
        with open(work / "raw" / f"miniImageNet_category_split_{name}.pickle", "rb") as f:
            obj = pickle.load(f, encoding="latin1")
        assert set(obj) == {"data", "labels", "catname2label"}
        assert obj["data"].shape == (classes * 20, 84, 84, 3) and obj["data"].dtype.name == "uint8"
        assert sorted(set(obj["labels"])) == list(range(first, first + classes)) == sorted(obj["catname2label"].values())
        first += classes


def test_no_stage_peak_is_above_its_request(tiny):
    """The tiny rehearsal runs the smoke config's networks: the smoke config's SLURM requests must hold them
    (mem_mb is SLURM's --mem, in MiB)."""
    _, runs, _ = tiny
    requests = load_config([ROOT / "config/config.yaml", ROOT / "config/smoke.yaml"])["resources"]["stages"]
    assert set(runs) == {"prepare_data", "export_genotype", "search", "train", "evaluate"}
    for stage, r in runs.items():
        assert 50 < r["rss_mib"] <= requests[stage]["mem_mb"], (stage, r["rss_mib"])
        assert r["wall_s"] <= 60 * requests[stage]["runtime"], stage
        assert r["cuda_mib"] is None                                    # a CPU run reports no CUDA peak


def test_extrapolations_from_the_stages_own_records(tiny):
    work, runs, stdout = tiny
    # search: the smoke config's 2 ops have 50 candidates in all (28 in round 0: 14 edges x 2 cells, then 22 in the
    # node groups: test_pruning.py counts them by hand); the stage's own state says how many ran in how long
    state = json.loads((work / "search" / "search_state.json").read_text())
    done = sum(len(r["candidates"]) for r in state["rounds"] + state["partial"].get("records", [])) \
        + len(state["partial"]["scores"])
    work_s = sum(state["seconds"]) + state["partial"]["seconds"]
    s = runs["search"]
    assert s["rc"] == 75 and 1 <= done < 50 and s["work"] == f"{done} of 50 candidates"
    assert s["full_s"] == pytest.approx(s["wall_s"] - work_s + 50 * work_s / done, abs=0.15)
    # train: stopped after exactly STEPS steps; 64 classes x 20 images / batch 64 = 20 steps per epoch, 100 epochs
    # (the paper's mini recipe)
    ck = torch.load(work / "train" / "checkpoints" / "ckpt_last.pt", map_location="cpu", weights_only=True)
    t = runs["train"]
    assert t["rc"] == 75 and (ck["epoch"], ck["step"]) == (0, STEPS) and t["work"].startswith(f"{STEPS} steps of 2000")
    # the time per step from the steps after the warm-up, as the training's own log lines time them
    times = [float(x) for x in re.findall(r"--stop-after: training step \d of 4 done at ([\d.]+) s",
                                          (work / "train.log").read_text())]
    assert len(times) == STEPS and times == sorted(times)
    per = (times[3] - times[1]) / 2
    assert t["full_s"] == pytest.approx(t["wall_s"] - times[3] + 2000 * per, abs=0.15)
    assert t["basis"].endswith(f"x {per:.3f} s per step (2 after 2 warm-up ({times[1]:.1f} s, not counted))")
    # evaluate: start-up + the query features of the images 1000 episodes query (per image as measured) + 1000 x
    # the per-episode cost it logged, per shot setting
    log = (work / "evaluate.log").read_text()
    n, q_s = re.search(r"query features of (\d+) test images: ([\d.]+) s", log).groups()
    shots = re.findall(r"(\d)-shot, (\d+) episodes: support features ([\d.]+) s, solver ([\d.]+) s", log)
    assert [(int(k), int(e)) for k, e, *_ in shots] == [(1, EPISODES), (5, EPISODES)]
    parts = sum(float(a) + float(b) for *_, a, b in shots)
    # 1000 episodes x 5 ways x 15 queries (the smoke config) in 20 images per class: every one of the 400 is queried
    e = runs["evaluate"]
    assert e["work"] == f"{EPISODES} of 1000 episodes x 2 shot settings ({n} of 400 query images)"
    assert e["full_s"] == pytest.approx(e["wall_s"] - float(q_s) - parts + float(q_s) * 400 / int(n)
                                        + 1000 * parts / EPISODES, abs=0.15)
    assert all(f"| {stage} |" in stdout for stage in runs)


def test_peak_rss_counts_from_the_stages_own_exec(tmp_path):
    """A child started by a process holding 300 MiB reports its own peak, not its parent's: getrusage's ru_maxrss
    carries the parent's resident set across fork and exec on Linux, /proc's VmHWM does not."""
    import numpy as np

    ballast = np.ones(300 * 2**20 // 8)                       # 300 MiB, touched
    out = subprocess.run([PY, "-c", "import resource; from metantk_nas.cli import peak_rss_mib; "
                          "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    own, carried = map(float, out.stdout.split())
    assert ballast.sum() > 0 and own < 200 < 300 < carried


def test_time_per_unit_leaves_the_warm_up_out():
    """By hand: units ending at 1, 2, 4, 7 and 11 s; after 2 warm-up units, 3 units took 11 - 2 = 9 s."""
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    from rehearsal import per_unit, unit_times

    assert per_unit([1.0, 2.0, 4.0, 7.0, 11.0], 2) == (3.0, 3, "3 after 2 warm-up (2.0 s, not counted)")
    assert per_unit([1.0, 2.0], 2) == (1.0, 2, "all 2 (no warm-up excluded: --steps <= --warmup-steps)")
    assert per_unit([4.0], 0)[0] == 4.0
    text = ("x --stop-after: training step 2 of 3 done at 2.500 s\n"
            "x --stop-after: training step 1 of 3 done at 1.250 s\nother line 3 of 4 done at 9 s\n")
    assert unit_times(text) == [1.25, 2.5]
