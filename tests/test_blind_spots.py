"""Absolute numbers that the other tests only see relative to the code's own conventions.

Each test here compares a library result with a truth computed independently of the
library: a closed form, a separate quadrature, a spectrum known by construction, or a
recomputation from the documented definition.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize
from torch import nn
from torch.func import functional_call

from landscape.flatness import local_entropy, pac_bayes_sigma
from landscape.spectra.slq import slq

# ---- absolute local entropy F(x, gamma) of Eq. (4) ------------------------------------------------


def gaussian_log_partition(A: np.ndarray, x: np.ndarray, gamma: float) -> float:
    """log of the integral of exp(-x'^T A x' / 2 - gamma |x - x'|^2 / 2) over x' (completing the square)."""
    n = len(x)
    K = A + gamma * np.eye(n)
    _, logdet = np.linalg.slogdet(K)
    return (0.5 * n * math.log(2 * math.pi) - 0.5 * logdet - 0.5 * gamma * float(x @ x)
            + 0.5 * gamma**2 * float(x @ np.linalg.solve(K, x)))


def scipy_log_partition(A: np.ndarray, x: np.ndarray, gamma: float) -> float:
    """The same integral by scipy's adaptive quadrature (QUADPACK), over a box holding all but ~1e-30 of it."""
    n = len(x)
    K = A + gamma * np.eye(n)
    centre = np.linalg.solve(K, gamma * x)  # the integrand's peak
    half = 12.0 / math.sqrt(float(np.linalg.eigvalsh(K)[0]))

    def integrand(*v):
        v = np.array(v[::-1]) if n == 2 else np.array(v)  # dblquad passes (inner, outer)
        return math.exp(-0.5 * v @ A @ v - 0.5 * gamma * float((x - v) @ (x - v)))

    if n == 1:
        value, _ = integrate.quad(integrand, centre[0] - half, centre[0] + half, epsabs=0, epsrel=1e-13, limit=200)
    else:
        value, _ = integrate.dblquad(lambda b, a: integrand(b, a), centre[0] - half, centre[0] + half,
                                     centre[1] - half, centre[1] + half, epsabs=0, epsrel=1e-12)
    return math.log(value)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("gamma", [0.25, 2.0, 30.0])
def test_absolute_local_entropy_of_a_gaussian_energy(n, gamma):
    """result.local_entropy is F itself: the closed form and QUADPACK, neither of which knows the flat reference."""
    A = np.array([[3.0]]) if n == 1 else np.array([[3.0, 1.0], [1.0, 0.5]])
    x = np.array([0.4, -1.1][:n])
    closed = gaussian_log_partition(A, x, gamma)
    assert scipy_log_partition(A, x, gamma) == pytest.approx(closed, abs=1e-9)
    At = torch.tensor(A)
    energy = lambda v: 0.5 * v @ (At @ v)  # noqa: E731
    x0 = torch.tensor(x)
    for method in ("quadrature", "laplace"):
        result = local_entropy(energy, x0, gamma, method=method)
        assert result.local_entropy == pytest.approx(closed, abs=1e-8), method


def test_absolute_local_entropy_of_a_constant_energy_is_the_gaussian_normaliser():
    """f = c: F = -c + log of the Gaussian integral, (n/2) log(2 pi / gamma), by QUADPACK rather than by formula."""
    for n in (1, 2):
        for gamma in (0.1, 7.0):
            zero = np.zeros((n, n))
            normaliser = scipy_log_partition(zero, np.zeros(n), gamma)
            energy = lambda v: torch.tensor(2.5, dtype=torch.float64) + 0 * v.sum()  # noqa: E731
            result = local_entropy(energy, torch.zeros(n, dtype=torch.float64), gamma, method="quadrature")
            assert result.local_entropy == pytest.approx(-2.5 + normaliser, abs=1e-9)


# ---- the SLQ density against a spectrum known by construction ---------------------------------------

CLUSTERS = ((0.0, 0.5, 60), (4.0, 4.5, 360), (10.0, 10.5, 180))  # (low, high, count): masses 0.1, 0.6, 0.3


def clustered_spectrum() -> np.ndarray:
    return np.concatenate([np.linspace(lo, hi, k) for lo, hi, k in CLUSTERS])


def interval_mass(grid: np.ndarray, values: np.ndarray, lo: float, hi: float) -> float:
    inside = (grid >= lo) & (grid <= hi)
    return float(np.trapezoid(values[inside], grid[inside]))


@pytest.mark.parametrize("rotated", [False, True])
def test_slq_density_puts_each_cluster_s_mass_where_the_eigenvalues_are(rotated):
    """Equal-width clusters holding 10%, 60% and 30% of the eigenvalues: the density's mass on each is that
    fraction (Gauss weights carry the mass; the nodes alone spread evenly over the three clusters)."""
    lam = clustered_spectrum()
    if rotated:
        Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((lam.size, lam.size)))
        A = torch.tensor((Q * lam) @ Q.T)
    else:
        A = torch.diag(torch.tensor(lam))
    result = slq(A, num_probes=30, num_iters=40, seed=0)
    grid, values = result.density(np.linspace(-2.0, 13.0, 30001), bandwidth=0.05)
    tol = 0.01 if not rotated else 0.03  # rotated: each probe sees the clusters with O(n^-1/2) noise
    for (lo, hi, count) in CLUSTERS:
        assert interval_mass(grid, values, lo - 1.0, hi + 1.0) == pytest.approx(count / lam.size, abs=tol)


def test_slq_density_moments_are_those_of_the_spectrum_plus_the_kernel_s_variance():
    """Diagonal A and Rademacher probes: each probe's measure is exactly the empirical spectral measure, so
    the m-point Gauss rule gets moments up to 2m - 1 exactly; the Gaussian kernel adds its variance h^2."""
    lam = clustered_spectrum()
    h = 0.2
    result = slq(torch.diag(torch.tensor(lam)), num_probes=3, num_iters=12, seed=4)
    grid, values = result.density(np.linspace(-3.0, 14.0, 40001), bandwidth=h)
    moments = [float(np.trapezoid(values * grid**k, grid)) for k in range(4)]
    assert moments[0] == pytest.approx(1.0, abs=1e-10)
    assert moments[1] == pytest.approx(lam.mean(), rel=1e-10)
    assert moments[2] == pytest.approx(np.mean(lam**2) + h**2, rel=1e-10)
    assert moments[3] == pytest.approx(np.mean(lam**3) + 3 * h**2 * lam.mean(), rel=1e-10)
