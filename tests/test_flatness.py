"""Local entropy estimators against closed forms and quadrature (DESIGN.md sec. 6; paper Eq. 4, 7).

Conventions under test: estimates are F(x, gamma) - (n/2) log(2 pi / gamma) (the flat
reference), so for a quadratic f = x^T A x / 2

    G(x, gamma) = -f(x) + (1/2) g^T (A + gamma I)^{-1} g - (1/2) sum_i log(1 + lambda_i / gamma),   g = A x,

which the tests check against the independent completing-the-square form
-(gamma/2)||x||^2 + (gamma^2/2) x^T (A + gamma I)^{-1} x - (1/2) log det(I + A / gamma).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from landscape.curvature.base import DenseOperator
from landscape.flatness import (
    BatchedEnergy,
    energy_from_model,
    flat_reference,
    gauss_legendre_log_grid,
    local_entropy,
    local_entropy_gradient,
    scope_curve,
)
from landscape.flatness.fig2 import FIG2_1D, fig2_1d

N = 50
# Many short chains: the per-step cost is mostly fixed overhead, and 24+ chains make the
# t-distribution of (estimate - truth) / stderr close to normal, so "3 standard errors" means ~0.3%.
FAST_SGLD = {"num_chains": 24, "num_steps": 150, "burn_in": 60, "nodes_per_decade": 3}


@pytest.fixture(scope="module")
def quadratic():
    """A = Q diag(lam) Q^T, n = 50, lam log-spaced in [0.1, 10]; energy, A, lam and a point x != 0."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    lam = torch.logspace(-1, 1, N, dtype=torch.float64)
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    x = 0.5 * torch.randn(N, generator=g, dtype=torch.float64)

    def energy(v):
        return 0.5 * v @ (A @ v)

    return energy, A, lam, x


def closed_form(A, lam, x, gamma):
    """Completing the square in Eq. (4) for f = x^T A x / 2, minus the flat reference."""
    K = A + gamma * torch.eye(A.shape[0], dtype=A.dtype)
    quadratic_part = -0.5 * gamma * float(x @ x) + 0.5 * gamma**2 * float(x @ torch.linalg.solve(K, x))
    return quadratic_part - 0.5 * float(torch.log1p(lam / gamma).sum())


def double_well(v):
    """A tilted 2-D double well: minima near x = +-1, barrier ~1 at the origin (lambda = -4 there)."""
    return (v[0] ** 2 - 1) ** 2 + 0.5 * v[1] ** 2 + 0.3 * v[0]


# -- conventions and quadrature ----------------------------------------------------------------

def test_flat_energy_gives_minus_the_constant_by_every_exact_method():
    energy = lambda v: torch.tensor(2.5, dtype=torch.float64) + 0 * v.sum()  # noqa: E731
    for n in (1, 2):
        x = torch.zeros(n, dtype=torch.float64)
        for method in ("quadrature", "laplace"):
            result = local_entropy(energy, x, 0.7, method=method)
            assert result.estimate == pytest.approx(-2.5, abs=1e-10)
            assert result.local_entropy == pytest.approx(-2.5 + flat_reference(n, 0.7), abs=1e-10)


@pytest.mark.parametrize("n", [1, 2])
def test_quadrature_matches_gaussian_closed_form(n):
    A = torch.tensor([[3.0]] if n == 1 else [[3.0, 1.0], [1.0, 0.5]], dtype=torch.float64)
    lam = torch.linalg.eigvalsh(A)
    x = torch.tensor([0.4, -1.1][:n], dtype=torch.float64)
    result = local_entropy(lambda v: 0.5 * v @ (A @ v), x, 2.0, method="quadrature",
                           num_points=2001 if n == 1 else 401)
    exact = closed_form(A, lam, x, 2.0)
    assert abs(result.estimate - exact) < 1e-10
    assert result.stderr < 1e-8  # the h vs 2h error estimate is small but honest


# -- Laplace ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.3, 1.0, 5.0])
def test_laplace_exact_for_quadratic_at_minimum(quadratic, gamma):
    energy, A, lam, _ = quadratic
    x0 = torch.zeros(N, dtype=torch.float64)
    exact = -0.5 * float(torch.log1p(lam / gamma).sum())
    for options in ({}, {"eigenvalues": lam}, {"hessian": A}):
        result = local_entropy(energy, x0, gamma, method="laplace", **options)
        assert abs(result.estimate - exact) < 1e-10, options
        assert result.stderr == 0.0 and result.warnings == []


def test_laplace_exact_for_quadratic_away_from_minimum(quadratic):
    energy, A, lam, x = quadratic
    for gamma in (0.3, 2.0):
        exact = closed_form(A, lam, x, gamma)
        dense = local_entropy(energy, x, gamma, method="laplace")
        by_cg = local_entropy(energy, x, gamma, method="laplace", eigenvalues=lam, cg_tol=1e-14)
        assert abs(dense.estimate - exact) < 1e-10
        assert abs(by_cg.estimate - exact) < 1e-10
        assert by_cg.diagnostics["cg"]["relative_residual"] < 1e-12
        assert dense.diagnostics["gradient_term"] > 1.0  # the g-term matters here


def test_laplace_from_an_operator_uses_slq_within_3_stderr(quadratic):
    energy, A, lam, x = quadratic
    result = local_entropy(energy, x, 1.0, method="laplace", hessian=DenseOperator(A), num_probes=30, seed=3)
    exact = closed_form(A, lam, x, 1.0)
    assert 0 < result.stderr < 0.05 * abs(exact)
    assert abs(result.estimate - exact) < 3 * result.stderr
    assert result.diagnostics["source"] == "slq"


def test_laplace_flags_lambda_plus_gamma_nonpositive():
    x0 = torch.zeros(2, dtype=torch.float64)  # the barrier top: eigenvalues -4 and 1
    bad = local_entropy(double_well, x0, 2.0, method="laplace")
    assert math.isnan(bad.estimate)
    assert bad.diagnostics["exists"] is False and bad.diagnostics["num_nonpositive"] == 1
    assert len(bad.warnings) == 1 and "lambda + gamma <= 0" in bad.warnings[0]
    good = local_entropy(double_well, x0, 6.0, method="laplace")
    assert math.isfinite(good.estimate) and good.warnings == []
    assert good.diagnostics["lambda_min"] == pytest.approx(-4.0)
    # the same through an operator (SLQ Ritz values)
    H = torch.tensor([[-4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    slq_bad = local_entropy(double_well, x0, 2.0, method="laplace", hessian=DenseOperator(H))
    assert math.isnan(slq_bad.estimate) and slq_bad.warnings


# -- SGLD + thermodynamic integration -----------------------------------------------------------

def test_gauss_legendre_log_grid_integrates_the_quadratic_slope():
    lam = np.logspace(-1, 1, N)
    nodes, weights, segment = gauss_legendre_log_grid([1.0, 1e4], nodes_per_decade=3)
    rule = sum(w * 0.5 * np.sum(lam / (lam + g)) for g, w in zip(nodes, weights))
    exact = 0.5 * np.sum(np.log1p(lam / 1.0)) - 0.5 * np.sum(np.log1p(lam / 1e4))
    assert abs(rule - exact) < 1e-5 and len(nodes) == 12 and set(segment) == {0}


@pytest.mark.parametrize("where, control", [("minimum", True), ("away", False)])
def test_sgld_quadratic_within_3_stderr(quadratic, where, control):
    energy, A, lam, x = quadratic
    x0 = torch.zeros(N, dtype=torch.float64) if where == "minimum" else x
    exact = closed_form(A, lam, x0, 1.0)
    result = local_entropy(energy, x0, 1.0, method="sgld", seed=1, control=control, **FAST_SGLD)
    assert 0 < result.stderr < 0.01 * abs(exact)
    assert abs(result.estimate - exact) < 3 * result.stderr, (result.estimate, exact, result.stderr)
    assert min(result.diagnostics["nodes"]["acceptance"]) > 0.3
    assert result.warnings == []  # in particular: the equilibrium check passes


def test_sgld_double_well_matches_quadrature_at_three_gammas():
    x0 = torch.zeros(2, dtype=torch.float64)
    gammas = [0.5, 2.0, 10.0]
    reference = scope_curve(double_well, x0, gammas, method="quadrature", num_points=401)
    sgld = scope_curve(double_well, x0, gammas, method="sgld", seed=0, num_chains=32, num_steps=200,
                       burn_in=80, nodes_per_decade=3)
    assert np.all(reference.stderrs < 1e-8)
    z = (sgld.estimates - reference.estimates) / sgld.stderrs
    assert np.all(np.abs(z) < 3), z
    assert np.all(sgld.stderrs < 0.06)
    # the estimate really depends on gamma (not a constant that happens to be close)
    assert np.ptp(reference.estimates) > 10 * sgld.stderrs.max()


def test_unadjusted_chain_bias_matches_its_first_order_report_and_mala_removes_it():
    n, lam = 50, 2.0
    energy = lambda v: 0.5 * lam * (v * v).sum()  # noqa: E731
    x0 = torch.zeros(n, dtype=torch.float64)
    exact = -0.5 * n * math.log1p(lam)
    settings = dict(seed=0, step_size=0.2, num_steps=150, burn_in=50, nodes_per_decade=3, num_chains=12)
    ula = local_entropy(energy, x0, 1.0, method="sgld", metropolis=False, **settings)
    mala = local_entropy(energy, x0, 1.0, method="sgld", metropolis=True, **settings)
    predicted = ula.diagnostics["ula_bias_first_order"][0]
    assert abs(predicted) > 8 * ula.stderr  # the bias is real and resolved
    assert abs((ula.estimate - exact) - predicted) < 3 * ula.stderr + 0.15 * abs(predicted)
    assert abs(mala.estimate - exact) < 3 * mala.stderr


def test_equilibrium_check_flags_chains_that_lag_behind():
    energy = lambda v: (v * v).sum()  # noqa: E731
    x0 = torch.zeros(50, dtype=torch.float64)
    lagging = local_entropy(energy, x0, 1.0, seed=0, step_size=0.002, burn_in=5, num_steps=40, num_chains=8,
                            nodes_per_decade=2)
    assert any("equilibrium" in w for w in lagging.warnings)
    gaps = np.array(lagging.diagnostics["nodes"]["equilibrium_gap"])
    assert np.max(np.abs(gaps) / np.array(lagging.diagnostics["nodes"]["equilibrium_gap_stderr"])) > 5


def test_results_serialise_to_json(quadratic):
    energy, _, _, x = quadratic
    for method, options in (("laplace", {}), ("sgld", dict(num_chains=4, num_steps=10, burn_in=5, nodes_per_decade=1))):
        text = json.dumps(local_entropy(energy, x, 1.0, method=method, **options).to_dict())
        assert json.loads(text)["reference"] == "flat"


def test_seed_makes_sgld_reproducible():
    energy = lambda v: (v[0] ** 2 - 1) ** 2  # noqa: E731
    x0 = torch.tensor([0.3], dtype=torch.float64)
    opts = dict(num_chains=4, num_steps=30, burn_in=10, nodes_per_decade=2)
    a = local_entropy(energy, x0, 1.0, seed=5, **opts)
    b = local_entropy(energy, x0, 1.0, seed=5, **opts)
    c = local_entropy(energy, x0, 1.0, seed=6, **opts)
    assert a.estimate == b.estimate and a.stderr == b.stderr
    assert a.estimate != c.estimate


# -- gradient (Eq. 7) -----------------------------------------------------------------------------

def test_local_entropy_gradient_quadratic_exact_and_sgld(quadratic):
    energy, A, lam, x = quadratic
    gamma = 1.0
    K = A + gamma * torch.eye(N, dtype=torch.float64)
    exact = gamma * torch.linalg.solve(K, A @ x)  # gamma (x - <x'>), <x'> = gamma K^{-1} x
    laplace = local_entropy_gradient(energy, x, gamma, method="laplace")
    assert torch.allclose(laplace.minus_grad, exact, atol=1e-12, rtol=0)
    sgld = local_entropy_gradient(energy, x, gamma, seed=2, num_chains=12, num_steps=400, burn_in=150)
    z = (sgld.minus_grad - exact) / sgld.stderr
    assert float((z**2).mean()) < 2.0  # chi-square / dof over 50 coordinates ~ 1
    assert float(torch.linalg.vector_norm(sgld.minus_grad - exact)) < 0.2 * float(torch.linalg.vector_norm(exact))


def test_local_entropy_gradient_double_well_sgld_matches_quadrature():
    x0 = torch.tensor([0.2, 0.5], dtype=torch.float64)
    reference = local_entropy_gradient(double_well, x0, 2.0, method="quadrature", num_points=401)
    sgld = local_entropy_gradient(double_well, x0, 2.0, seed=0, num_chains=16, num_steps=600, burn_in=200)
    assert torch.all(reference.stderr < 1e-8)
    z = (sgld.minus_grad - reference.minus_grad) / sgld.stderr
    assert torch.all(z.abs() < 3), z
    assert float(reference.minus_grad.abs().max()) > 5 * float(sgld.stderr.max())


# -- Fig. 2 ---------------------------------------------------------------------------------------

def test_fig2_minimum_of_negative_local_entropy_moves_to_the_wide_valley():
    data = fig2_1d(gammas=(1000.0, 10.0, 1.0), num_x=281, spacing=0.01)
    x_robust, x_sharp = FIG2_1D["robust"][0], FIG2_1D["non_robust"][0]
    assert data["argmin_f"] == pytest.approx(x_sharp, abs=0.03)  # f itself prefers the sharp minimum
    large, medium, small = data["argmin_x"]
    assert abs(large - x_sharp) < 0.05
    assert abs(medium - x_robust) < 0.3 and abs(small - x_robust) < 0.3
    assert data["error"].max() < 1e-5  # trapezoid h vs 2h
    # -F tends to f for gamma -> infinity away from the sharp well (log(1 + f''/gamma) / 2 -> 0)
    far = np.abs(data["x"] - x_sharp) > 0.5
    assert np.max(np.abs(data["neg_local_entropy"][0][far] - data["f"][far])) < 0.01


# -- energies -------------------------------------------------------------------------------------

def test_batched_energy_falls_back_when_vmap_cannot_batch():
    def awkward(v):  # data-dependent Python control flow: no vmap batching rule
        return v.square().sum() if float(v[0].detach()) > 0 else 2 * v.square().sum()

    batched = BatchedEnergy(awkward)
    X = torch.tensor([[1.0, 2.0], [-1.0, 1.0]], dtype=torch.float64)
    values, grads = batched.value_and_grad(X)
    assert batched.vectorize is False
    assert torch.allclose(values, torch.tensor([5.0, 4.0], dtype=torch.float64))
    assert torch.allclose(grads, torch.tensor([[2.0, 4.0], [-4.0, 4.0]], dtype=torch.float64))


def test_energy_from_model_is_the_weighted_mean_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    inputs, targets = torch.randn(7, 3), torch.randint(0, 2, (7,))
    batches = [(inputs[:5], targets[:5]), (inputs[5:], targets[5:])]  # unequal batches
    energy, x0, op = energy_from_model(model, batches)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model.double()(inputs.double()), targets)
    assert float(energy(x0)) == pytest.approx(float(expected), rel=1e-12)
    assert x0.dtype == torch.float64 and x0.numel() == sum(p.numel() for p in model.parameters())
    result = local_entropy(energy, x0, 10.0, method="laplace", hessian=op, num_probes=4, num_iters=20)
    assert math.isfinite(result.estimate) and result.diagnostics["source"] == "slq"


def test_write_fig2_stores_the_arrays_and_the_minima(tmp_path):
    from landscape.flatness.fig2 import write_fig2

    summary = write_fig2(tmp_path, with_2d=False)
    with np.load(tmp_path / "fig2.npz", allow_pickle=False) as arrays:
        assert arrays["d1_neg_local_entropy"].shape == (3, arrays["d1_x"].size)
        np.testing.assert_array_equal(arrays["d1_argmin_x"], summary["argmin_neg_local_entropy_1d"])
    on_disk = json.loads((tmp_path / "fig2.json").read_text())
    assert on_disk["gammas_1d"] == [1000.0, 10.0, 1.0]
    assert abs(on_disk["argmin_neg_local_entropy_1d"][-1] - FIG2_1D["robust"][0]) < 0.3
    assert on_disk["max_quadrature_error_1d"] < 1e-5
