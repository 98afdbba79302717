"""Stochastic Lanczos quadrature (SLQ): the spectral density from matrix-vector products.

For a unit probe v and m Lanczos steps from v, the tridiagonal T_m = S diag(theta) S^T
defines an m-point Gauss quadrature of the spectral measure of A seen from v:

    v^T f(A) v  ~=  sum_j  tau_j f(theta_j),   tau_j = S[0, j]^2,

exact for polynomials f of degree <= 2m - 1 (Golub & Meurant 2010, Ch. 6). Averaging
over probes with E[v v^T] = I / n gives the density (1/n) sum_i delta(lambda - lambda_i)
(Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019). Nodes are the eigenvalues of
the tridiagonal from a symmetric eigensolver, weights the squared first components of
its eigenvectors (docs/design.md sec. 4), and each probe's weights sum to 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from landscape.curvature.base import as_operator
from landscape.spectra.lanczos import lanczos_tridiagonal, tridiagonal_eigh


@dataclass
class SLQResult:
    """Quadrature nodes and weights, one row per probe (``(num_probes, num_iters)``).

    A probe whose Krylov space became invariant early has fewer than ``num_iters``
    nodes; its row is padded with weight-0 nodes.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n: int
    num_probes: int
    num_iters: int
    seed: int
    hvp_count: int
    wall_s: float

    def density(
        self,
        grid: np.ndarray | None = None,
        *,
        bandwidth: float | None = None,
        scale: str = "linear",
        num_points: int = 1000,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian-smoothed density ``(grid, values)``.

        ``scale="linear"``: values integrate to 1 over lambda; the default bandwidth is
        1% of the node range. ``scale="log"``: the density of log10|lambda| (the view
        that shows both tails near zero), default bandwidth 0.05 decades. The bandwidth
        used is the one given: report it beside any figure.
        """
        nodes = self.nodes.reshape(-1)
        weights = self.weights.reshape(-1) / self.num_probes
        if scale == "log":
            keep = np.abs(nodes) > 0
            x = np.log10(np.abs(nodes[keep]))
            w = weights[keep]
            bandwidth = 0.05 if bandwidth is None else bandwidth
        elif scale == "linear":
            x, w = nodes, weights
            span = float(x.max() - x.min()) or 1.0
            bandwidth = 0.01 * span if bandwidth is None else bandwidth
        else:
            raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
        if grid is None:
            grid = np.linspace(x.min() - 3 * bandwidth, x.max() + 3 * bandwidth, num_points)
        z = (grid[:, None] - x[None, :]) / bandwidth
        values = (np.exp(-0.5 * z * z) @ w) / (bandwidth * math.sqrt(2 * math.pi))
        return grid, values

    def trace_estimate(self) -> tuple[float, float]:
        """``n * E_v[v^T A v]`` with its standard error over probes."""
        per_probe = self.n * (self.weights * self.nodes).sum(axis=1)
        stderr = float(per_probe.std(ddof=1) / math.sqrt(len(per_probe))) if len(per_probe) > 1 else float("nan")
        return float(per_probe.mean()), stderr

    def expectation(self, f) -> tuple[float, float]:
        """``tr f(A) = n E_v[v^T f(A) v]`` for a vectorised ``f``, with standard error."""
        per_probe = self.n * (self.weights * f(self.nodes)).sum(axis=1)
        stderr = float(per_probe.std(ddof=1) / math.sqrt(len(per_probe))) if len(per_probe) > 1 else float("nan")
        return float(per_probe.mean()), stderr


def slq(A, num_probes: int = 10, num_iters: int = 90, seed: int = 0,
        on_probe: Callable[[int, int], None] | None = None) -> SLQResult:
    """Stochastic Lanczos quadrature with Rademacher probes (normalised to unit length).

    ``on_probe(done, num_probes)`` is called after each probe's Lanczos run (progress).
    """
    start = time.perf_counter()
    op = as_operator(A)
    n = op.shape[0]
    if num_probes < 1 or num_iters < 1:
        raise ValueError("num_probes and num_iters must be >= 1")
    m = min(num_iters, n)
    before = op.count
    g = torch.Generator().manual_seed(seed)
    nodes = np.zeros((num_probes, m))
    weights = np.zeros((num_probes, m))
    for p in range(num_probes):
        v = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
        alpha, beta = lanczos_tridiagonal(op, m, v0=v)
        theta, S = tridiagonal_eigh(alpha, beta)
        k = len(theta)
        nodes[p, :k] = theta
        weights[p, :k] = S[0, :] ** 2
        if k < m:
            nodes[p, k:] = theta[-1]
        if on_probe is not None:
            on_probe(p + 1, num_probes)
    return SLQResult(nodes=nodes, weights=weights, n=n, num_probes=num_probes, num_iters=m, seed=seed,
                     hvp_count=op.count - before, wall_s=time.perf_counter() - start)
