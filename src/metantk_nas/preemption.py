"""Preemption and time limits (SLURM): a signal sets a flag, the long loop finishes its current unit of work
(a training step, a search candidate), writes a checkpoint and raises :class:`Preempted`; the stage script exits
with :data:`EXIT_REQUEUE`, and the retry (Snakemake ``retries``) or SLURM's requeue resumes from the checkpoint.

SLURM sends SIGTERM at preemption and at the time limit (then SIGKILL after ``KillWait``, 30 s by default); the
rules ask for SIGTERM ``resources.signal_before_limit`` seconds before the time limit (``--signal=TERM@N``; SIGTERM
because the inner Snakemake in the same job step survives it, see docs/scaling.md).
"""
from __future__ import annotations

import signal
from typing import Any

EXIT_REQUEUE = 75   # EX_TEMPFAIL: checkpointed after a signal; run again to resume
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised after the checkpoint of a signalled run is on disk."""


class SignalFlag:
    """``with SignalFlag() as sig:`` records the first SIGTERM/SIGUSR1 in ``sig.hit`` instead of dying."""

    def __init__(self) -> None:
        self.hit: int | None = None
        self.old: dict[int, Any] = {}

    def __enter__(self) -> "SignalFlag":
        for s in SIGNALS:
            try:
                self.old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: signals stay with their previous handlers
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.hit = self.hit or signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)
