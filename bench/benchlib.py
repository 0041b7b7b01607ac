"""What the bench scripts share: the source tree on the import path (no editable install needed), a clock that
waits for the GPU, timings with the warm-up apart, and the environment for the stage scripts they start.

Import it first (``import benchlib``) in a bench script: a script's own folder is on ``sys.path``, so this works from
any working directory; it puts ``src/`` there before any ``metantk_nas`` import.  It does not import torch.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def clock() -> float:
    """``time.perf_counter()`` once the work queued on the GPU has finished: CUDA runs kernels asynchronously, so a
    clock read without ``torch.cuda.synchronize()`` times their launches, not the kernels.  No synchronisation
    where torch is not loaded or CUDA not started (the CPU: nothing is queued)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


@dataclass(frozen=True)
class Timing:
    mean_s: float     # per call, after the warm-up
    warmup_s: float   # the warm-up calls together (cuDNN's algorithm search, the allocator's growth, lazy imports)
    reps: int
    warmup: int

    def __str__(self) -> str:
        return f"{self.mean_s:.3f} s per call ({self.reps} after {self.warmup} warm-up, {self.warmup_s:.2f} s)"


def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[Timing, Any]:
    """Run ``fn`` ``warmup`` times, then ``reps`` times; the mean of the timed calls (each clock read after the GPU
    has finished), the warm-up's own time apart, and the last result."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    out = None
    t0 = clock()
    for _ in range(warmup):
        out = fn()
    t1 = clock()
    for _ in range(reps):
        out = fn()
    t2 = clock()
    return Timing((t2 - t1) / reps, t1 - t0, reps, warmup), out


def stage_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a stage or bench script this one starts: ``src/`` first on ``PYTHONPATH`` (the package
    imports without ``pip install -e .``), and without ``PYTHONDONTWRITEBYTECODE`` (every job would otherwise compile
    torch's sources again)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
