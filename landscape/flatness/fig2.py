"""Data for the paper's Fig. 2: local entropy concentrates on wide valleys (Chaudhari et al. 2017, Sec. 3).

The cartoon energy has a wide, shallow minimum at x_robust and a sharp, deeper one at
x_non-robust. For a large scope gamma the negative local entropy -F(x, gamma) follows f
and its minimum is the sharp one; as gamma decreases the Gaussian window of Eq. (4)
averages over the valleys and the minimum of -F moves to the wide valley.

Here -F is reported relative to the flat reference, i.e. the curve is
-(F(x, gamma) - (1/2) log(2 pi / gamma)) per dimension, which tends to f(x) as gamma grows
and so is drawn on the same axis as f. Everything is computed by quadrature
(:mod:`landscape.flatness.quadrature`); the 2-D version also runs the Langevin estimator
at a few anchors so the two can be compared on one picture. Data only: plotting belongs
to :mod:`landscape.plots`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from landscape.flatness.local_entropy import scope_curve
from landscape.flatness.quadrature import energy_on_grid, grid_local_entropy

__all__ = ["FIG2_1D", "FIG2_2D", "fig2_1d", "fig2_2d", "fig2_energy_1d", "fig2_energy_2d", "write_fig2"]

# Wells: (centre, depth, width). Depths are in units of the temperature (1 in Eq. 4).
FIG2_1D = {"robust": (-1.5, 2.0, 0.6), "non_robust": (1.5, 3.0, 0.05), "confinement": 0.05}
FIG2_2D = {"robust": ((-1.5, 0.0), 2.0, 0.6), "non_robust": ((1.5, 0.0), 3.5, 0.15), "confinement": 0.05}


def _wells(sq_wide: Tensor, sq_sharp: Tensor, sq_origin: Tensor, params: dict) -> Tensor:
    _, depth_w, width_w = params["robust"]
    _, depth_s, width_s = params["non_robust"]
    return (0.5 * params["confinement"] * sq_origin
            - depth_w * torch.exp(-sq_wide / (2 * width_w**2))
            - depth_s * torch.exp(-sq_sharp / (2 * width_s**2)))


def fig2_energy_1d(x: Tensor) -> Tensor:
    """The 1-D cartoon: a wide shallow Gaussian well, a sharp deep one, weak confinement."""
    p = FIG2_1D
    return _wells((x[0] - p["robust"][0]) ** 2, (x[0] - p["non_robust"][0]) ** 2, x[0] ** 2, p)


def fig2_energy_2d(x: Tensor) -> Tensor:
    """The 2-D version: a wide shallow well and a sharp deep one (a two-well landscape)."""
    p = FIG2_2D
    (rx, ry), (sx, sy) = p["robust"][0], p["non_robust"][0]
    return _wells((x[0] - rx) ** 2 + (x[1] - ry) ** 2, (x[0] - sx) ** 2 + (x[1] - sy) ** 2, x[0] ** 2 + x[1] ** 2, p)


def _integration_axis(lo: float, hi: float, gamma_min: float, spacing: float, width: float) -> np.ndarray:
    pad = width / math.sqrt(gamma_min)
    k = int(math.ceil((hi - lo + 2 * pad) / (2 * spacing)))
    return lo - pad + spacing * np.arange(2 * k + 1)  # odd node count: the stride-2 rule keeps both ends


def fig2_1d(gammas=(1000.0, 10.0, 1.0), *, x_range=(-3.5, 3.5), num_x: int = 701, spacing: float = 0.01,
            width: float = 10.0) -> dict:
    """-F(x, gamma) (flat-referenced) of :func:`fig2_energy_1d` on a line, by quadrature, per scope.

    Returns numpy arrays: ``x (m,)``, ``f (m,)``, ``gammas (k,)``, ``neg_local_entropy (k, m)``
    and ``error (k, m)`` (``|G_h - G_2h|``, the trapezoid error estimate), plus
    ``argmin_x (k,)`` (the minimiser of -F per scope), ``argmin_f``, ``x_robust`` and
    ``x_non_robust``. ``spacing`` must resolve the sharp well (width 0.05; the trapezoid error at h = 0.2 x width is
    far below 1e-6, and ``error`` reports it).
    """
    gammas = np.asarray(gammas, dtype=np.float64)
    x = np.linspace(*x_range, num_x)
    axis = _integration_axis(x_range[0], x_range[1], float(gammas.min()), spacing, width)
    f_axis = energy_on_grid(fig2_energy_1d, [axis])
    f = energy_on_grid(fig2_energy_1d, [x])
    neg, err = [], []
    for g in gammas:
        fine = grid_local_entropy([axis], f_axis, x[:, None], float(g))
        coarse = grid_local_entropy([axis], f_axis, x[:, None], float(g), stride=2)
        neg.append(-fine)
        err.append(np.abs(fine - coarse))
    neg_arr = np.array(neg)
    return {
        "x": x, "f": f, "gammas": gammas, "neg_local_entropy": neg_arr, "error": np.array(err),
        "argmin_x": x[np.argmin(neg_arr, axis=1)], "argmin_f": np.array(x[np.argmin(f)]),
        "x_robust": np.array(FIG2_1D["robust"][0]), "x_non_robust": np.array(FIG2_1D["non_robust"][0]),
    }


def fig2_2d(gammas=(1000.0, 10.0, 1.0), *, extent=((-3.0, 3.0), (-2.0, 2.0)), num_anchor=(61, 41),
            spacing: float = 0.02, width: float = 9.0, compare_points=((-1.5, 0.0), (1.5, 0.0), (0.0, 0.0)),
            compare_gammas=(10.0, 3.0, 1.0), seed: int = 0, sgld_options: dict | None = None,
            log=None) -> dict:
    """The 2-D picture: -F maps by quadrature, and SGLD against quadrature at a few anchors.

    Returns numpy arrays: ``x (mx,)``, ``y (my,)``, ``f (mx, my)``, ``gammas (k,)``,
    ``neg_local_entropy (k, mx, my)``, ``argmin (k, 2)``; and the comparison
    ``compare_points (p, 2)``, ``compare_gammas (q,)``, ``quadrature (p, q)`` (-F),
    ``quadrature_error (p, q)``, ``sgld (p, q)`` (-F) and ``sgld_stderr (p, q)``. One SGLD
    anneal per point covers all ``compare_gammas`` (:func:`scope_curve`, seeded by
    ``seed + point index``, options ``sgld_options``). ``compare_points=()`` skips SGLD.
    ``log(message)`` hears after each anchor's anneal (each takes tens of seconds).
    """
    gammas = np.asarray(gammas, dtype=np.float64)
    xs = np.linspace(*extent[0], num_anchor[0])
    ys = np.linspace(*extent[1], num_anchor[1])
    all_gammas = np.concatenate([gammas, np.asarray(compare_gammas, dtype=np.float64)])
    axes = [_integration_axis(lo, hi, float(all_gammas.min()), spacing, width) for lo, hi in extent]
    f_grid = energy_on_grid(fig2_energy_2d, axes)
    mesh = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    maps = np.array([-grid_local_entropy(axes, f_grid, mesh, float(g)).reshape(xs.size, ys.size) for g in gammas])
    argmin = np.array([mesh[np.argmin(m.reshape(-1))] for m in maps])
    points = np.asarray(compare_points, dtype=np.float64).reshape(-1, 2)
    cg = np.asarray(compare_gammas, dtype=np.float64)
    quad = np.array([[-grid_local_entropy(axes, f_grid, p[None, :], float(g))[0] for g in cg] for p in points])
    quad_err = np.array([[abs(grid_local_entropy(axes, f_grid, p[None, :], float(g))[0]
                              - grid_local_entropy(axes, f_grid, p[None, :], float(g), stride=2)[0]) for g in cg]
                         for p in points])
    sgld = np.full((len(points), cg.size), np.nan)
    sgld_err = np.full_like(sgld, np.nan)
    for i, p in enumerate(points):
        curve = scope_curve(fig2_energy_2d, torch.as_tensor(p), cg, method="sgld", seed=seed + i,
                            **(sgld_options or {}))
        order = np.searchsorted(curve.gammas, cg)
        sgld[i] = -curve.estimates[order]
        sgld_err[i] = curve.stderrs[order]
        if log is not None:
            log(f"Fig. 2: SGLD anneal at anchor {i + 1}/{len(points)} done")
    return {
        "x": xs, "y": ys, "f": energy_on_grid(fig2_energy_2d, [xs, ys]), "gammas": gammas,
        "neg_local_entropy": maps, "argmin": argmin,
        "compare_points": points, "compare_gammas": cg, "quadrature": quad, "quadrature_error": quad_err,
        "sgld": sgld, "sgld_stderr": sgld_err,
        "x_robust": np.array(FIG2_2D["robust"][0]), "x_non_robust": np.array(FIG2_2D["non_robust"][0]),
    }


def write_fig2(out_dir, *, with_2d: bool = True, seed: int = 0, sgld_options: dict | None = None,
               log=None) -> dict:
    """Compute the Fig. 2 data and write ``out_dir/fig2.npz`` (arrays) and ``fig2.json`` (summary), atomically.

    Arrays of the 1-D picture are stored under ``d1_<name>``, those of the 2-D one under
    ``d2_<name>`` (names as returned by :func:`fig2_1d` / :func:`fig2_2d`). The JSON holds
    the well parameters, the scopes and where the minimum of -F sits for each scope: the
    numbers the plot annotates. Returns the summary.
    """
    import time
    from pathlib import Path

    from landscape.io import write_arrays_and_summary

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    one = fig2_1d()
    arrays = {f"d1_{k}": np.asarray(v) for k, v in one.items()}
    summary = {
        "energy_1d": {k: list(v) if isinstance(v, tuple) else v for k, v in FIG2_1D.items()},
        "gammas_1d": one["gammas"].tolist(),
        "argmin_neg_local_entropy_1d": one["argmin_x"].tolist(),
        "argmin_energy_1d": float(one["argmin_f"]),
        "max_quadrature_error_1d": float(np.max(one["error"])),
    }
    if with_2d:
        two = fig2_2d(seed=seed, sgld_options=sgld_options, log=log)
        arrays.update({f"d2_{k}": np.asarray(v) for k, v in two.items()})
        summary.update({
            "gammas_2d": two["gammas"].tolist(),
            "argmin_neg_local_entropy_2d": two["argmin"].tolist(),
            "sgld_minus_quadrature_in_stderrs": ((two["sgld"] - two["quadrature"]) / two["sgld_stderr"]).tolist(),
        })
    summary["wall_s"] = time.perf_counter() - start
    write_arrays_and_summary(out / "fig2.npz", out / "fig2.json", arrays, summary)  # one unit by hash
    return summary
