#!/usr/bin/env python
"""make gpu-check: the CUDA path in one command, each part timed, into one table.

  1. the tiny DAG (tests/configs/tiny.yaml: every stage, four methods) through Snakemake with `device: <device>`,
     in a scratch copy of the pipeline, at most one GPU job at a time (--resources gpu=1); its tables must exist
  2. bench/rehearsal.py: the stage scripts on mini-ImageNet-shaped data (paper: 600 images per class, the paper
     config, 2 search candidates, 25 training steps timed after the first 5, 100 evaluation episodes; tiny: 20 per
     class, the smoke networks) with each stage's time, peak CUDA memory and the whole stage extrapolated
  3. bench/kernels.py and bench/search.py (paper: their paper-size defaults; tiny: C=4 networks), each ours against
     the original's procedure on the same device; their ratio lines are quoted.  (bench/evaluate.py is not here:
     the evaluation's solver runs on CPU features wherever the network runs.)

Any interpreter with torch runs it, installing nothing and importing the package from src/ (every script it starts
gets PYTHONPATH=src): `make gpu-check PY=/path/to/python3`.  First it checks that every package it needs imports and
stops with one line naming the missing ones.  On a machine with no package index, carry a wheelhouse
(`make wheelhouse PYVER=3.12` on a machine with one, bench/wheelhouse.py) and add WHEELS=wheelhouse: --wheels
installs it with --no-index into a scratch environment over this interpreter's packages (--env, default
.gpu-check-env/, ignored by git), so that the interpreter's own torch is the one that runs.  docs/scaling.md has the
commands for an offline CUDA machine.

`make gpu-check GPU_CHECK="--device cpu --size tiny"` runs the same on the CPU in about two minutes, which CI does
(tests/test_gpu_check.py, with an interpreter that has torch and numpy only, and the wheelhouse) so the script cannot
rot. The table is printed and written to --out.

  .venv/bin/python bench/gpu_check.py --device cuda --size paper --out results/gpu-check.md
"""
from __future__ import annotations

import argparse
import importlib.util
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

from benchlib import ROOT, clock, stage_env   # stdlib only: this runs before the package check

TREE = ["Snakefile", "workflow", "config", "scripts", "tests/configs"]   # what a Snakemake run of the tiny DAG reads
log = logging.getLogger("gpu_check")
BENCHES = {   # script: (paper-size arguments, tiny arguments), after --device
    "bench/kernels.py": ([], ["--channels", "4", "--size", "8", "--reps", "1"]),
    "bench/search.py": (["--candidates", "4"], ["--candidates", "1", "--channels", "4"]),
}
# (module, pip name) of every package the check imports, torch and numpy first: the interpreter's own
NEEDS = [("torch", "torch"), ("numpy", "numpy"), ("yaml", "pyyaml"), ("jsonschema", "jsonschema"),
         ("tabulate", "tabulate"), ("tqdm", "tqdm"), ("pandas", "pandas"), ("scipy", "scipy"),
         ("matplotlib", "matplotlib"), ("opacus", "opacus"), ("snakemake", "snakemake")]
TORCH_RANGE = ((2, 11), (2, 13))   # pyproject.toml's torch>=2.11,<2.14
ENV_MARK = "METANTK_GPU_CHECK_ENV"
RATIO = re.compile(r"ratio[^\n]*|original/this[^\n]*")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a command, raise with its output's tail if it fails; its wall time and output."""
    t0 = clock()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=stage_env() if env is None else env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise SystemExit(f"gpu-check: {' '.join(map(str, cmd[:3]))} ... failed (exit {proc.returncode}):\n{tail}")
    return clock() - t0, proc.stdout + proc.stderr


def missing_packages() -> list[str]:
    """The pip names of the packages in NEEDS that this interpreter cannot import."""
    return [pip for module, pip in NEEDS if importlib.util.find_spec(module) is None]


def check_packages(device: str) -> None:
    """Stop at once, in one line, where a package is missing, naming it and the fix; log the torch it will use."""
    lacking = missing_packages()
    if lacking:
        if "torch" in lacking:
            fix = "run it with an interpreter that has torch: make gpu-check PY=/path/to/python3"
        else:
            fix = ("on a machine with package access run `make wheelhouse PYVER=%d.%d` (add HAVE=<this machine's "
                   "pip freeze> to fetch only what it lacks), copy wheelhouse/ here and run `make gpu-check PY=%s "
                   "WHEELS=wheelhouse` (docs/scaling.md)" % (*sys.version_info[:2], sys.executable))
        raise SystemExit(f"gpu-check: {sys.executable} lacks {', '.join(lacking)}: {fix}")
    import torch

    version = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if not TORCH_RANGE[0] <= version <= TORCH_RANGE[1]:
        log.warning("torch %s is outside the supported range %d.%d to %d.%d (pyproject.toml): the check runs, "
                    "its results say nothing for the supported versions", torch.__version__,
                    *TORCH_RANGE[0], *TORCH_RANGE[1])
    log.info("%s: torch %s (CUDA %s), %s", sys.executable, torch.__version__, torch.version.cuda,
             torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else "no GPU used")


def site_dirs() -> list[str]:
    """This interpreter's package folders (its venv's or its installation's site-packages)."""
    return [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]


def wheel_env(wheels: Path, env_dir: Path) -> Path:
    """A scratch venv that sees this interpreter's packages (a .pth file adds its site folders after its own), with
    what the wheelhouse adds installed by pip with --no-index: pip installs only what is missing or out of range,
    so this interpreter's torch stays the one that runs.  Its python."""
    if not wheels.is_dir() or not any(wheels.glob("*.whl")):
        raise SystemExit(f"gpu-check: WHEELS={wheels}: no wheels there (make wheelhouse PYVER="
                         f"{sys.version_info[0]}.{sys.version_info[1]} writes them)")
    if importlib.util.find_spec("pip") is None:
        raise SystemExit(f"gpu-check: {sys.executable} has no pip to install {wheels} with")
    py = env_dir / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_gpu_check_base.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in site_dirs()) + "\n")
    cmd = [str(py), "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--disable-pip-version-check",
           "--no-warn-script-location", "-q", "-r", str(ROOT / "bench/gpu-check-requirements.txt")]
    log.info("installing what %s lacks from %s into %s", sys.executable, wheels, env_dir)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("ERROR")] or proc.stderr.splitlines()
        raise SystemExit(f"gpu-check: installing {wheels} failed: {' '.join(lines)[-1500:]}")
    return py


def tiny_dag(work: Path, device: str, cores: int) -> tuple[float, str]:
    dag = work / "dag"
    shutil.rmtree(dag, ignore_errors=True)
    for name in TREE:
        src = ROOT / name
        (dag / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dag / name)
    (dag / "device.yaml").write_text(f"device: {device}\n")
    env = stage_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    wall, _ = run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources", "gpu=1", "--configfile",
                   "tests/configs/tiny.yaml", "device.yaml", "--scheduler", "greedy", "--quiet", "all"], dag, env)
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
    p.add_argument("--wheels", default=None, metavar="DIR",
                   help="a wheelhouse (make wheelhouse) to install what this interpreter lacks from, with --no-index")
    p.add_argument("--env", default=str(ROOT / ".gpu-check-env"), metavar="DIR",
                   help="the scratch environment --wheels installs into (default .gpu-check-env/)")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.wheels and not os.environ.get(ENV_MARK):
        py = wheel_env(Path(args.wheels).resolve(), Path(args.env).resolve())
        rest = [a for i, a in enumerate(argv) if a != "--wheels" and (i == 0 or argv[i - 1] != "--wheels")
                and not a.startswith("--wheels=")]
        os.environ[ENV_MARK] = "1"
        os.execv(str(py), [str(py), str(Path(__file__).resolve()), *rest])
    check_packages(args.device)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        from metantk_nas.cli import CUDA_INSTALL
        raise SystemExit(f"gpu-check: torch {torch.__version__} has no CUDA device; install a CUDA build "
                         f"({CUDA_INSTALL}), or run it on the CPU: --device cpu --size tiny")
    t_all = clock()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="metantk-gpu-check-")
    work = Path(args.work or tmp.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []   # part, time, peak CUDA, result

    log.info("1/3: the tiny DAG with device %s", args.device)
    wall, what = tiny_dag(work, args.device, args.cores)
    rows.append(("tiny DAG (Snakemake, tests/configs/tiny.yaml)", f"{wall:.0f} s", "", what))

    log.info("2/3: the stage scripts at %s size", args.size)
    reh = work / "rehearsal"
    paper = args.size == "paper"
    run([sys.executable, "bench/rehearsal.py", "--size", args.size, "--device", args.device, "--candidates", "2",
         "--steps", "25" if paper else "4", "--warmup-steps", "5" if paper else "2",
         "--episodes", "100" if paper else "3", "--work", str(reh)], ROOT)
    for r in json.loads((reh / "rehearsal.json").read_text()):
        cuda = "" if r["cuda_mib"] is None else f"{r['cuda_mib']:.0f} MiB"
        whole = f"; whole stage ~{r['full_s'] / 3600:.2f} h ({r['basis']})" if r["full_s"] else ""
        rows.append((f"stage {r['stage']}", f"{r['wall_s']:.1f} s", cuda,
                     f"{r['work']}; peak RSS {r['rss_mib']:.0f} MiB{whole}"))

    log.info("3/3: the benchmarks")
    for script, (paper_args, tiny_args) in BENCHES.items():
        extra = paper_args if paper else tiny_args
        if script == "bench/search.py":
            extra = [*extra, "--prepared", str(reh / "prepared/mini")]
        wall, out = run([sys.executable, script, "--device", args.device, *extra], ROOT)
        rows.append((script, f"{wall:.0f} s", "", "; ".join(m.strip() for m in RATIO.findall(out)) or "(no ratio)"))

    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    header = (f"make gpu-check: {args.size} size on {device} ({args.device}), torch {torch.__version__} (CUDA "
              f"{torch.version.cuda}), Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}, "
              f"{clock() - t_all:.0f} s in all")
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
