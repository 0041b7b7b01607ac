"""The training curve of one run: loss and train accuracy per epoch in two stacked panels sharing an integer
epoch axis (no second y-axis), the learning-rate steps marked as dotted lines between epochs (the new rate printed above the top panel, clear of the
legends), the run in the title."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..provenance import atomic_path  # noqa: E402

LOSS_COLOUR, ACC_COLOUR, STEP_COLOUR = "#1f77b4", "#d62728", "#777777"


def lr_steps(rows: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    """(first epoch at the new rate, the new rate) for each change of the logged learning rate."""
    return [(r["epoch"], r["lr"]) for prev, r in zip(rows, rows[1:]) if r["lr"] != prev["lr"]]


def curve_figure(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(2, 1, sharex=True, figsize=(6.0, 4.8), dpi=120)
    ax_loss.plot(epochs, [r["loss"] for r in rows], "o-", color=LOSS_COLOUR, ms=3.5, label="train loss")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.plot(epochs, [100 * r["accuracy"] for r in rows], "s-", color=ACC_COLOUR, ms=3.5, label="train accuracy")
    ax_acc.set_ylabel("train accuracy (%)")
    ax_acc.set_xlabel("epoch")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs:
        ax_acc.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    steps = lr_steps(rows)
    for k, (epoch, lr) in enumerate(steps):
        for ax in (ax_loss, ax_acc):
            ax.axvline(epoch - 0.5, ls=":", lw=1.0, color=STEP_COLOUR, label="learning-rate step" if k == 0 else None)
        ax_loss.annotate(f"lr {lr:g}", xy=(epoch - 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                         textcoords="offset points", ha="center", va="bottom", fontsize=7, color=STEP_COLOUR)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.25)
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_curve(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """``train_curve.png`` of a run's log rows (epoch, loss, accuracy, lr)."""
    fig = curve_figure(rows, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
