"""Training curves against EFFECTIVE epochs (paper Figs. 4-6).

Chaudhari et al. 2017 (Sec. 5.2, "Remark on the computational complexity") plot
Entropy-SGD's curves against the number of gradient evaluations divided by the training
set size, so that L SGLD steps per update are paid for. ``metrics.jsonl`` records that
count per epoch (``effective_epochs``, counted by the training loop, not computed from a
formula), and these functions put it on the x-axis.

Runs that differ only in their seed are one curve: the mean, with the band between the
lowest and highest seed (with two or three seeds a standard deviation says little).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes

from landscape.plots.style import line_styles, marker_for, styled

__all__ = ["seed_band", "draw_training_curves"]

METRIC_LABELS = {
    "train_loss": "training loss",
    "val_error": "validation error (%)",
    "test_error": "test error (%)",
    "train_error": "training error (%)",
    "val_loss": "validation loss",
    "test_loss": "test loss",
}


def seed_band(runs: Sequence[Sequence[dict]], metric: str, x: str = "effective_epochs"):
    """``(xs, mean, low, high, n_runs)`` over the x values that every run recorded.

    Runs of one configuration share their x values epoch by epoch; a run stopped early
    (or still running) limits the curve to the x values all runs reached.
    """
    tables = []
    for rows in runs:
        table = {float(r[x]): float(r[metric]) for r in rows if metric in r and r.get(metric) is not None}
        if table:
            tables.append(table)
    if not tables:
        return np.array([]), np.array([]), np.array([]), np.array([]), 0
    common = sorted(set.intersection(*(set(t) for t in tables)))
    values = np.array([[t[v] for v in common] for t in tables])
    return np.array(common), values.mean(axis=0), values.min(axis=0), values.max(axis=0), len(tables)


@styled
def draw_training_curves(ax: Axes, groups: Mapping[str, Sequence[Sequence[dict]]], metric: str = "val_error", *,
                         x: str = "effective_epochs", log_y: bool | None = None, skip_initial: bool = True,
                         legend: bool = True) -> Axes:
    """One mean curve (and min-max band over seeds) per group, against ``x``.

    ``groups`` maps a label (e.g. "entropy-sgd") to the metrics rows of each seed's run.
    Errors are shown in percent. The initial row (epoch 0, before any update) is left out
    by default: its error of ~90% would flatten the rest of the picture.
    """
    percent = metric.endswith("_error")
    drawn = 0
    for i, ((label, runs), (color, linestyle)) in enumerate(zip(groups.items(), line_styles(list(groups)))):
        runs = [[r for r in rows if not (skip_initial and r.get("epoch") == 0)] for rows in runs]
        xs, mean, low, high, n = seed_band(runs, metric, x)
        if n == 0:
            continue
        scale = 100.0 if percent else 1.0
        ax.plot(xs, scale * mean, color=color, linestyle=linestyle, marker=marker_for(label, i), markersize=3,
                linewidth=1.2, markevery=max(1, len(xs) // 12),
                label=f"{label} ({n} seed{'s' if n != 1 else ''})")
        if n > 1:
            ax.fill_between(xs, scale * low, scale * high, color=color, alpha=0.2, linewidth=0)
        drawn += 1
    ax.set_xlabel("effective epochs" if x == "effective_epochs" else x.replace("_", " "))
    ax.set_ylabel(METRIC_LABELS.get(metric, metric.replace("_", " ")))
    if log_y if log_y is not None else metric.endswith("_loss"):
        ax.set_yscale("log")
    if drawn and legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax
