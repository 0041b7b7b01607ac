"""The training curve as a reader sees it, read from the figure's artists: integer epoch ticks, loss and accuracy
in two stacked panels without a second y-axis, the learning-rate steps where the log's rate changes, legends that
cover no data point and no step label, and the run in the title."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from metantk_nas.fsl.curves import curve_figure

from helpers import overlap


def rfs_rows(epochs: int, milestones: tuple[int, ...]) -> list[dict]:
    """A log with RFS's step decay written out by hand: lr 0.05, x0.1 after each milestone epoch."""
    rows = []
    for e in range(1, epochs + 1):
        lr = 0.05 * 0.1 ** sum(e > m for m in milestones)
        rows.append({"epoch": e, "loss": 3.0 / e, "accuracy": min(0.02 * e, 0.97), "lr": lr, "seconds": 1.0})
    return rows


@pytest.mark.parametrize("epochs,milestones", [(2, (1,)), (7, (3, 5)), (100, (60, 80))])
def test_training_curve_reads_as_the_log(epochs, milestones):
    rows = rfs_rows(epochs, milestones)
    fig = curve_figure(rows, "synthetic, metantk, 5 cells, seed 0: RFS pre-training")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax_loss, ax_acc = fig.axes                                       # two panels, no twin axis
    assert ax_loss.get_position().y0 > ax_acc.get_position().y1     # stacked, loss on top, not sharing a box
    assert fig._suptitle.get_text() == "synthetic, metantk, 5 cells, seed 0: RFS pre-training"
    lo, hi = ax_acc.get_xlim()
    ticks = [t for t in ax_acc.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert lo < 1 and hi > epochs
    (loss_line,) = [ln for ln in ax_loss.get_lines() if ln.get_label() == "train loss"]
    (acc_line,) = [ln for ln in ax_acc.get_lines() if ln.get_label() == "train accuracy"]
    np.testing.assert_allclose(loss_line.get_ydata(), [3.0 / e for e in range(1, epochs + 1)])
    np.testing.assert_allclose(acc_line.get_ydata(), [100 * min(0.02 * e, 0.97) for e in range(1, epochs + 1)])
    for ax in (ax_loss, ax_acc):
        steps = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":")
        assert steps == [m + 0.5 for m in milestones]                 # between the last epoch at a rate and the next
    notes = {t.get_text(): t.get_window_extent(renderer) for t in ax_loss.texts}
    assert set(notes) == {f"lr {0.05 * 0.1 ** (k + 1):g}" for k in range(len(milestones))}
    for ax in (ax_loss, ax_acc):
        legend = ax.get_legend().get_window_extent(renderer)
        frame = ax.get_window_extent(renderer)
        assert frame.x0 <= legend.x0 and legend.x1 <= frame.x1 and frame.y0 <= legend.y0 and legend.y1 <= frame.y1
        for line in ax.get_lines():
            if line.get_linestyle() != ":":
                pts = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
                inside = [legend.contains(x, y) for x, y in pts]
                assert not any(inside), f"the legend covers a point of {line.get_label()}"
        assert not any(overlap(legend, bb) for bb in notes.values())
    for a, b in itertools.combinations(notes.values(), 2):
        assert not overlap(a, b)


def test_no_learning_rate_step_draws_no_step_line():
    rows = [dict(r, lr=0.05) for r in rfs_rows(4, ())]
    fig = curve_figure(rows, "t")
    assert not [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert not fig.axes[0].texts
