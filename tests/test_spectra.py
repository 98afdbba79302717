"""Lanczos, SLQ and trace estimators on matrices with known spectra (DESIGN.md sec. 6)."""


import numpy as np
import pytest
import torch

from landscape.curvature.base import DenseOperator
from landscape.spectra.lanczos import lanczos, lanczos_tridiagonal
from landscape.spectra.slq import slq
from landscape.spectra.trace import hutchinson_trace, hutchpp_trace


def known(eigenvalues, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    return (Q * lam) @ Q.T, np.sort(np.asarray(eigenvalues, dtype=float))


def hessian_like(n=300, seed=0):
    """A spectrum shaped like the paper's Fig. 1: most near zero, a long positive tail, a short negative one."""
    rng = np.random.default_rng(seed)
    lam = np.concatenate([
        rng.normal(0, 1e-3, n - 40),
        -np.abs(rng.normal(0, 0.05, 10)),
        np.geomspace(0.1, 40.0, 30),
    ])
    return known(lam, seed)


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_lanczos_extreme_eigenvalues_to_1e8_relative(which):
    A, lam = hessian_like()
    result = lanczos(A, k=5, which=which, tol=1e-10)
    expected = lam[-5:] if which == "LA" else lam[:5]
    assert result.all_converged
    np.testing.assert_allclose(result.ritz_values, expected, rtol=1e-8, atol=1e-12 * lam.max())
    assert result.hvp_count == result.iterations < A.shape[0]


def test_lanczos_both_ends_and_reported_residuals_are_true_residuals():
    A, lam = known(np.linspace(-3, 10, 120) ** 3 / 100)
    result = lanczos(A, k=4, which="both", tol=1e-10, return_vectors=True)
    np.testing.assert_allclose(result.ritz_values, np.concatenate([lam[:4], lam[-4:]]), rtol=1e-8)
    Y = torch.from_numpy(result.ritz_vectors)
    true_res = torch.linalg.vector_norm(A @ Y - Y * torch.from_numpy(result.ritz_values), dim=0).numpy()
    np.testing.assert_allclose(result.residuals, true_res, rtol=1e-3, atol=1e-12)


def test_full_reorthogonalization_prevents_ghost_eigenvalues():
    # Well-separated top eigenvalue converges early; without reorthogonalization it is
    # duplicated ("ghost") once the basis loses orthogonality.
    lam = np.concatenate([np.linspace(0, 1, 200), [100.0]])
    A, _ = known(lam)
    result = lanczos(A, k=2, which="LA", tol=1e-12, max_iters=150, check_every=150)
    assert result.ritz_values[-1] == pytest.approx(100.0, rel=1e-12)
    assert result.ritz_values[-2] < 1.0 + 1e-8  # the second is from the bulk, not a copy of 100


def test_invariant_subspace_gives_exact_eigenvalues():
    A, lam = known([1.0, 1.0, 1.0, 5.0, 5.0, 9.0] + [0.0] * 20)
    alpha, beta = lanczos_tridiagonal(A, 26)
    assert len(alpha) <= 4  # three distinct nonzero eigenvalues + zero
    result = lanczos(A, k=1, which="LA")
    assert result.ritz_values[0] == pytest.approx(9.0, rel=1e-12)


def test_slq_weights_sum_to_one_and_quadrature_is_exact_for_low_degree():
    A, lam = hessian_like(n=120)
    result = slq(A, num_probes=4, num_iters=6, seed=3)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, rtol=1e-12)
    # Gauss quadrature with m nodes is exact for degree <= 2m - 1: check v^T A^k v, k <= 11
    g = torch.Generator().manual_seed(3)
    v = torch.randint(0, 2, (120,), generator=g, dtype=torch.float64) * 2 - 1
    v = v / v.norm()
    for k in (1, 2, 5, 11):
        exact = float(v @ torch.linalg.matrix_power(A, k) @ v)
        quad = float((result.weights[0] * result.nodes[0] ** k).sum())
        assert quad == pytest.approx(exact, rel=1e-9, abs=1e-12 * lam.max() ** k)


def test_slq_density_integrates_to_one_and_trace_within_three_stderr():
    A, lam = hessian_like(n=200)
    result = slq(A, num_probes=30, num_iters=40, seed=0)
    grid, dens = result.density(num_points=4000)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, rel=1e-3)
    estimate, stderr = result.trace_estimate()
    assert abs(estimate - lam.sum()) < 3 * stderr
    assert result.hvp_count == 30 * 40


def test_hutchinson_within_three_stderr_and_stops_on_target():
    A, lam = hessian_like(n=150)
    result = hutchinson_trace(A, max_samples=2000, target_rel=0.02, seed=1)
    assert abs(result.estimate - lam.sum()) < 3 * result.stderr
    assert result.stderr <= 0.02 * abs(result.estimate)
    assert result.samples < 2000 and result.hvp_count == result.samples


def test_hutchpp_beats_hutchinson_on_a_low_rank_dominated_spectrum():
    lam = np.concatenate([np.geomspace(1, 100, 20), np.full(280, 1e-3)])
    A, _ = known(lam)
    errors_pp, errors_h = [], []
    for seed in range(5):
        errors_pp.append(abs(hutchpp_trace(A, num_matvecs=60, seed=seed).estimate - lam.sum()))
        errors_h.append(abs(hutchinson_trace(A, max_samples=60, min_samples=60, seed=seed).estimate - lam.sum()))
    assert np.mean(errors_pp) < 0.1 * np.mean(errors_h)


def test_operator_counts_and_dense_inputs():
    A, lam = known(np.arange(1.0, 31.0))
    op = DenseOperator(A)
    lanczos(op, k=1)
    assert op.count > 0
    result = lanczos(A.numpy(), k=1)  # numpy input works too
    assert result.ritz_values[0] == pytest.approx(30.0, rel=1e-8)  # the default tol: 1e-8 eigenvalue error


def test_kato_temple_bounds_hold_and_stop_earlier_than_residuals():
    """The eigenvalue rule reaches the same accuracy with fewer products, and its bounds are true bounds."""
    A, lam = hessian_like(n=400, seed=2)
    by_value = lanczos(A, k=3, which="LA", tol=1e-10)
    by_residual = lanczos(A, k=3, which="LA", tol=1e-10, stop="residual")
    errors = np.abs(by_value.ritz_values - lam[-3:])
    # The bounds hold for the matrix as stored; forming A = Q diag(lam) Q^T in float64 moved its
    # eigenvalues from lam by rounding, up to ~sqrt(n)*eps*||A|| (4.3e-14 at lambda = 40 was seen on
    # one CPU). That floor is added; it is 1e-3 of the largest bound, so a wrong bound still fails.
    rounding = 10 * np.sqrt(A.shape[0]) * np.finfo(np.float64).eps * np.abs(lam).max()
    assert np.all(errors <= by_value.error_bounds + rounding)
    assert np.all(errors <= 1e-10 * np.abs(lam[-3:]))
    assert by_value.hvp_count < by_residual.hvp_count
    # the bound is much tighter than the residual it comes from
    assert np.all(by_value.error_bounds <= by_value.residuals)


def test_error_bounds_fall_back_to_the_residual_in_clusters():
    from landscape.spectra.lanczos import error_bounds

    theta = np.array([1.0, 1.0 + 1e-9, 5.0])
    r = np.array([1e-3, 1e-3, 1e-4])
    bounds = error_bounds(theta, r)
    np.testing.assert_allclose(bounds[:2], r[:2])  # neighbours closer than the residual: no gain claimed
    assert bounds[2] == pytest.approx(1e-8 / (4.0 - 1e-3))
