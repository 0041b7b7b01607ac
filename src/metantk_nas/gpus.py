"""One GPU per job on a machine with several GPUs and no scheduler.

``snakemake --cores 16 --resources gpu=4`` runs up to four GPU jobs at once, and without SLURM nothing tells each one
which GPU is its own: all four would start on ``cuda:0``.  :func:`claim_gpu` takes a lock file per GPU (``flock``,
non-blocking, tried in order) and sets ``CUDA_VISIBLE_DEVICES`` to the one it got, before CUDA starts.  The lock is
held by an open file descriptor that is never closed: the kernel releases it when the job's process ends, however it
ends (exit, crash, SIGKILL), so a killed job never keeps a GPU.  With more jobs than GPUs a job waits for a free one.

Nothing is done under a scheduler that assigns GPUs itself (SLURM: ``SLURM_JOB_ID`` is set, and ``--gpus=1`` sets the
job's ``CUDA_VISIBLE_DEVICES``), with one GPU or none visible, or with ``METANTK_GPU_LOCKS=0``.  The locks live in
``$METANTK_GPU_LOCK_DIR`` (default ``/tmp/metantk_nas-gpu-locks-<uid>``), one file per GPU id.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import time
from pathlib import Path
from typing import MutableMapping

log = logging.getLogger("metantk_nas.gpus")
DEVICE_FILE = re.compile(r"nvidia(\d+)")


def visible_gpus(env: MutableMapping[str, str], dev: str = "/dev") -> list[str]:
    """The GPU ids this process may use: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, else one per NVIDIA
    device file (``/dev/nvidia0``, ``/dev/nvidia1``, ...), read without starting CUDA (which would fix the visible
    devices for the rest of the process)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    ids = sorted(int(m.group(1)) for f in os.listdir(dev) if (m := DEVICE_FILE.fullmatch(f))) \
        if os.path.isdir(dev) else []
    return [str(i) for i in ids]


def lock_dir(env: MutableMapping[str, str]) -> Path:
    return Path(env.get("METANTK_GPU_LOCK_DIR") or f"/tmp/metantk_nas-gpu-locks-{os.getuid()}")


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return None
        raise
    return fd


def claim_gpu(env: MutableMapping[str, str], gpus: list[str] | None = None, poll_s: float = 1.0,
              timeout_s: float | None = None) -> str | None:
    """Take a free GPU of ``gpus`` (default :func:`visible_gpus`) for this process and point ``env``'s
    ``CUDA_VISIBLE_DEVICES`` at it; its id, or None where nothing is to be shared (see the module's text).  Waits,
    polling every ``poll_s`` seconds, while every GPU is taken; ``timeout_s``: give up after that long (None: wait)."""
    if env.get("SLURM_JOB_ID") or env.get("METANTK_GPU_LOCKS", "1") == "0":
        return None
    gpus = visible_gpus(env) if gpus is None else gpus
    if len(gpus) < 2:
        return None
    folder = lock_dir(env)
    folder.mkdir(parents=True, exist_ok=True)
    t0, waiting = time.monotonic(), False
    while True:
        for gpu in gpus:
            if _try_lock(folder / f"gpu{gpu}.lock") is not None:   # the descriptor stays open: the lock is held
                env["CUDA_VISIBLE_DEVICES"] = gpu
                log.info("GPU %s of %s is this job's (lock in %s)", gpu, ",".join(gpus), folder)
                return gpu
        if timeout_s is not None and time.monotonic() - t0 >= timeout_s:
            raise TimeoutError(f"no free GPU among {','.join(gpus)} after {timeout_s:.0f} s (locks in {folder})")
        if not waiting:
            log.info("all %d GPUs are taken by other jobs (locks in %s): waiting for one", len(gpus), folder)
            waiting = True
        time.sleep(poll_s)
