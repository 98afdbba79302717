"""Absolute local entropy, the SLQ density and estimates, sigma', Fisher-Rao and epsilon-sharpness.

Each test compares a library result with a truth computed without the library: a closed
form, scipy's quadrature or root finder, a spectrum known by construction, per-sample
gradients, a brute-force maximum, or a recomputation from the documented definition.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from unittest.mock import ANY

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

CLUSTERS = ((0.0, 0.5, 20), (4.0, 4.5, 120), (10.0, 10.5, 60))  # (low, high, count): masses 0.1, 0.6, 0.3


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
    result = slq(A, num_probes=20 if rotated else 2, num_iters=30, seed=0)
    grid, values = result.density(np.linspace(-2.0, 13.0, 6001), bandwidth=0.05)
    tol = 0.01 if not rotated else 0.04  # rotated: each probe sees the clusters with O(n^-1/2) noise
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


# ---- PAC-Bayes sigma' recomputed from its definition ----------------------------------------------


@pytest.mark.parametrize("noise", ["multiplicative", "additive"])
def test_pac_bayes_sigma_recomputed_on_a_model_whose_loss_is_far_from_zero(noise):
    """Random labels keep the loss near 1.5, so a deviation measured from 0 instead of from L(w) is far off.
    sigma' is recomputed from the definition with the documented draws (standard normal, float64, one
    CPU generator seeded with ``seed``, in parameter order) and scipy's root finder."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    base = {n: p.detach() for n, p in model.named_parameters()}

    def loss(params) -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(functional_call(model, params, (x,)), y))

    base_loss = loss(base)
    assert base_loss > 1.0
    draws_gen = torch.Generator().manual_seed(7)
    draws = [{n: torch.randn(p.shape, generator=draws_gen, dtype=torch.float64) for n, p in base.items()}
             for _ in range(5)]

    def deviation(sigma: float) -> float:
        moved = [{n: (w * (1 + sigma * z[n]) if noise == "multiplicative" else w + sigma * z[n])
                  for n, w in base.items()} for z in draws]
        return float(np.mean([loss(p) for p in moved])) - base_loss

    target, rtol = 0.05, 1e-3
    truth = optimize.brentq(lambda s: deviation(s) - target, 1e-5, 10.0, xtol=1e-12, rtol=1e-12)
    result = pac_bayes_sigma(model, (x, y), target=target, metric="loss", noise=noise, samples=5, seed=7, rtol=rtol)
    assert result.extra["bracketed"] and result.extra["base"] == pytest.approx(base_loss, rel=1e-12)
    assert truth / (1 + rtol) <= result.value <= truth * (1 + 1e-9)


# ---- Fisher-Rao norm against w^T F w from per-sample gradients ---------------------------------------


def test_model_fisher_rao_norm_equals_w_fisher_w_from_per_sample_gradients():
    """F = (1/N) sum_i sum_y p(y|x_i) g_iy g_iy^T with g_iy = grad_w log p(y|x_i), one autograd call each, on a
    net with biases (so the homogeneity closed form does not apply)."""
    from landscape.flatness import fisher_rao_norm

    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(23, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (23,), generator=g)
    params = list(net.parameters())
    w = torch.cat([p.detach().reshape(-1) for p in params])
    F_model = torch.zeros(w.numel(), w.numel(), dtype=torch.float64)
    F_empirical = torch.zeros_like(F_model)
    for i in range(x.shape[0]):
        logp = torch.log_softmax(net(x[i : i + 1])[0], dim=0)
        for c in range(4):
            grads = torch.autograd.grad(logp[c], params, retain_graph=True)
            gvec = torch.cat([t.reshape(-1) for t in grads])
            F_model += float(logp[c].exp()) * torch.outer(gvec, gvec)
            if c == int(y[i]):
                F_empirical += torch.outer(gvec, gvec)
    F_model /= x.shape[0]
    F_empirical /= x.shape[0]
    for kind, F in (("model", F_model), ("empirical", F_empirical)):
        result = fisher_rao_norm(net, (x, y), kind=kind, batch_size=10)
        assert result.value == pytest.approx(float(w @ F @ w), rel=1e-10), kind
        assert result.extra["norm"] == pytest.approx(math.sqrt(float(w @ F @ w)), rel=1e-10)


# ---- epsilon-sharpness against a brute-force maximum ---------------------------------------------------


class Quadratic(nn.Module):
    """Per-sample output 0.5 (w - c)^T A (w - c): with the mean as the loss, L(w) is that quadratic."""

    def __init__(self, w0, A, c):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        self.A = torch.tensor(A, dtype=torch.float64)
        self.c = torch.tensor(c, dtype=torch.float64)

    def forward(self, x):
        d = self.w - self.c
        return (0.5 * d @ self.A @ d).expand(x.shape[0])


def mean_output(outputs, targets, reduction="mean"):
    return outputs.sum() if reduction == "sum" else outputs.mean()


@pytest.mark.parametrize("box", ["relative", "keskar"])
@pytest.mark.parametrize("c", [[-1.0, 1.0], [0.8, -1.5]], ids=["sloped", "at-the-minimum"])
def test_epsilon_sharpness_reaches_the_brute_force_maximum_of_a_quadratic(box, c):
    """The maximum over a 401 x 401 grid of the box (corners included); at the minimum the gradient is 0."""
    from landscape.flatness import epsilon_sharpness

    w0, A = [0.8, -1.5], [[2.0, 0.6], [0.6, 1.0]]
    model = Quadratic(w0, A, c)
    eps = 0.3
    radius = eps * (np.abs(w0) + (1.0 if box == "keskar" else 0.0))
    axes = [np.linspace(w - r, w + r, 401) for w, r in zip(w0, radius)]  # the corners are grid nodes
    W1, W2 = np.meshgrid(*axes, indexing="ij")
    D1, D2 = W1 - c[0], W2 - c[1]
    values = 0.5 * (A[0][0] * D1**2 + 2 * A[0][1] * D1 * D2 + A[1][1] * D2**2)
    base = 0.5 * (np.array(w0) - c) @ np.array(A) @ (np.array(w0) - c)
    data = (torch.zeros(5, 1, dtype=torch.float64), torch.zeros(5, dtype=torch.long))
    result = epsilon_sharpness(model, data, eps, box=box, steps=12, loss_fn=mean_output)
    assert result.value == pytest.approx(values.max() - base, rel=1e-12)
    assert result.extra["base_loss"] == pytest.approx(base, rel=1e-12)


# ---- SLQ's other outputs: the probes, the trace and f-trace estimates, the default grids -----------------


def documented_probes(n: int, num_probes: int, seed: int) -> list[torch.Tensor]:
    """Rademacher probes drawn as slq documents them: one CPU generator seeded with ``seed``, in probe order."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1 for _ in range(num_probes)]


def rotated(lam: np.ndarray, seed: int = 1) -> torch.Tensor:
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((lam.size, lam.size)))
    return torch.tensor((Q * lam) @ Q.T)


def test_slq_trace_and_f_trace_are_the_hutchinson_means_of_the_documented_probes():
    """Gauss quadrature is exact for degree <= 2m - 1, so each probe's estimate is n v^T f(A) v / |v|^2 for
    f = x, x^2: the mean and the standard error over probes follow from the probes alone."""
    lam = np.linspace(-1.0, 3.0, 50)
    A = rotated(lam)
    for num_probes in (2, 7):
        result = slq(A, num_probes=num_probes, num_iters=8, seed=5)
        probes = documented_probes(50, num_probes, seed=5)
        for power, estimate in ((1, result.trace_estimate()), (2, result.expectation(lambda x: x**2))):
            per_probe = np.array([float(v @ torch.linalg.matrix_power(A, power) @ v) for v in probes])
            assert estimate[0] == pytest.approx(per_probe.mean(), rel=1e-10)
            assert estimate[1] == pytest.approx(per_probe.std(ddof=1) / math.sqrt(num_probes), rel=1e-8)
    one = slq(A, num_probes=1, num_iters=8, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one probe has no spread: NaN, without numpy's degrees-of-freedom warning
        assert math.isnan(one.trace_estimate()[1]) and math.isnan(one.expectation(np.abs)[1])


def test_slq_records_its_settings_and_counts_only_its_own_products():
    from landscape.curvature.base import as_operator

    op = as_operator(rotated(np.linspace(0.0, 1.0, 30)))
    first = slq(op, num_probes=2, num_iters=5, seed=3)
    second = slq(op, num_probes=3, num_iters=50, seed=4)  # num_iters capped at n
    assert (first.num_probes, first.num_iters, first.seed, first.n) == (2, 5, 3, 30)
    assert (second.num_probes, second.num_iters, second.seed) == (3, 30, 4)
    assert first.hvp_count == 10 and second.hvp_count == 90 and op.count == 100
    assert 0 < second.wall_s < 60
    defaults = slq(op)
    assert (defaults.num_probes, defaults.num_iters, defaults.seed) == (10, 30, 0)
    assert slq(torch.diag(torch.linspace(1.0, 2.0, 100, dtype=torch.float64))).num_iters == 90
    for bad in ({"num_probes": 0}, {"num_iters": 0}):
        with pytest.raises(ValueError):
            slq(op, **bad)
    tiny = slq(op, num_probes=1, num_iters=1)
    assert tiny.nodes.shape == (1, 1)


def test_slq_pads_an_early_invariant_krylov_space_with_weightless_nodes_inside_the_spectrum():
    A = torch.diag(torch.tensor([1.0] * 10 + [4.0] * 10 + [6.0] * 10, dtype=torch.float64))
    result = slq(A, num_probes=2, num_iters=9, seed=0)
    assert result.nodes.shape == (2, 9)
    np.testing.assert_allclose(result.nodes[:, :3], [[1.0, 4.0, 6.0]] * 2, rtol=1e-12)
    np.testing.assert_allclose(result.weights[:, :3], 1 / 3, rtol=1e-12)
    assert np.all(result.weights[:, 3:] == 0) and np.all(np.isfinite(result.nodes))
    grid, values = result.density()  # padding must not move the default grid
    assert grid[0] == pytest.approx(1.0 - 3 * 0.05) and grid[-1] == pytest.approx(6.0 + 3 * 0.05)


def test_slq_default_density_grids_and_bandwidths():
    """Linear: bandwidth 1% of the node range, grid 3 bandwidths past the extreme nodes, 1000 points;
    a single-valued spectrum (range 0) uses bandwidth 0.01. Log: log10|lambda|, bandwidth 0.05 decades."""
    lam = np.concatenate([-np.geomspace(1e-3, 1e-1, 10), np.geomspace(1e-4, 20.0, 40)])
    result = slq(rotated(lam), num_probes=3, num_iters=50, seed=2)
    nodes = result.nodes.reshape(-1)
    grid, values = result.density()
    h = 0.01 * (nodes.max() - nodes.min())
    assert grid.size == 1000
    assert grid[0] == pytest.approx(nodes.min() - 3 * h) and grid[-1] == pytest.approx(nodes.max() + 3 * h)
    assert values.max() == pytest.approx(_kernel_sum(grid, nodes, result.weights.reshape(-1) / 3, h).max())
    grid, values = result.density(scale="log")
    logs = np.log10(np.abs(nodes))
    assert grid[0] == pytest.approx(logs.min() - 0.15) and grid[-1] == pytest.approx(logs.max() + 0.15)
    np.testing.assert_allclose(values, _kernel_sum(grid, logs, result.weights.reshape(-1) / 3, 0.05), rtol=1e-12)
    grid, values = result.density(scale="log", bandwidth=0.2)
    np.testing.assert_allclose(values, _kernel_sum(grid, logs, result.weights.reshape(-1) / 3, 0.2), rtol=1e-12)
    flat = slq(3.0 * torch.eye(20, dtype=torch.float64), num_probes=2, num_iters=4)
    grid, _ = flat.density()
    assert grid[0] == pytest.approx(3.0 - 0.03) and grid[-1] == pytest.approx(3.0 + 0.03)
    with pytest.raises(ValueError):
        result.density(scale="sqrt")


def test_slq_log_density_leaves_out_nodes_at_exactly_zero():
    """log10|0| does not exist: a zero node (a zero eigenvalue met exactly) drops out of the log view."""
    from landscape.spectra.slq import SLQResult

    result = SLQResult(nodes=np.array([[0.0, 0.1, 10.0]]), weights=np.array([[0.5, 0.25, 0.25]]), n=4,
                       num_probes=1, num_iters=3, seed=0, hvp_count=3, wall_s=0.0)
    grid, values = result.density(scale="log", bandwidth=0.1)
    assert grid[0] == pytest.approx(-1.3) and grid[-1] == pytest.approx(1.3)
    np.testing.assert_allclose(values, _kernel_sum(grid, [-1.0, 1.0], [0.25, 0.25], 0.1), rtol=1e-12)


def _kernel_sum(grid, centres, weights, h):
    """sum_j w_j N(grid; centre_j, h^2), written out."""
    out = np.zeros_like(grid)
    for c, w in zip(centres, weights):
        out += w * np.exp(-0.5 * ((grid - c) / h) ** 2) / (h * math.sqrt(2 * math.pi))
    return out


# ---- Hutchinson and Hutch++ recomputed from their documented draws ----------------------------------------


def rademacher_block(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n, k), generator=g, dtype=torch.float64) * 2 - 1


def test_hutchinson_is_the_mean_of_v_a_v_over_blocks_until_its_error_target():
    """Rademacher blocks of ``block`` columns from one generator; after each block (and at least
    ``min_samples``) it stops once the standard error s / sqrt(m) meets the absolute or relative target."""
    from landscape.curvature.base import as_operator
    from landscape.spectra.trace import hutchinson_trace

    A = rotated(np.linspace(-0.5, 4.0, 40), seed=3)
    cases = [dict(max_samples=37, block=10), dict(max_samples=200, block=7, min_samples=15, target_rel=0.05),
             dict(max_samples=200, block=4, target_stderr=2.0), dict(max_samples=1, block=10),
             dict(max_samples=2, block=10), dict(max_samples=50, block=2, min_samples=2, target_stderr=1e9)]
    for options in cases:
        g = torch.Generator().manual_seed(6)
        samples: list[float] = []
        while len(samples) < options["max_samples"]:
            V = rademacher_block(40, min(options["block"], options["max_samples"] - len(samples)), g)
            samples += ((V * (A @ V)).sum(dim=0)).tolist()
            s = np.array(samples)
            if len(s) >= max(options.get("min_samples", 10), 2):
                err = s.std(ddof=1) / math.sqrt(len(s))
                if err <= options.get("target_stderr", -1) or err <= options.get("target_rel", -1) * abs(s.mean()):
                    break
        op = as_operator(A)
        op.matvec(torch.ones(40, dtype=torch.float64))  # a product made before is not counted
        result = hutchinson_trace(op, seed=6, **options)
        s = np.array(samples)
        assert result.samples == len(s) and result.hvp_count == len(s) and result.method == "hutchinson"
        assert result.estimate == pytest.approx(s.mean(), rel=1e-12)
        if len(s) > 1:
            assert result.stderr == pytest.approx(s.std(ddof=1) / math.sqrt(len(s)), rel=1e-10)
        else:
            assert math.isnan(result.stderr)
        assert 0 < result.wall_s < 60
    # defaults: blocks of 10, at least 10 samples, at most 1000, seed 0
    assert hutchinson_trace(A, target_stderr=1e9).samples == 10
    assert hutchinson_trace(A).samples == 1000
    assert hutchinson_trace(A, max_samples=10) == dataclasses.replace(hutchinson_trace(A, max_samples=10, seed=0),
                                                                       wall_s=ANY)


def test_hutchinson_stops_when_its_error_equals_the_target():
    """The rule is stderr <= target: a target equal to the error after the first block stops there."""
    from landscape.spectra.trace import hutchinson_trace

    A = rotated(np.linspace(-0.5, 4.0, 40), seed=3)
    first = hutchinson_trace(A, max_samples=10, seed=2)
    assert hutchinson_trace(A, target_stderr=first.stderr, seed=2).samples == 10
    assert hutchinson_trace(A, target_stderr=np.nextafter(first.stderr, 0), seed=2).samples > 10
    rel = first.stderr / abs(first.estimate)
    assert rel * abs(first.estimate) == first.stderr  # so the relative target is met with equality too
    assert hutchinson_trace(A, target_rel=rel, seed=2).samples == 10


def test_hutchpp_is_exact_for_a_matrix_of_rank_below_its_sketch_and_recomputes_otherwise():
    from landscape.curvature.base import as_operator
    from landscape.spectra.trace import hutchpp_trace

    rng = np.random.default_rng(5)
    B = rng.standard_normal((30, 4))
    low_rank = torch.tensor(B @ np.diag([5.0, 2.0, -1.0, 0.5]) @ B.T)
    exact = hutchpp_trace(low_rank, num_matvecs=15, seed=2)  # sketch of 5 columns covers the rank-4 range
    assert exact.estimate == pytest.approx(float(torch.trace(low_rank)), rel=1e-10)
    assert exact.stderr < 1e-10 and exact.samples == 5 and exact.hvp_count == 15 and exact.method == "hutch++"
    A = rotated(np.linspace(0.0, 3.0, 30), seed=4)
    for budget, seed in ((20, 1), (4, 3), (99, 0)):
        g = torch.Generator().manual_seed(seed)
        k = max(1, budget // 3)
        Q, _ = torch.linalg.qr(A @ rademacher_block(30, k, g))
        m = max(2, budget - 2 * k)
        G = rademacher_block(30, m, g)
        G = G - Q @ (Q.T @ G)
        samples = np.array((G * (A @ G)).sum(dim=0).tolist())
        expected = float(torch.trace(Q.T @ A @ Q)) + samples.mean()
        result = hutchpp_trace(A, num_matvecs=budget, seed=seed) if budget != 99 else hutchpp_trace(A)
        assert result.estimate == pytest.approx(expected, rel=1e-10)
        assert result.stderr == pytest.approx(samples.std(ddof=1) / math.sqrt(m), rel=1e-8)
        assert (result.samples, result.hvp_count) == (m, k + Q.shape[1] + m) and 0 < result.wall_s < 60  # Q: <= n columns
    big = torch.diag(torch.linspace(0.0, 1.0, 120, dtype=torch.float64))
    assert hutchpp_trace(big) == dataclasses.replace(hutchpp_trace(big, num_matvecs=99, seed=0), wall_s=ANY)
    op = as_operator(big)
    op.matvec(torch.ones(120, dtype=torch.float64))  # a product made before is not counted
    assert hutchpp_trace(op, num_matvecs=30).hvp_count == 30
