#!/usr/bin/env python
"""Paper-size rehearsal: every stage script run once on mini-ImageNet-shaped data at its true size, shortened in
length only, with each stage's wall time, peak memory and the extrapolation to the whole stage.

The data: RFS pickles (`miniImageNet_category_split_*.pickle`, latin1-compatible protocol 2, `data` (N, 84, 84, 3)
uint8, `labels`, `catname2label`) with 64/16/20 classes of 600 images, written by the embedded synthetic generator
(never committed; 1.3 GB under --work). Then the real stage scripts, as Snakemake runs them, each as its own process:

  prepare_data      in full (the safe unpickler, the reader, the memory-mapped prepared format)
  export_genotype   the published MetaNAS cell (the genotype trained and evaluated below)
  search            metantk, C=48, the first --candidates candidates of round 0 (`--stop-after`: it checkpoints and
                    exits 75 as a preempted search); full stage = start-up + every candidate at round 0's cost
                    (an upper bound: later rounds have fewer ops alive)
  train             --steps steps at the paper batch (`--stop-after`, exit 75); full stage = start-up + the recipe's
                    epochs x steps per epoch at the cost per step measured after --warmup-steps (default 20 after 5:
                    the first steps carry cuDNN's algorithm search and the allocator's growth)
  evaluate          --episodes episodes per shot setting on the trained weights; full stage = start-up + the query
                    features of every test image the paper's episodes query, at the measured cost per image + the
                    per-episode part (support features, solver) times evaluate.episodes

Wall time is the process's (imports included); peak RSS (VmHWM) and peak CUDA memory from the stage's last log
line (`peak memory: ...`, written by every stage script). The table is printed and written to {work}/rehearsal.md and .json,
and with --doc into that markdown file between `<!-- rehearsal:begin -->` and `<!-- rehearsal:end -->`.

  .venv/bin/python bench/rehearsal.py --episodes 10 --ratios          # paper size, CPU, with the ratios: 2 cores, ~30 min
  .venv/bin/python bench/rehearsal.py --device cuda --doc docs/benchmarks.md
  .venv/bin/python bench/rehearsal.py --size tiny --work /tmp/r        # the smoke config's networks on 2000 images (tests)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from benchlib import ROOT, clock, stage_env  # first: src/ on the path, a clock that waits for the GPU

from metantk_nas.config import eval_config, load_config, search_config, train_config  # noqa: E402
from metantk_nas.data.readers import MINI_FILES  # noqa: E402
from metantk_nas.data.synthetic import SyntheticSpec, generate  # noqa: E402
from metantk_nas.preemption import EXIT_REQUEUE  # noqa: E402

log = logging.getLogger("rehearsal")
PEAK = re.compile(r"peak memory: RSS (\d+) MiB(?:, CUDA (\d+) MiB allocated \((\d+) MiB reserved\))?")
QUERY = re.compile(r"query features of (\d+) test images: ([\d.]+) s")
SHOT = re.compile(r"(\d+)-shot, (\d+) episodes: support features ([\d.]+) s, solver ([\d.]+) s")
UNIT_DONE = re.compile(r"--stop-after: .+? (\d+) of \d+ done at ([\d.]+) s")
SIZES = {"paper": 600, "tiny": 20}   # images per class (tiny: 5 shots + the smoke config's 15 queries)
SEED, PUBLISHED = 0, "metanas_in_v2"


@dataclass
class StageRun:
    stage: str
    work: str             # what ran
    rc: int
    wall_s: float
    rss_mib: float        # peak resident set of the process
    cuda_mib: float | None  # peak CUDA memory reserved by torch's allocator (None on the CPU)
    full_s: float | None  # the whole stage, extrapolated (None: it ran in full)
    basis: str            # how full_s was computed
    request_mem_mb: int
    request_runtime_min: int


def write_mini_pickles(raw: Path, per_class: int) -> float:
    """mini-ImageNet's three RFS pickles with ``per_class`` synthetic 84x84 images per class; skipped when the same
    size is already there.  Returns the seconds it took."""
    marker = raw / "rehearsal.json"
    spec = SyntheticSpec(images_per_class=per_class, image_size=84)
    if marker.exists() and json.loads(marker.read_text()) == asdict(spec):
        return 0.0
    t0 = clock()
    raw.mkdir(parents=True, exist_ok=True)
    offset = 0
    for split, raw_split in generate(spec).items():
        n = len(raw_split.class_names)
        names = [f"n{offset + c:08d}" for c in range(n)]   # wnid-like category names
        obj = {"data": raw_split.images, "labels": (raw_split.labels + offset).tolist(),
               "catname2label": {name: offset + c for c, name in enumerate(names)}}
        tmp = raw / (MINI_FILES[split] + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        tmp.replace(raw / MINI_FILES[split])
        offset += n
    marker.write_text(json.dumps(asdict(spec)))
    return clock() - t0


def unit_times(text: str) -> list[float]:
    """The ``--stop-after`` log lines' times: element k-1 is when unit k ended (seconds since the run started it)."""
    return [float(t) for _, t in sorted((int(k), t) for k, t in UNIT_DONE.findall(text))]


def per_unit(times: list[float], warmup: int) -> tuple[float, int, str]:
    """Seconds per unit after ``warmup`` units (the first steps carry cuDNN's algorithm search and the allocator's
    growth), how many units that is, and how it was computed; every unit where there are no more than ``warmup``."""
    n = len(times)
    if n > warmup > 0:
        per = (times[-1] - times[warmup - 1]) / (n - warmup)
        return per, n - warmup, f"{n - warmup} after {warmup} warm-up ({times[warmup - 1]:.1f} s, not counted)"
    return times[-1] / n, n, f"all {n} (no warm-up excluded: --steps <= --warmup-steps)"


def run_stage(cmd: list[str], log_path: Path) -> tuple[int, float, float, float | None, str]:
    """Run one stage script; exit status, wall seconds, peak RSS and peak CUDA memory reserved (MiB, from the
    stage's last log line: its VmHWM, counted from its exec) and its log."""
    env = {**stage_env(), "PYTHONUNBUFFERED": "1"}
    t0 = clock()
    with open(log_path, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode
    wall = clock() - t0
    text = log_path.read_text()
    peak = PEAK.findall(text)
    if not peak:
        expect(rc, -1, Path(cmd[1]).stem, text)   # no peak line: the stage failed before its end
    rss, _, reserved = peak[-1]
    return rc, wall, float(rss), float(reserved) if reserved else None, text


def expect(rc: int, want: int, stage: str, text: str) -> None:
    if rc != want:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise SystemExit(f"rehearsal: {stage} exited {rc}, expected {want}:\n{tail}")


def overlay(work: Path, size: str, device: str, episodes: int) -> list[str]:
    """The config files: the paper config (tiny: plus the smoke config's small networks), the rehearsal's data."""
    over = {"experiment": f"rehearsal-{size}", "device": device,
            "data": {"prepared_root": str(work / "prepared"),
                     "datasets": {"mini": {"format": "mini_imagenet", "source": str(work / "raw")}}},
            "evaluate": {"episodes": episodes}}
    path = work / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(over, sort_keys=False))
    files = [str(ROOT / "config/config.yaml")] + ([str(ROOT / "config/smoke.yaml")] if size == "tiny" else [])
    return files + [str(path)]


def rehearse(args: argparse.Namespace) -> list[StageRun]:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log.info("data: %d images per class, 84x84, under %s", SIZES[args.size], work / "raw")
    gen_s = write_mini_pickles(work / "raw", SIZES[args.size])
    if gen_s:
        log.info("wrote the RFS pickles in %.1f s", gen_s)
    configs = overlay(work, args.size, args.device, args.episodes)
    cfg = load_config(configs)
    res = cfg["resources"]["stages"]
    py = sys.executable
    common = ["--configfile", *configs]
    cells = args.cells
    run_args = ["--dataset", "mini", "--cells", str(cells), "--seed", str(SEED), "--no-progress"]
    prepared, geno, search_out, train_out = (work / d for d in ("prepared/mini", "genotype", "search", "train"))
    runs: list[StageRun] = []

    def record(stage: str, work_desc: str, rc: int, wall: float, rss: float, cuda: float | None,
               full: float | None, basis: str) -> None:
        runs.append(StageRun(stage, work_desc, rc, round(wall, 1), round(rss), cuda, None if full is None else
                             round(full, 1), basis, res[stage]["mem_mb"], res[stage]["runtime"]))
        log.info("%s: %s in %.1f s, peak RSS %.0f MiB%s", stage, work_desc, wall, rss,
                 "" if cuda is None else f", CUDA {cuda:.0f} MiB")

    # prepare_data, in full (a fresh output: the stage skips unchanged work)
    shutil.rmtree(prepared, ignore_errors=True)
    rc, wall, rss, cuda, text = run_stage([py, "scripts/prepare_data.py", *common, "--dataset", "mini",
                                           "--out", str(prepared)], work / "prepare_data.log")
    expect(rc, 0, "prepare_data", text)
    manifest = json.loads((prepared / "manifest.json").read_text())
    counts = {s: v["n"] for s, v in manifest["splits"].items()}
    record("prepare_data", f"3 splits, {sum(counts.values())} images", rc, wall, rss, cuda, None,
           "ran in full")

    rc, wall, rss, cuda, text = run_stage([py, "scripts/export_genotype.py", *common, "--published", PUBLISHED,
                                           "--out", str(geno)], work / "export_genotype.log")
    expect(rc, 0, "export_genotype", text)
    record("export_genotype", f"published cell {PUBLISHED}", rc, wall, rss, cuda, None, "ran in full")

    # search: the first K candidates of round 0, then a checkpoint and exit 75
    shutil.rmtree(search_out, ignore_errors=True)
    rc, wall, rss, cuda, text = run_stage([py, "scripts/search.py", *common, *run_args, "--method", "metantk",
                                           "--prepared", str(prepared), "--out", str(search_out),
                                           "--stop-after", str(args.candidates)], work / "search.log")
    expect(rc, EXIT_REQUEUE, "search", text)
    state = json.loads((search_out / "search_state.json").read_text())
    finished = state["rounds"] + state["partial"].get("records", [])   # rounds, node groups done (tiny: batched)
    done = sum(len(r["candidates"]) for r in finished) + len(state["partial"]["scores"])
    in_work = sum(state["seconds"]) + float(state["partial"]["seconds"])
    sc = search_config(cfg, "mini", "metantk", cells, SEED)
    from metantk_nas.search.pruning import PruningSearch, initial_mask
    total = PruningSearch(sc, None).total_candidates(initial_mask(sc.ops))
    per = in_work / done
    record("search", f"{done} of {total} candidates", rc, wall, rss, cuda, wall - in_work + total * per,
           f"start-up {wall - in_work:.1f} s + {total} x {per:.2f} s")

    # train: N steps at the paper batch, then a checkpoint and exit 75
    shutil.rmtree(train_out, ignore_errors=True)
    rc, wall, rss, cuda, text = run_stage([py, "scripts/train.py", *common, *run_args, "--method", "metanas",
                                           "--genotype", str(geno / "genotype.json"), "--prepared", str(prepared),
                                           "--out", str(train_out), "--stop-after", str(args.steps)],
                                          work / "train.log")
    expect(rc, EXIT_REQUEUE, "train", text)
    import torch
    ck = torch.load(train_out / "checkpoints" / "ckpt_last.pt", map_location="cpu", weights_only=True)
    times = unit_times(text)
    tc = train_config(cfg, "mini", cells, SEED)
    per_epoch = counts["train"] // tc.batch_size
    per, _, how = per_unit(times, args.warmup_steps)
    startup = wall - times[-1]
    record("train", f"{len(times)} steps of {per_epoch * tc.epochs} (batch {tc.batch_size})", rc, wall, rss, cuda,
           startup + per_epoch * tc.epochs * per,
           f"start-up {startup:.1f} s + {tc.epochs} x {per_epoch} x {per:.3f} s per step ({how})")
    torch.save(ck["model"], train_out / "model.pt")
    (train_out / "metrics.json").write_text(json.dumps({"channels": tc.channels, "cells": cells, "n_classes":
                                                         len(manifest["splits"]["train"]["classes"])}))

    # evaluate: E episodes per shot setting on those weights
    rc, wall, rss, cuda, text = run_stage([py, "scripts/evaluate.py", *common, *run_args, "--method", "metanas",
                                           "--model", str(train_out / "model.pt"), "--genotype",
                                           str(geno / "genotype.json"), "--prepared", str(prepared),
                                           "--out", str(train_out)], work / "evaluate.log")
    expect(rc, 0, "evaluate", text)
    shots = [(int(s), int(e), float(a) + float(b)) for s, e, a, b in SHOT.findall(text)]
    queried, query_s = QUERY.search(text).groups()
    full = load_config([str(ROOT / "config/config.yaml")])["evaluate"]["episodes"]   # the paper's 1000
    paper_eval = replace(eval_config(cfg), episodes=full)                             # this run's settings otherwise
    from metantk_nas.data.prepared import load_split
    from metantk_nas.fsl.evaluate import query_images
    all_queried = len(query_images(load_split(prepared, "test"), paper_eval))   # at evaluate.episodes
    ran = shots[0][1]
    per_episode = sum(t / e for _, e, t in shots)
    rest = wall - float(query_s) - sum(t for *_, t in shots)
    record("evaluate", f"{ran} of {paper_eval.episodes} episodes x {len(shots)} shot settings ({queried} of "
           f"{all_queried} query images)", rc, wall, rss, cuda,
           rest + float(query_s) * all_queried / int(queried) + paper_eval.episodes * per_episode,
           f"start-up {rest:.1f} s + {all_queried} query images x {float(query_s) / int(queried):.3f} s + "
           f"{paper_eval.episodes} x {per_episode:.3f} s per episode (both shot settings)")
    return runs


RATIO_BENCHES = [   # (what, script, its arguments after --device; {prepared}: the rehearsal's prepared data)
    ("training step", "bench/train_step.py", ["--prepared", "{prepared}", "--steps", "3"]),
    ("evaluation (features + solver)", "bench/evaluate_stage.py", ["--prepared", "{prepared}", "--episodes", "2"]),
    ("search candidate", "bench/search.py", ["--candidates", "2"]),
]


def ratios(work: Path, device: str) -> str:
    """Each benchmark's own report (ours against the original's procedure on the same work, in one run)."""
    out = []
    for what, script, extra in RATIO_BENCHES:
        cmd = [sys.executable, script, "--device", device, *[a.format(prepared=work / "prepared/mini") for a in extra]]
        log.info("ratio, %s: %s", what, " ".join(cmd[1:]))
        t0 = clock()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=stage_env())
        if proc.returncode != 0:
            raise SystemExit(f"rehearsal: {script} failed:\n{proc.stderr[-3000:]}")
        out.append(f"`{' '.join(cmd[1:])}` ({clock() - t0:.0f} s):\n\n```\n{proc.stdout.strip()}\n```\n")
    return "\n".join(out)


def hours(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def table(runs: list[StageRun], header: str) -> str:
    lines = [header, "", "| stage | work run | wall | peak RSS | peak CUDA | whole stage (extrapolated) | how | "
             "request: memory, time |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.stage} | {r.work} | {r.wall_s:.1f} s | {r.rss_mib:.0f} MiB | "
                     f"{'' if r.cuda_mib is None else f'{r.cuda_mib:.0f} MiB'} | {hours(r.full_s)} | {r.basis} | "
                     f"{r.request_mem_mb} MB, {r.request_runtime_min} min |")
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, text: str) -> None:
    begin, end = "<!-- rehearsal:begin -->", "<!-- rehearsal:end -->"
    old = doc.read_text()
    block = f"{begin}\n{text}{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="paper",
                   help="paper: 600 images per class and the paper config; tiny: 20 per class and the smoke "
                        "config's networks (tests)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--cells", type=int, choices=[5, 8], default=5, help="cells of the searched and trained networks")
    p.add_argument("--candidates", type=int, default=2, help="search candidates of round 0 to run (default 2)")
    p.add_argument("--steps", type=int, default=25, help="training steps to run (default 25)")
    p.add_argument("--warmup-steps", type=int, default=5,
                   help="of those, the first ones left out of the time per step (default 5: 20 timed after 5)")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per shot setting (default 100)")
    p.add_argument("--work", default=None, help="data and outputs (default /tmp/metantk-rehearsal-<size>)")
    p.add_argument("--ratios", action="store_true",
                   help="then bench/train_step.py, bench/evaluate_stage.py and bench/search.py at paper size: ours "
                        "against the original's procedures (bench/search.py reads the smoke data: run make demo first)")
    p.add_argument("--doc", default=None, help="also write the table into this markdown file (docs/benchmarks.md)")
    args = p.parse_args(argv)
    args.work = args.work or f"/tmp/metantk-rehearsal-{args.size}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import platform

    import torch
    t0 = clock()
    runs = rehearse(args)
    machine = (f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__}"
               + (f", {torch.cuda.get_device_name()}" if args.device != "cpu" and torch.cuda.is_available() else ""))
    header = (f"Rehearsal ({args.size} size, device {args.device}, {time.strftime('%Y-%m-%d')}, {machine}; "
              f"`bench/rehearsal.py --size {args.size} --device {args.device} --cells {args.cells} --candidates {args.candidates} "
              f"--steps {args.steps} --warmup-steps {args.warmup_steps} --episodes {args.episodes}`, "
              f"{clock() - t0:.0f} s in all):")
    text = table(runs, header)
    print(text)
    work = Path(args.work)
    (work / "rehearsal.md").write_text(text)   # before the ratios, which take minutes more
    if args.ratios:
        text += "\nOurs against the original's procedures on the same work:\n\n" + ratios(work, args.device)
        print(text)
        (work / "rehearsal.md").write_text(text)
    (work / "rehearsal.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    if args.doc:
        write_doc(Path(args.doc), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
