"""Figures of loss-landscape slices (``landscape slice``): contour, log-scale heat map,
3-D surface and 1-D curves. Each draws the arrays of a ``slice.npz`` on a given Axes and
returns it; statistics (the barrier of a path) come computed, from ``slice.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm

from landscape.plots.style import color_for, styled

__all__ = ["draw_slice_1d", "draw_slice_contour", "draw_slice_heatmap", "draw_slice_surface"]

_LABELS = ("direction 1", "direction 2")


def _check_grid(x: np.ndarray, y: np.ndarray, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (len(x), len(y)):
        raise ValueError(f"values have shape {values.shape}, the axes {len(x)} x {len(y)} points")
    return values


@styled
def draw_slice_contour(ax: Axes, x: Sequence[float], y: Sequence[float], values: np.ndarray, *,
                       label: str = "train loss", levels: int | Sequence[float] = 12,
                       axis_labels: Sequence[str] = _LABELS) -> Axes:
    """Contour lines of ``values[i, j]`` at ``(x[i], y[j])``, each level labelled with its value;
    the centre (0, 0), the run itself, is marked."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    values = _check_grid(x, y, values)
    contours = ax.contour(x, y, values.T, levels=levels, cmap="viridis", linewidths=0.8)
    ax.clabel(contours, inline=True, fontsize=6, fmt="%.3g")
    ax.plot([0.0], [0.0], marker="*", color="black", markersize=7, linestyle="none", label="run")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(label)
    ax.set_aspect("equal", adjustable="box")
    return ax


@styled
def draw_slice_heatmap(ax: Axes, x: Sequence[float], y: Sequence[float], values: np.ndarray, *,
                       label: str = "train loss", axis_labels: Sequence[str] = _LABELS) -> Axes:
    """``values`` as a filled heat map on a logarithmic colour scale (min to max), with a colour bar."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    values = _check_grid(x, y, values)
    if not np.all(values > 0):
        raise ValueError("a log-scale heat map needs positive values")
    mesh = ax.pcolormesh(x, y, values.T, norm=LogNorm(vmin=values.min(), vmax=values.max()), cmap="viridis",
                         shading="nearest")
    bar = ax.figure.colorbar(mesh, ax=ax)
    bar.set_label(f"{label} (log scale)")
    ax.plot([0.0], [0.0], marker="*", color="white", markersize=7, linestyle="none")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(label)
    return ax


@styled
def draw_slice_surface(ax: Axes, x: Sequence[float], y: Sequence[float], values: np.ndarray, *,
                       label: str = "train loss", axis_labels: Sequence[str] = _LABELS) -> Axes:
    """``values`` as a 3-D surface; ``ax`` must be a 3-D Axes (``new_figure(subplot_kw={"projection": "3d"})``)."""
    if getattr(ax, "name", "") != "3d":
        raise ValueError("draw_slice_surface needs a 3-D Axes (projection='3d')")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    values = _check_grid(x, y, values)
    gx, gy = np.meshgrid(x, y, indexing="ij")
    ax.plot_surface(gx, gy, values, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_zlabel(label)
    return ax


@styled
def draw_slice_1d(ax: Axes, t: Sequence[float], values: Mapping[str, np.ndarray], *, xlabel: str = "direction 1",
                  barrier: Mapping[str, float] | None = None, path: bool = False) -> Axes:
    """Loss (left axis) and error (right axis) along a line, for the splits in ``values``
    (keys ``train_loss``, ``test_loss``, ``train_error``, ``test_error``; any may be absent).

    ``path=True`` marks t = 0 and t = 1 (the two runs of a path); ``barrier`` (from
    ``slice.json``) is written on the figure, the numbers as they are.
    """
    t = np.asarray(t, dtype=float)
    error_ax = ax.twinx()
    styles = {"train": "-", "test": "--"}
    for split in ("train", "test"):
        for metric, target, color in (("loss", ax, color_for("", 0)), ("error", error_ax, color_for("", 1))):
            key = f"{split}_{metric}"
            if key in values:
                series = np.asarray(values[key], dtype=float)
                if series.shape != t.shape:
                    raise ValueError(f"{key} has {series.shape[0]} values for {len(t)} points")
                target.plot(t, series, linestyle=styles[split], color=color, label=f"{split} {metric}")
    for end in ((0.0, 1.0) if path else (0.0,)):
        ax.axvline(end, color="0.6", linewidth=0.6, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    error_ax.set_ylabel("error")
    error_ax.spines["right"].set_visible(True)
    handles = [h for a in (ax, error_ax) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="upper left")
    if barrier:
        text = "barrier: " + ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in barrier.items() if v is not None)
        ax.text(0.98, 0.98, text, transform=ax.transAxes, ha="right", va="top", fontsize=7)
    return ax
