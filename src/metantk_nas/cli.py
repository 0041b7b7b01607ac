"""Shared plumbing for the thin stage scripts: logging, config loading, one-line errors and exit codes."""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import resource
import signal
import sys
import time
from typing import Any, Callable, Mapping, MutableMapping, Sequence

from .config import METHODS, load_config
from .errors import PipelineError
from .methods import PUBLISHED_METHOD
from .preemption import EXIT_REQUEUE, Preempted

EXIT_BAD_INPUT = 2
log = logging.getLogger("metantk_nas.cli")


def use_huge_pages() -> None:
    """Let torch's CPU allocator put tensors of 2 MB and more on transparent huge pages (THP_MEM_ALLOC_ENABLE=1);
    effective only when called before torch loads, so the training and evaluation scripts call it first.  On 2 cores
    (docs/scaling.md) a paper-size training step went from 18.4 s to 14.0 s and the evaluation's query features from
    83 to 54 ms per image, fewer page faults, bit-identical results (tests/test_fsl.py); the search's kernels got
    10% slower (42.8 s -> 47.3 s per candidate), so the search does not call it.  A value of the caller's own (0:
    off) is kept."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"], metavar="YAML",
                   help="config files merged in order (default: config/config.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def set_threads(threads: int | None) -> None:
    import torch

    n = threads or int(os.environ.get("SNAKEMAKE_THREADS", "0") or 0) or None
    if n:
        torch.set_num_threads(n)


def peak_rss_mib() -> float:
    """This process's peak resident set since its exec: VmHWM of /proc/self/status.  (getrusage's ru_maxrss is not
    that: Linux carries the forking parent's resident set across the exec into it.)"""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024   # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # elsewhere: the closest figure there is


def peak_memory() -> str:
    """``peak memory: RSS <MiB> MiB[, CUDA <MiB> MiB allocated (<MiB> MiB reserved)]`` of this process so far: the
    last log line of a stage, what its SLURM memory request must cover (bench/rehearsal.py reads it)."""
    out = f"peak memory: RSS {peak_rss_mib():.0f} MiB"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        out += (f", CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated "
                f"({torch.cuda.max_memory_reserved() / 2**20:.0f} MiB reserved)")
    return out


def stop_after(n: int | None, unit: str = "unit") -> Callable[..., None] | None:
    """``--stop-after N``: a callback that sends this process SIGTERM at its N-th call (after the N-th training step
    or search candidate), so the stage checkpoints and exits 75 exactly as a preempted one: a rehearsal or a
    benchmark runs the first N units of the real stage (bench/rehearsal.py). None for no N.  Each call logs
    ``--stop-after: <unit> k of N done at <t> s`` (seconds since the callback was made), from which the rehearsal
    times the units after a warm-up; a unit ends with a value read back from the device (the step's loss, the
    candidate's score), so on CUDA its time is the kernels', not their launches'."""
    if not n:
        return None
    calls = itertools.count(1)
    t0 = time.perf_counter()

    def count(*_: Any) -> None:
        k = next(calls)
        log.info("--stop-after: %s %d of %d done at %.3f s", unit, k, n, time.perf_counter() - t0)
        if k == n:
            os.kill(os.getpid(), signal.SIGTERM)
    return count


def add_stop_after(p: argparse.ArgumentParser, unit: str) -> None:
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help=f"checkpoint and exit 75 after {unit} N of this run, as a preempted run does (rehearsals, "
                        "benchmarks: bench/rehearsal.py); a rerun resumes")


def run(main: Callable[[argparse.Namespace, dict[str, Any]], None], p: argparse.ArgumentParser,
        argv: list[str] | None = None) -> int:
    """Parse args, load + validate config, run ``main``; bad input becomes one line on stderr and exit code 2, a
    preempted stage (checkpointed after SIGTERM/SIGUSR1) one line and :data:`EXIT_REQUEUE` (75)."""
    args = p.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        cfg = load_config(args.configfile)
        main(args, cfg)
        log.info(peak_memory())
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Preempted as e:
        log.info(peak_memory())
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            print(f"error: disk full while writing {e.filename or 'output'}; finished artifacts are untouched",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    return 0


# what a scheduler sets in a job it gave a GPU (an empty value, "-1" or SLURM's "NoDevFiles": none)
GPU_ENV = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
CUDA_INSTALL = ".venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"


def granted_gpu(env: Mapping[str, str]) -> str | None:
    """``NAME=value`` of the first variable in ``env`` that says this job was given a GPU, or None."""
    for name in GPU_ENV:
        value = env.get(name, "").strip()
        if value and value not in ("-1", "NoDevFiles"):
            return f"{name}={value}"
    return None


def resolve_device(cfg: Mapping[str, Any], env: MutableMapping[str, str] | None = None) -> "torch.device":  # noqa: F821
    """``device`` of the config: ``cpu``; ``cuda``; or ``auto``, CUDA where torch has it. A job that asks for CUDA,
    or one the scheduler gave a GPU (``GPU_ENV`` in ``env``, default the process's), while torch has no CUDA fails
    with one line instead of running 20-50x slower on the CPU; ``device: cpu`` runs such a job on the CPU.  Before
    CUDA starts, a job on a machine with several GPUs and no scheduler takes one of them for itself
    (:func:`metantk_nas.gpus.claim_gpu`).  On CUDA the config's ``deterministic`` and ``tf32`` apply
    (:func:`set_determinism`, :func:`set_float32`)."""
    import torch

    from .gpus import claim_gpu

    env = os.environ if env is None else env
    want = cfg["device"]
    if want != "cpu" and torch.version.cuda is not None:
        claim_gpu(env)   # sets CUDA_VISIBLE_DEVICES, so before the first torch.cuda call
    if want == "cpu" or torch.cuda.is_available():
        device = torch.device("cpu" if want == "cpu" else "cuda")
        set_determinism(cfg.get("deterministic", True), device)
        set_float32(cfg.get("tf32", False), device)
        return device
    granted = granted_gpu(env)
    if want == "cuda" or granted:
        from .errors import ConfigError

        why = "'cuda' requested" if want == "cuda" else f"'auto' in a job given a GPU ({granted})"
        build = f"a CPU build (torch {torch.__version__})" if torch.version.cuda is None else \
            f"torch {torch.__version__} with CUDA {torch.version.cuda}, but no device is visible"
        raise ConfigError(f"config: device: {why}, but this torch is {build}; install a CUDA build ({CUDA_INSTALL}) "
                          "or set device: cpu to run on the CPU")
    return torch.device("cpu")


def set_float32(tf32: bool, device: "torch.device") -> None:  # noqa: F821
    """``tf32`` of the config, on CUDA: false (the default) computes matrix products and convolutions in IEEE
    float32, as the paper's V100 did; torch's own default lets cuDNN's convolutions use TF32 (10-bit mantissas) on
    Ampere and later GPUs, which moves the search's kernels and so its rounded dK.  true allows TF32 in both (faster,
    not the paper's arithmetic).  Set through torch's per-backend ``fp32_precision`` flags (torch >= 2.9; the
    legacy ``allow_tf32`` flags must not be mixed with them).  The CPU is untouched."""
    import torch

    if device.type != "cuda":
        return
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cudnn.rnn.fp32_precision = precision


CUBLAS_WORKSPACE = ":4096:8"   # cuBLAS's deterministic workspace setting (CUDA >= 10.2)


def set_determinism(mode: bool | str, device: "torch.device") -> None:  # noqa: F821
    """``deterministic`` of the config, on CUDA (on the CPU every stage is deterministic as it is, tested byte for
    byte): ``true`` sets ``CUBLAS_WORKSPACE_CONFIG`` (unless the environment has one), turns cuDNN's autotuner off and
    asks torch for its deterministic algorithms (without filling uninitialised memory), with a logged warning where an
    op has none; ``"strict"`` makes such an op an error; ``false`` leaves torch's defaults (faster convolutions, run-to-run differences in the last bits)."""
    import torch
    import torch.utils.deterministic

    if device.type != "cuda" or mode is False:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=mode != "strict")
    # which torch also takes as an order to fill every torch.empty with NaN (a memset per allocation): run-to-run
    # determinism does not need it, since no result reads uninitialised memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    logging.captureWarnings(True)   # torch's "does not have a deterministic implementation" warnings into the log


def add_run_args(p: argparse.ArgumentParser, methods: Sequence[str] = METHODS) -> None:
    """The run's wildcards; ``methods``: those the stage accepts (the search: not metanas, whose cell is published)."""
    p.add_argument("--dataset", required=True, help="a key of data.datasets")
    p.add_argument("--method", required=True, choices=list(methods),
                   help=None if PUBLISHED_METHOD in methods else
                   f"{PUBLISHED_METHOD} has no search: its cell is the published one (config/genotypes.yaml), "
                   "written by export_genotype.py")
    p.add_argument("--cells", required=True, type=int, help="number of stacked cells (5 or 8 in the paper)")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: Snakemake's or torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
