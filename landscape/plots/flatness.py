"""Flatness figures: local-energy curves, flatness vs test error, and the paper's Fig. 2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from landscape.flatness.correlation import kendall_tau_ci
from landscape.plots.style import color_for, line_styles, marker_for, styled

__all__ = ["draw_local_energy", "draw_local_energy_groups", "draw_correlation", "draw_fig2_1d", "draw_fig2_2d"]


@styled
def draw_local_energy(ax: Axes, results: Mapping[str, dict], *, split: str = "train", metric: str = "loss",
                      legend: bool = True) -> Axes:
    """delta E(sigma) = E[L(w (1 + sigma z))] - L(w) per run, with standard-error bars.

    ``results`` maps a label to the JSON written by ``landscape flatness --measure
    local-energy`` (``sigmas``, ``delta``, ``stderr``, ``noise``). The noise kind goes in
    the axis label: additive and multiplicative curves are not comparable.
    """
    noises = set()
    for i, ((label, result), (color, linestyle)) in enumerate(zip(results.items(), line_styles(list(results)))):
        sigmas = np.asarray(result["sigmas"], dtype=np.float64)
        delta = np.asarray(result["delta"][split][metric], dtype=np.float64)
        err = np.asarray(result["stderr"][split][metric], dtype=np.float64)
        scale = 100.0 if metric == "error" else 1.0
        ax.errorbar(sigmas, scale * delta, yerr=scale * err, marker=marker_for(label, i), markersize=3.5, capsize=2,
                    color=color, linestyle=linestyle, label=label)
        noises.add(result.get("noise", "multiplicative"))
    noise = "/".join(sorted(noises)) or "multiplicative"
    ax.set_xlabel(f"noise scale σ ({noise}: " + ("w(1+σz)" if noise == "multiplicative" else "w+σz") + ")")
    ax.set_ylabel(f"Δ {split} {metric}" + (" (%)" if metric == "error" else ""))
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax


@styled
def draw_local_energy_groups(ax: Axes, groups: Mapping[str, Sequence[dict]], *, split: str = "train",
                             metric: str = "loss", legend: bool = True) -> Axes:
    """Local energy per optimizer over a population: the mean of delta E(sigma) over the group's runs,
    with the band between the lowest and highest run (runs on other sigma grids than the group's first
    are left out of the mean)."""
    noises = set()
    for i, ((label, results), (color, linestyle)) in enumerate(zip(groups.items(), line_styles(list(groups)))):
        sigmas = np.asarray(results[0]["sigmas"], dtype=np.float64)
        same = [r for r in results if np.array_equal(np.asarray(r["sigmas"], dtype=np.float64), sigmas)]
        curves = np.array([r["delta"][split][metric] for r in same], dtype=np.float64)
        scale = 100.0 if metric == "error" else 1.0
        ax.plot(sigmas, scale * curves.mean(axis=0), marker=marker_for(label, i), markersize=3.5, color=color,
                linestyle=linestyle,
                label=f"{label} ({len(same)} run{'s' if len(same) != 1 else ''})")
        if len(same) > 1:
            ax.fill_between(sigmas, scale * curves.min(axis=0), scale * curves.max(axis=0), color=color, alpha=0.2,
                            linewidth=0)
        noises.update(r.get("noise", "multiplicative") for r in same)
    noise = "/".join(sorted(noises)) or "multiplicative"
    ax.set_xlabel(f"noise scale σ ({noise})")
    ax.set_ylabel(f"Δ {split} {metric}" + (" (%)" if metric == "error" else "") + ", mean over runs")
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax


@styled
def draw_correlation(ax: Axes, values: Sequence[float], test_errors: Sequence[float], *, name: str,
                     labels: Sequence[str] | None = None, log_x: bool | None = None, seed: int = 0,
                     granulated: Mapping[str, float] | None = None, legend: bool = True) -> Axes:
    """Scatter of one flatness measure against test error, Kendall tau and its 95% CI in the title.

    ``granulated`` (hyper-parameter -> psi, plus "Psi") adds Jiang et al.'s granulated
    tau as a third title line.

    Points are coloured by ``labels`` (e.g. the optimizer). The statistics are computed on
    the values as given; log_x only changes the drawing (default: when all values are
    positive and span more than two decades).
    """
    x = np.asarray(values, dtype=np.float64)
    y = 100 * np.asarray(test_errors, dtype=np.float64)
    labels = list(labels) if labels is not None else ["model"] * len(x)
    stats = kendall_tau_ci(x, y, seed=seed)
    finite = x[np.isfinite(x)]
    if log_x is None:
        log_x = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > 100
    # on a linear axis the power of ten goes in the axis label: matplotlib's offset text sat on the label
    top = float(np.max(np.abs(finite))) if finite.size else 0.0
    power = 0 if log_x or top == 0 or 1e-2 <= top < 1e4 else int(np.floor(np.log10(top)))
    shown = x / 10.0**power
    for i, label in enumerate(dict.fromkeys(labels)):
        mask = np.array([lab == label for lab in labels])
        ax.scatter(shown[mask], y[mask], s=16, color=color_for(label, i), marker=marker_for(label, i), label=label,
                   alpha=0.85)
    title = f"{name}\nKendall τ = {stats.tau:+.2f}  [{stats.low:+.2f}, {stats.high:+.2f}] (95%, n={stats.n})"
    if granulated:
        parts = [f"ψ {k} {v:+.2f}" for k, v in granulated.items() if k != "Psi" and np.isfinite(v)]
        if np.isfinite(granulated.get("Psi", np.nan)):
            parts.append(f"Ψ {granulated['Psi']:+.2f}")
        title += "\n" + ", ".join(parts)
    ax.set_title(title, fontsize=7)
    if log_x:
        ax.set_xscale("log")
    else:  # few ticks: long decimals overlapped on narrow panels
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.set_xlabel(name if power == 0 else f"{name} (×1e{power})")
    ax.set_ylabel("test error (%)")
    if legend and len(set(labels)) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7)
    return ax


@styled
def draw_fig2_1d(ax: Axes, data: Mapping[str, np.ndarray], *, gammas: Sequence[float] | None = None) -> Axes:
    """Fig. 2: the energy f(x) and -F(x, gamma) (relative to the flat reference) for chosen scopes.

    ``data`` is ``fig2.npz`` as written by :func:`landscape.flatness.fig2.write_fig2`
    (keys ``d1_*``). The minimum of each curve is marked: for a large scope it is the sharp
    minimum of f, for a small one it moves to the wide valley.
    """
    x = data["d1_x"]
    ax.plot(x, data["d1_f"], color="0.2", linewidth=1.4, label="f(x)")
    all_gammas = list(np.asarray(data["d1_gammas"]).ravel())
    chosen = all_gammas if gammas is None else [g for g in all_gammas if any(np.isclose(g, gammas))]
    for i, gamma in enumerate(chosen):
        row = all_gammas.index(gamma)
        curve = data["d1_neg_local_entropy"][row]
        color = color_for(f"gamma{i}", i + 1)
        ax.plot(x, curve, color=color, linewidth=1.1, label=f"-F(x, γ={gamma:g})")
        k = int(np.argmin(curve))
        ax.plot([x[k]], [curve[k]], "v", color=color, markersize=5)
    ax.axvline(float(data["d1_x_robust"]), color="0.6", linestyle=":", linewidth=0.8)
    ax.axvline(float(data["d1_x_non_robust"]), color="0.6", linestyle=":", linewidth=0.8)
    ax.set_xlabel("x  (dotted: wide valley, sharp minimum)")
    ax.set_ylabel("energy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax


@styled
def draw_fig2_2d(axes: Sequence[Axes], data: Mapping[str, np.ndarray]) -> Sequence[Axes]:
    """The 2-D Fig. 2: f and -F for each scope as filled contours, with the minimum of each map.

    The SGLD-vs-quadrature comparison points are drawn on the -F maps, annotated with the
    difference in standard errors.
    """
    xs, ys = data["d2_x"], data["d2_y"]
    maps = [("f(x)", data["d2_f"])] + [
        (f"-F, γ={g:g}", m) for g, m in zip(data["d2_gammas"], data["d2_neg_local_entropy"])
    ]
    for ax, (title, values) in zip(axes, maps):
        ax.contourf(xs, ys, np.asarray(values).T, levels=20, cmap="viridis")
        k = np.unravel_index(int(np.argmin(values)), np.shape(values))
        ax.plot([xs[k[0]]], [ys[k[1]]], "r*", markersize=7)
        ax.set_title(title, fontsize=8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.set_xlabel("x₁", fontsize=7)
        ax.set_ylabel("x₂", fontsize=7, labelpad=1)
    if "d2_compare_points" in data and len(axes) > 1:
        points = np.asarray(data["d2_compare_points"])
        diff = (np.asarray(data["d2_sgld"]) - np.asarray(data["d2_quadrature"])) / np.asarray(data["d2_sgld_stderr"])
        cmp_gammas = list(np.asarray(data["d2_compare_gammas"]).ravel())
        for row, gamma in enumerate(cmp_gammas):
            matches = [j for j, g in enumerate(np.asarray(data["d2_gammas"]).ravel()) if np.isclose(g, gamma)]
            if not matches or matches[0] + 1 >= len(axes):
                continue
            ax = axes[matches[0] + 1]
            for p, d in zip(points, diff[row]):
                ax.plot([p[0]], [p[1]], "wo", markersize=3)
                ax.annotate(f"{d:+.1f}σ", (p[0], p[1]), fontsize=5, color="white", xytext=(2, 2),
                            textcoords="offset points")
    return axes
