#!/usr/bin/env python
"""make gpu-check: the CUDA path in one command, each part timed, into one table.

  1. the tiny DAG (tests/configs/tiny.yaml: every stage, four methods) through Snakemake with `device: <device>`,
     in a scratch copy of the pipeline, at most one GPU job at a time (--resources gpu=1); its tables must exist
  2. bench/rehearsal.py: the stage scripts on mini-ImageNet-shaped data (paper: 600 images per class, the paper
     config, 2 search candidates, 1 training step, 100 evaluation episodes; tiny: 20 per class, the smoke networks)
     with each stage's time and peak CUDA memory
  3. bench/kernels.py, bench/search.py and bench/evaluate.py (paper: their paper-size defaults; tiny: C=4 networks,
     20 episodes of 32-d features), each ours against the original's procedure; their ratio lines are quoted

On a CUDA machine (`make gpu-check`, after installing a CUDA torch: README "GPU install"): about 8 minutes at paper
size. `make gpu-check GPU_CHECK="--device cpu --size tiny"` runs the same on the CPU in about two minutes, which
CI does (tests/test_gpu_check.py) so the script cannot rot. The table is printed and written to --out.

  python bench/gpu_check.py --device cuda --size paper --out results/gpu-check.md
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TREE = ["Snakefile", "workflow", "config", "scripts", "tests/configs"]   # what a Snakemake run of the tiny DAG reads
log = logging.getLogger("gpu_check")
BENCHES = {   # script: (paper-size arguments, tiny arguments), after --device (bench/evaluate.py: none, the
             # evaluation's solver works on CPU features wherever the network runs)
    "bench/kernels.py": ([], ["--channels", "4", "--size", "8", "--reps", "1"]),
    "bench/search.py": (["--candidates", "4"], ["--candidates", "1", "--channels", "4"]),
    "bench/evaluate.py": ([], ["--episodes", "20", "--dim", "32", "--repeats", "1"]),
}
RATIO = re.compile(r"ratio[^\n]*|original/this[^\n]*")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a command, raise with its output's tail if it fails; its wall time and output."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise SystemExit(f"gpu-check: {' '.join(map(str, cmd[:3]))} ... failed (exit {proc.returncode}):\n{tail}")
    return time.perf_counter() - t0, proc.stdout + proc.stderr


def tiny_dag(work: Path, device: str, cores: int) -> tuple[float, str]:
    dag = work / "dag"
    shutil.rmtree(dag, ignore_errors=True)
    for name in TREE:
        src = ROOT / name
        (dag / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dag / name)
    (dag / "device.yaml").write_text(yaml.safe_dump({"device": device}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    wall, _ = run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources", "gpu=1", "--configfile",
                   "tests/configs/tiny.yaml", "device.yaml", "--quiet", "all"], dag, env)
    tables = sorted(p.name for p in (dag / "results/tiny/tables").glob("table*.tex"))
    if tables != ["table1.tex", "table2.tex"]:
        raise SystemExit(f"gpu-check: the tiny DAG left no tables in {dag / 'results/tiny/tables'}")
    runs = len(list((dag / "results/tiny").rglob("fewshot.json")))
    return wall, f"{runs} runs searched, trained and evaluated; tables 1 and 2"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--size", choices=["paper", "tiny"], default="paper")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="Snakemake's cores for the tiny DAG")
    p.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed)")
    p.add_argument("--out", default="results/gpu-check.md", help="the table (default results/gpu-check.md)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        from metantk_nas.cli import CUDA_INSTALL
        raise SystemExit(f"gpu-check: torch {torch.__version__} has no CUDA device; install a CUDA build "
                         f"({CUDA_INSTALL}), or run it on the CPU: --device cpu --size tiny")
    t_all = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="metantk-gpu-check-")
    work = Path(args.work or tmp.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []   # part, time, peak CUDA, result

    log.info("1/3: the tiny DAG with device %s", args.device)
    wall, what = tiny_dag(work, args.device, args.cores)
    rows.append(("tiny DAG (Snakemake, tests/configs/tiny.yaml)", f"{wall:.0f} s", "", what))

    log.info("2/3: the stage scripts at %s size", args.size)
    reh = work / "rehearsal"
    episodes = "100" if args.size == "paper" else "3"
    run([sys.executable, "bench/rehearsal.py", "--size", args.size, "--device", args.device, "--candidates", "2",
         "--steps", "1", "--episodes", episodes, "--work", str(reh)], ROOT)
    for r in json.loads((reh / "rehearsal.json").read_text()):
        cuda = "" if r["cuda_mib"] is None else f"{r['cuda_mib']:.0f} MiB"
        rows.append((f"stage {r['stage']}", f"{r['wall_s']:.1f} s", cuda,
                     f"{r['work']}; peak RSS {r['rss_mib']:.0f} MiB" + (f"; whole stage ~{r['full_s'] / 3600:.2f} h"
                                                                         if r["full_s"] else "")))

    log.info("3/3: the benchmarks")
    for script, (paper, tiny) in BENCHES.items():
        extra = paper if args.size == "paper" else tiny
        if script == "bench/search.py":
            extra = [*extra, "--prepared", str(reh / "prepared/mini")]
        device = [] if script == "bench/evaluate.py" else ["--device", args.device]   # the solver runs on the CPU
        wall, out = run([sys.executable, script, *device, *extra], ROOT)
        rows.append((script, f"{wall:.0f} s", "", "; ".join(m.strip() for m in RATIO.findall(out)) or "(no ratio)"))

    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    header = (f"make gpu-check: {args.size} size on {device} ({args.device}), torch {torch.__version__}, "
              f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - t_all:.0f} s in all")
    text = "\n".join([header, "", "| part | time | peak CUDA | result |", "|---|---|---|---|",
                      *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]]) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
