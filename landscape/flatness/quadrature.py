"""Local entropy by numerical integration, for energies of dimension 1 or 2.

The integral of Eq. (4) (Chaudhari et al. 2017) is taken by the composite trapezoid rule
on a uniform tensor grid over a box around the anchor x. The integrand is smooth and, on
a box large enough, negligible at the edges; for such integrands the trapezoid rule
converges faster than any power of the spacing h (the Euler-Maclaurin boundary terms
vanish), so the difference between the rule at h and at 2h (every other node) is a
conservative estimate of the error at h. The box half-width defaults to ``width /
sqrt(gamma)`` around x plus ``margin`` (for energies that pull mass away from x) and is
doubled, at the same spacing, while the integrand on the boundary exceeds ``edge_tol``
times its maximum: the truncation indicator reported is that ratio.

Everything is in log space (log-sum-exp), and results are relative to the flat reference
(n/2) log(2 pi / gamma), like every estimator in :mod:`landscape.flatness`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import logsumexp

from landscape.errors import LandscapeError
from landscape.flatness.energy import BatchedEnergy, Energy, check_point

__all__ = ["energy_on_grid", "grid_local_entropy", "quadrature_local_entropy", "quadrature_mean"]


def _log_trapezoid_weights(axis: np.ndarray) -> np.ndarray:
    if axis.size < 3:
        raise LandscapeError("A quadrature axis needs at least 3 points; raise num_points.")
    h = float(axis[1] - axis[0])
    w = np.full(axis.size, h)
    w[0] = w[-1] = 0.5 * h
    return np.log(w)


def energy_on_grid(energy: Energy, axes: Sequence[np.ndarray], *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> np.ndarray:
    """``f`` at every node of the tensor grid ``axes`` (shape ``(len(a0),)`` or ``(len(a0), len(a1))``)."""
    mesh = np.meshgrid(*axes, indexing="ij")
    points = torch.as_tensor(np.stack([m.reshape(-1) for m in mesh], axis=1), dtype=dtype, device=device)
    values = BatchedEnergy(energy).values(points)
    return values.detach().cpu().double().numpy().reshape(mesh[0].shape)


def grid_local_entropy(axes: Sequence[np.ndarray], f_values: np.ndarray, points: np.ndarray, gamma: float,
                       *, stride: int = 1) -> np.ndarray:
    """``F(x, gamma) - (n/2) log(2 pi / gamma)`` at each row of ``points (m, n)`` by the trapezoid rule.

    ``axes``: 1 or 2 uniform node arrays; ``f_values``: the energy on their tensor grid.
    ``stride=2`` uses every other node (the rule at spacing 2h, for the error estimate;
    node counts must be odd so the subgrid keeps the end points).
    """
    axes = [np.asarray(a, dtype=np.float64)[::stride] for a in axes]
    f = np.asarray(f_values, dtype=np.float64)[tuple(slice(None, None, stride) for _ in axes)]
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    n = len(axes)
    if points.shape[1] != n:
        raise LandscapeError(f"points must have {n} columns to match the grid, got {points.shape[1]}.")
    logw = [_log_trapezoid_weights(a) for a in axes]
    flat_ref = 0.5 * n * math.log(2.0 * math.pi / gamma)
    # per-axis Gaussian factors, stabilised row by row: (m, N_d)
    factors = []
    for d, (a, lw) in enumerate(zip(axes, logw)):
        factors.append(-0.5 * gamma * (points[:, d : d + 1] - a[None, :]) ** 2 + lw[None, :])
    if n == 1:
        return logsumexp(factors[0] - f[None, :], axis=1) - flat_ref
    # 2-D: the Gaussian kernel is separable, so Z(x) = k1(x)^T exp(-f) k2(x).
    k1_max = factors[0].max(axis=1, keepdims=True)
    k2_max = factors[1].max(axis=1, keepdims=True)
    f_min = float(f.min())
    K1, K2 = np.exp(factors[0] - k1_max), np.exp(factors[1] - k2_max)
    M = np.exp(-(f - f_min))
    Z = ((K1 @ M) * K2).sum(axis=1)
    out = np.log(np.where(Z > 0, Z, 1.0)) + k1_max[:, 0] + k2_max[:, 0] - f_min
    bad = ~(Z > 1e-250) | ~np.isfinite(out)
    for i in np.flatnonzero(bad):  # underflow of the factored form: exact log-sum-exp
        out[i] = logsumexp(factors[0][i][:, None] + factors[1][i][None, :] - f)
    return out - flat_ref


def _axes_for(x0: np.ndarray, half_widths: np.ndarray, h: np.ndarray) -> list[np.ndarray]:
    axes = []
    for c, r, step in zip(x0, half_widths, h):
        k = int(math.ceil(r / step))
        axes.append(c + step * np.arange(-k, k + 1))  # 2k + 1 nodes: odd, centred on x
    return axes


def _integration_box(energy, x0, gamma, *, bounds, num_points, width, margin, edge_tol, max_expansions,
                     max_evaluations):
    """The grid axes, the energy on them, the log integrand and the box diagnostics."""
    x0 = check_point(x0)
    n = x0.numel()
    if n not in (1, 2):
        raise LandscapeError(f"Quadrature handles energies of dimension 1 or 2, this one has {n}; "
                             "use method='laplace' or 'sgld'.")
    if not gamma > 0:
        raise LandscapeError(f"gamma must be positive, got {gamma}.")
    center = x0.detach().cpu().double().numpy()
    points_per_axis = num_points or (4001 if n == 1 else 801)
    points_per_axis += 1 - points_per_axis % 2
    if bounds is not None:
        if len(bounds) != n:
            raise LandscapeError(f"bounds needs one (low, high) pair per dimension ({n}).")
        axes = [np.linspace(lo, hi, points_per_axis) for lo, hi in bounds]
        expansions_allowed = 0
    else:
        half = np.full(n, width / math.sqrt(gamma) + margin)
        axes = _axes_for(center, half, 2 * half / (points_per_axis - 1))
        expansions_allowed = max_expansions
    for expansion in range(expansions_allowed + 1):
        f = energy_on_grid(energy, axes, dtype=x0.dtype, device=x0.device)
        mesh = np.meshgrid(*axes, indexing="ij")
        log_integrand = -f - 0.5 * gamma * sum((mesh[d] - center[d]) ** 2 for d in range(n))
        peak = float(log_integrand.max())
        edges = [log_integrand[0], log_integrand[-1]] if n == 1 else [
            log_integrand[0, :], log_integrand[-1, :], log_integrand[:, 0], log_integrand[:, -1]]
        edge = max(float(np.max(e)) for e in edges)
        edge_ratio = math.exp(min(0.0, edge - peak))
        too_big = np.prod([2 * a.size for a in axes]) > max_evaluations
        if edge_ratio <= edge_tol or expansion == expansions_allowed or too_big:
            break
        half = np.array([0.5 * (a[-1] - a[0]) for a in axes]) * 2.0
        h = np.array([a[1] - a[0] for a in axes])
        axes = _axes_for(center, half, h)  # same spacing, twice the box
    diagnostics = {
        "rule": "composite trapezoid on a uniform tensor grid; error = |G_h - G_2h| + boundary ratio",
        "bounds": [(float(a[0]), float(a[-1])) for a in axes],
        "num_points": [int(a.size) for a in axes],
        "spacing": [float(a[1] - a[0]) for a in axes],
        "boundary_ratio": edge_ratio,
        "expansions": expansion,
        "energy_evaluations": int(np.prod([a.size for a in axes])),
    }
    return axes, f, mesh, log_integrand, diagnostics


def quadrature_local_entropy(
    energy: Energy,
    x0: torch.Tensor,
    gamma: float,
    *,
    bounds: Sequence[tuple[float, float]] | None = None,
    num_points: int | None = None,
    width: float = 12.0,
    margin: float = 0.0,
    edge_tol: float = 1e-13,
    max_expansions: int = 4,
    max_evaluations: int = 4_000_000,
) -> tuple[float, float, dict]:
    """``(G, error estimate, diagnostics)`` with ``G = F(x0, gamma) - (n/2) log(2 pi / gamma)``, n = 1 or 2.

    ``bounds``: the box, one ``(low, high)`` per dimension (then never expanded);
    otherwise ``x0 +- (width / sqrt(gamma) + margin)``. ``num_points`` per axis (default
    4001 in 1-D, 801 in 2-D; forced odd). The box is doubled at most ``max_expansions``
    times and never beyond ``max_evaluations`` grid nodes. The error estimate is
    ``|G_h - G_2h|`` plus the boundary ratio (the integrand on the box boundary relative
    to its peak: a proxy for the truncated mass).
    """
    axes, f, _, _, diagnostics = _integration_box(
        energy, x0, gamma, bounds=bounds, num_points=num_points, width=width, margin=margin, edge_tol=edge_tol,
        max_expansions=max_expansions, max_evaluations=max_evaluations)
    point = x0.detach().cpu().double().numpy()[None, :]
    value = float(grid_local_entropy(axes, f, point, gamma)[0])
    coarse = float(grid_local_entropy(axes, f, point, gamma, stride=2)[0])
    diagnostics["refinement_difference"] = abs(value - coarse)
    return value, abs(value - coarse) + diagnostics["boundary_ratio"], diagnostics


def quadrature_mean(energy: Energy, x0: torch.Tensor, gamma: float, **options) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(<x'>, error estimate, diagnostics)`` under P(x'; x0, gamma) of Eq. (8), n = 1 or 2.

    Same grid and options as :func:`quadrature_local_entropy`; the error is the
    per-coordinate difference from the rule at twice the spacing.
    """
    defaults = {"bounds": None, "num_points": None, "width": 12.0, "margin": 0.0, "edge_tol": 1e-13,
                "max_expansions": 4, "max_evaluations": 4_000_000}
    unknown = set(options) - set(defaults)
    if unknown:
        raise LandscapeError(f"Option(s) {', '.join(sorted(unknown))} do not apply to quadrature.")
    axes, f, mesh, log_integrand, diagnostics = _integration_box(energy, x0, gamma, **{**defaults, **options})

    def mean(stride: int) -> np.ndarray:
        sl = tuple(slice(None, None, stride) for _ in axes)
        logw = sum(np.meshgrid(*[_log_trapezoid_weights(a[::stride]) for a in axes], indexing="ij"))
        logp = log_integrand[sl] + logw
        p = np.exp(logp - logp.max())
        p /= p.sum()
        return np.array([float((p * m[sl]).sum()) for m in mesh])

    fine = mean(1)
    return fine, np.abs(fine - mean(2)) + diagnostics["boundary_ratio"], diagnostics
