"""Eigenspectrum figures: the paper's Figs. 1 and 3, SLQ / Lanczos densities, diagonal Fisher.

Fig. 1 (Chaudhari et al. 2017, Sec. 1) shows the Hessian eigenvalues of two independent
runs: a central histogram of the eigenvalues in a small neighbourhood of zero, with the
whole negative and positive tails as insets on log-count axes. :func:`draw_eigenspectrum`
draws exactly that for any number of runs and annotates the statistics the paper quotes
(near-zero fractions, lambda_max, lambda_min), computed by
:func:`landscape.spectra.exact.spectrum_statistics` so the figure and the JSON agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes

from landscape.plots.style import color_for, line_styles, styled
from landscape.spectra.exact import spectrum_statistics

__all__ = ["default_center_width", "draw_eigenspectrum", "draw_density", "draw_ritz_values", "draw_diagonal"]


def _as_list(spectra) -> list[np.ndarray]:
    if isinstance(spectra, np.ndarray) and spectra.ndim == 1:
        spectra = [spectra]
    out = [np.asarray(s, dtype=np.float64).ravel() for s in spectra]
    if not out or any(s.size == 0 for s in out):
        raise ValueError("draw_eigenspectrum needs at least one non-empty set of eigenvalues")
    return out


def default_center_width(spectra: Sequence[np.ndarray]) -> float:
    """Half-width of the central window: 1% of the largest |lambda| over all runs.

    The paper's central plot is "a small neighborhood of zero"; 1% of the spectral radius
    keeps the bulk visible on every scale we tried while leaving the tails to the insets.
    """
    radius = max(float(np.max(np.abs(s))) for s in _as_list(spectra))
    return 0.01 * radius if radius > 0 else 1.0


@styled
def draw_eigenspectrum(
    ax: Axes,
    spectra,
    labels: Sequence[str] | None = None,
    *,
    center_width: float | None = None,
    bins: int = 61,
    tail_bins: int = 30,
    insets: bool = True,
    thresholds=(1e-5, 1e-4),
) -> Axes:
    """Fig. 1 / Fig. 3 style histogram of one or more eigenvalue sets.

    The main axes histogram the eigenvalues with ``|lambda| <= center_width`` (log counts:
    the peak at zero dwarfs everything else, the paper clips it); the left inset
    histograms ``lambda < -center_width`` (the negative tail), the right inset
    ``lambda > center_width`` (the positive tail), each over its whole range. Runs are
    overlaid as step histograms. The text box gives, per run, the fractions with
    ``|lambda| < t`` for each threshold ``t`` and the extreme eigenvalues.
    """
    runs = _as_list(spectra)
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(runs))]
    if len(labels) != len(runs):
        raise ValueError(f"{len(runs)} spectra but {len(labels)} labels")
    c = default_center_width(runs) if center_width is None else float(center_width)
    edges = np.linspace(-c, c, bins + 1)
    lines = []
    looks = line_styles(labels)
    for (lam, label, (color, linestyle)) in zip(runs, labels, looks):
        central = lam[np.abs(lam) <= c]
        ax.hist(central, bins=edges, histtype="step", linewidth=1.2, color=color, linestyle=linestyle, label=label)
        stats = spectrum_statistics(lam, thresholds)
        fractions = ", ".join(f"|λ|<{k}: {100 * v:.1f}%" for k, v in stats["fraction_abs_below"].items())
        lines.append(f"{label}: n = {lam.size:,};  {fractions};  λmax = {stats['lambda_max']:.4g},  "
                     f"λmin = {stats['lambda_min']:.4g}")
    ax.set_yscale("log")
    peak = max((np.histogram(lam[np.abs(lam) <= c], bins=edges)[0].max() for lam in runs), default=1)
    ax.set_ylim(0.6, max(peak, 1) * 30)  # headroom: the central peak stays clear of the frame and the insets
    ax.set_xlim(-c, c)
    ax.set_xlabel("eigenvalue λ (central window)")
    ax.set_ylabel("count")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    # legend and statistics below the axes: the insets hold both top corners
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(runs), 3), fontsize=8, frameon=False)
    ax.text(0.0, -0.24 - 0.05 * ((len(runs) - 1) // 3), "\n".join(lines), transform=ax.transAxes, fontsize=8,
            va="top", linespacing=1.4)
    if insets:
        _tail_inset(ax, runs, labels, side="negative", c=c, bins=tail_bins)
        _tail_inset(ax, runs, labels, side="positive", c=c, bins=tail_bins)
    return ax


def _tail_inset(ax: Axes, runs, labels, *, side: str, c: float, bins: int) -> Axes | None:
    tails = [lam[lam < -c] if side == "negative" else lam[lam > c] for lam in runs]
    position = [0.09, 0.64, 0.28, 0.3] if side == "negative" else [0.69, 0.64, 0.28, 0.3]
    if not any(t.size for t in tails):  # no empty box: one line in the corner instead
        ax.text(position[0], position[1] + position[3], f"no {side} eigenvalue beyond ±{c:.2g}", fontsize=7,
                color="0.35", va="top", transform=ax.transAxes)
        return None
    inset = ax.inset_axes(position)
    inset.set_title(f"{side} tail (|λ|>{c:.2g})", fontsize=7, pad=2)
    inset.tick_params(labelsize=6.5)
    lo = min(t.min() for t in tails if t.size)
    hi = max(t.max() for t in tails if t.size)
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5 * c, hi + 0.5 * c])
    for t, (color, linestyle) in zip(tails, line_styles(labels)):
        if t.size:
            inset.hist(t, bins=edges, histtype="step", color=color, linestyle=linestyle, linewidth=0.9)
    inset.set_yscale("log")
    return inset


@styled
def draw_density(
    ax: Axes,
    grid: np.ndarray,
    density: np.ndarray,
    *,
    label: str = "SLQ",
    bandwidth: float | None = None,
    scale: str = "linear",
    exact: np.ndarray | None = None,
    floor: float = 0.0,
    color=None,
    exact_label: str = "exact",
) -> Axes:
    """An SLQ (or any smoothed) spectral density on a linear or log10|lambda| grid.

    With ``exact`` eigenvalues the exact spectrum is drawn beneath as a density-normalised
    histogram on the same axis (for ``scale="log"`` a histogram of log10|lambda|), so the
    quadrature can be judged by eye; the bandwidth is written in the legend because a
    smoothed density means nothing without it. On the log grid, exact eigenvalues with
    ``|lambda| <= floor`` (pass the eigensolver's error bound: below it an eigenvalue is
    indistinguishable from zero) are left out and counted in the legend.
    """
    hidden = 0
    if exact is not None:
        lam = np.asarray(exact, dtype=np.float64)
        if scale == "log":
            keep = np.abs(lam) > max(floor, 0.0)
            values = np.log10(np.abs(lam[keep]))
            hidden = int(np.count_nonzero(~keep))
        else:
            values = lam
        # normalised by ALL n eigenvalues, like the SLQ density, so the eigenvalues left out on the log grid
        # lower the histogram instead of inflating the rest
        counts, edges = np.histogram(values, bins=80)
        ax.stairs(counts / (lam.size * np.diff(edges)), edges, fill=True, color="0.8",
                  label=f"{exact_label} (histogram)")
    text = label if bandwidth is None else f"{label} (bandwidth {bandwidth:.2g})"
    ax.plot(grid, density, color=color or color_for(label, 0), linewidth=1.2, label=text)
    ax.set_xlabel("log10 |λ|" if scale == "log" else "eigenvalue λ")
    ax.set_ylabel("density")
    ax.set_yscale("log" if scale == "linear" else "linear")
    if scale == "linear":
        top = float(np.max(density)) if np.size(density) else 1.0
        ax.set_ylim(max(top * 1e-6, 1e-12), top * 3)
    if exact is not None:
        low, high = ax.get_xlim()
        outside = hidden + int(np.count_nonzero((values < low) | (values > high)))
        if outside:  # said on the figure: a histogram that silently drops most eigenvalues misleads
            why = f"|λ| ≤ {floor:.1g} or outside the axis" if scale == "log" else "outside the axis"
            ax.text(0.02, 0.98, f"{outside:,} of {lam.size:,} exact eigenvalues not shown ({why})", fontsize=7,
                    va="top", transform=ax.transAxes, color="0.25")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return ax


@styled
def draw_ritz_values(ax: Axes, ritz_values: np.ndarray, residuals: np.ndarray, *, exact: np.ndarray | None = None,
                     label: str = "Lanczos", exact_label: str = "exact") -> Axes:
    """Ritz values against their index with residual norms as error bars; exact values as crosses."""
    order = np.argsort(ritz_values)[::-1]
    theta = np.asarray(ritz_values)[order]
    res = np.asarray(residuals)[order]
    idx = np.arange(1, theta.size + 1)
    ax.errorbar(idx, theta, yerr=res, fmt="o", markersize=3, color=color_for(label, 0),
                label=f"{label} Ritz ± residual")
    if exact is not None:
        # each Ritz value beside the exact eigenvalue nearest to it: right for the top (LA), the bottom (SA) or both
        lam = np.sort(np.asarray(exact, dtype=np.float64))
        pos = np.clip(np.searchsorted(lam, theta), 1, lam.size - 1)
        nearest = np.where(np.abs(lam[pos - 1] - theta) <= np.abs(lam[pos] - theta), lam[pos - 1], lam[pos])
        ax.plot(idx, nearest, "x", color="0.3", label=f"nearest {exact_label} eigenvalue")
    ax.set_xlabel("Ritz value index (largest first)")
    ax.set_ylabel("eigenvalue")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return ax


@styled
def draw_diagonal(ax: Axes, diagonals, labels: Sequence[str] | None = None, *, bins: int = 60) -> Axes:
    """Fig. 3c style: histogram of log10 of the diagonal-Fisher entries, one step line per run.

    Zero entries (dead units, unused parameters) cannot go on a log axis; their fraction
    is written in the legend instead of being dropped silently.
    """
    runs = _as_list(diagonals)
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(runs))]
    positive = [d[d > 0] for d in runs]
    if not any(p.size for p in positive):
        ax.text(0.5, 0.5, "all entries are zero", ha="center", transform=ax.transAxes)
        return ax
    lo = min(np.log10(p.min()) for p in positive if p.size)
    hi = max(np.log10(p.max()) for p in positive if p.size)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for d, p, label, (color, linestyle) in zip(runs, positive, labels, line_styles(labels)):
        zeros = 1 - p.size / d.size
        ax.hist(np.log10(p), bins=edges, histtype="step", color=color, linestyle=linestyle,
                label=f"{label} ({100 * zeros:.1f}% exactly 0)")
    ax.set_yscale("log")
    ax.set_xlabel("log10 diagonal Fisher entry")
    ax.set_ylabel("count")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax
