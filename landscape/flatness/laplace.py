"""The saddle-point (Laplace) value of the local entropy, from a spectrum or an operator.

Expanding the energy to second order around the anchor x, f(x') ~ f + g^T d + d^T H d / 2
with d = x' - x, makes the integral of Eq. (4) (Chaudhari et al. 2017) Gaussian:

    F(x, gamma) ~ -f + (1/2) g^T (H + gamma I)^{-1} g + (n/2) log(2 pi) - (1/2) log det(H + gamma I).

Relative to the flat reference (n/2) log(2 pi / gamma) (the F of f = 0) this is

    G_lap(gamma) = -f - (1/2) sum_i log(1 + lambda_i / gamma) + (1/2) g^T (H + gamma I)^{-1} g,     (L)

exact for quadratic energies and the leading term of the large-gamma expansion for
smooth ones (the correction is O(1/gamma^2)). It exists only when every
lambda_i + gamma > 0; otherwise the Gaussian integral diverges and the estimate is NaN
with a warning. Its derivative in t = log gamma,

    dG_lap/dt = (1/2) sum_i lambda_i / (lambda_i + gamma) - (gamma/2) ||(H + gamma I)^{-1} g||^2,   (S)

is the curve the Langevin estimator (:mod:`landscape.flatness.sgld`) integrates against.

Sources of the spectrum, in the order tried: given eigenvalues (the log-determinant exact,
the gradient term by conjugate gradients); a dense Hessian (eigendecomposed: both terms
exact); an operator (the log-determinant by stochastic Lanczos quadrature with its
standard error, the gradient term by conjugate gradients on H + gamma I).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from landscape.curvature.base import LinearOperator, as_operator
from landscape.errors import LandscapeError, ShapeError
from landscape.flatness.energy import BatchedEnergy, Energy, EnergyHessian, check_point, dense_energy_hessian
from landscape.spectra.slq import SLQResult, slq

__all__ = ["LaplaceModel", "conjugate_gradient", "laplace_model"]


def conjugate_gradient(
    op: LinearOperator, b: Tensor, shift: float, *, tol: float = 1e-10, max_iters: int | None = None
) -> tuple[Tensor, dict]:
    """Solve ``(A + shift I) y = b`` by conjugate gradients (Hestenes & Stiefel 1952).

    Stops when ``||r|| <= tol ||b||``. CG needs a positive definite system: a direction
    with ``p^T (A + shift I) p <= 0`` proves it is not, and the solve stops with
    ``info["indefinite"] = True`` (the Laplace value does not exist then).
    """
    n = b.numel()
    max_iters = max_iters or 2 * n + 10
    y = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    b_norm = math.sqrt(rr)
    info = {"iterations": 0, "relative_residual": 0.0, "indefinite": False, "converged": True}
    if b_norm == 0.0:
        return y, info
    for it in range(1, max_iters + 1):
        Ap = op @ p + shift * p
        curvature = float(p @ Ap)
        if curvature <= 0.0:
            info.update(iterations=it, indefinite=True, converged=False, relative_residual=math.sqrt(rr) / b_norm)
            return y, info
        step = rr / curvature
        y = y + step * p
        r = r - step * Ap
        rr_new = float(r @ r)
        info["iterations"] = it
        if math.sqrt(rr_new) <= tol * b_norm:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    else:
        info["converged"] = False
    # report the true residual, not the recursively updated one
    true_r = b - (op @ y + shift * y)
    info["relative_residual"] = float(torch.linalg.vector_norm(true_r)) / b_norm
    return y, info


@dataclass
class LaplaceModel:
    """The quadratic model of the energy at ``x0``: ``f0``, ``gradient`` and a spectral measure.

    ``nodes``/``weights``: eigenvalues with weight 1 (exact sources) or SLQ Ritz values with
    weights ``n tau / num_probes`` (their weighted sum of h(nodes) estimates tr h(H)).
    ``projections``: ``Q^T g`` in the order of ``nodes`` when eigenvectors are known, so the
    gradient term is exact and cheap; otherwise it comes from CG on ``operator``.
    """

    f0: float
    gradient: Tensor
    nodes: np.ndarray
    weights: np.ndarray
    source: str
    projections: np.ndarray | None = None
    eigenvectors: Tensor | None = None  # columns in the order of ``nodes`` (dense source)
    operator: LinearOperator | None = None
    slq_result: SLQResult | None = None
    cg_tol: float = 1e-10
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.gradient.numel())

    @property
    def lambda_min(self) -> float:
        return float(self.nodes.min())

    @property
    def lambda_max(self) -> float:
        return float(self.nodes.max())

    @property
    def gradient_norm(self) -> float:
        return float(torch.linalg.vector_norm(self.gradient))

    def exists(self, gamma: float) -> bool:
        """Whether every lambda_i + gamma > 0, so the Gaussian integral (L) converges."""
        return self.lambda_min + gamma > 0.0

    def logdet_term(self, gamma: float) -> tuple[float, float]:
        """``(1/2) sum_i log(1 + lambda_i / gamma)`` with its standard error (0 when exact)."""
        if self.slq_result is not None:
            mean, stderr = self.slq_result.expectation(lambda theta: np.log1p(theta / gamma))
            return 0.5 * mean, 0.5 * stderr
        return 0.5 * float(np.sum(self.weights * np.log1p(self.nodes / gamma))), 0.0

    def solve(self, gamma: float) -> tuple[Tensor, dict]:
        """``(H + gamma I)^{-1} g``: exact from eigenvectors, else by CG (with its report)."""
        if self.gradient_norm == 0.0:
            return torch.zeros_like(self.gradient), {}
        if self.eigenvectors is not None:
            coefficients = torch.as_tensor(self.projections / (self.nodes + gamma), dtype=self.eigenvectors.dtype)
            return (self.eigenvectors @ coefficients).to(self.gradient), {}
        if self.operator is None:
            raise LandscapeError("The gradient term needs the Hessian: pass hessian= or an energy that autograd "
                                 "can differentiate twice.")
        return conjugate_gradient(self.operator, self.gradient, gamma, tol=self.cg_tol)

    def gradient_term(self, gamma: float) -> tuple[float, dict]:
        """``(1/2) g^T (H + gamma I)^{-1} g`` and the CG report (empty when exact)."""
        if self.projections is not None:
            return 0.5 * float(np.sum(self.projections**2 / (self.nodes + gamma))), {}
        y, info = self.solve(gamma)
        return 0.5 * float(self.gradient @ y), info

    def value(self, gamma: float) -> tuple[float, float, dict, list[str]]:
        """``G_lap(gamma)`` of (L): ``(estimate, stderr, diagnostics, warnings)``."""
        diagnostics = {
            "source": self.source,
            "f": self.f0,
            "gradient_norm": self.gradient_norm,
            "lambda_min": self.lambda_min,
            "lambda_max": self.lambda_max,
            "num_nonpositive": None if self.slq_result is not None else int(np.sum((self.nodes + gamma) <= 0.0)),
            **self.extra,
        }
        if not self.exists(gamma):
            message = (
                f"The Laplace estimate does not exist at gamma={gamma:g}: the Hessian has eigenvalues with "
                f"lambda + gamma <= 0 (lambda_min = {self.lambda_min:.6g}); use gamma > {-self.lambda_min:.6g} "
                "or method='sgld'."
            )
            diagnostics.update(exists=False, message=message)
            return float("nan"), float("nan"), diagnostics, [message]
        logdet, logdet_err = self.logdet_term(gamma)
        gterm, cg_info = self.gradient_term(gamma)
        warnings: list[str] = []
        if cg_info.get("indefinite"):
            message = (
                f"Conjugate gradients found negative curvature of H + gamma I at gamma={gamma:g}, so the Laplace "
                "estimate does not exist; use a larger gamma or method='sgld'."
            )
            diagnostics.update(exists=False, message=message, cg=cg_info)
            return float("nan"), float("nan"), diagnostics, [message]
        if cg_info and not cg_info.get("converged", True):
            warnings.append(f"Conjugate gradients stopped at relative residual {cg_info['relative_residual']:.2e}; "
                            "loosen cg_tol or check that H + gamma I is well conditioned.")
        diagnostics.update(exists=True, logdet_term=logdet, logdet_stderr=logdet_err, gradient_term=gterm)
        if cg_info:
            diagnostics["cg"] = cg_info
        if self.slq_result is not None:
            diagnostics.update(slq_probes=self.slq_result.num_probes, slq_iters=self.slq_result.num_iters,
                               slq_hvps=self.slq_result.hvp_count)
        return -self.f0 - logdet + gterm, logdet_err, diagnostics, warnings

    # -- deterministic curves for the thermodynamic integration (sgld) ----------------------
    def curve(self, gamma: float, floor: float = -math.inf, with_gradient: bool = True) -> tuple[float, float]:
        """``(C(gamma), dC/dlog gamma)`` of the model with eigenvalues clipped below at ``floor``.

        ``C = -(1/2) sum w log(1 + lambda'/gamma) + (1/2) sum c^2 / (lambda' + gamma)`` with
        ``lambda' = max(lambda, floor)``; the gradient part only when eigenvectors are known
        (``with_gradient`` and ``projections``). With ``floor = -inf`` and eigenvectors,
        ``C = G_lap + f`` and its slope is (S). The clipped curve is finite for every
        ``gamma > -floor``, so it serves as a control function even where (L) does not exist.
        """
        lam = np.maximum(self.nodes, floor)
        value = -0.5 * float(np.sum(self.weights * np.log1p(lam / gamma)))
        slope = 0.5 * float(np.sum(self.weights * lam / (lam + gamma)))
        if with_gradient and self.projections is not None:
            c2 = self.projections**2
            value += 0.5 * float(np.sum(c2 / (lam + gamma)))
            slope -= 0.5 * gamma * float(np.sum(c2 / (lam + gamma) ** 2))
        return value, slope

    def slope(self, gamma: float) -> float:
        """The true slope (S) at ``gamma`` (gradient part by CG when eigenvectors are unknown)."""
        _, slope = self.curve(gamma)
        if self.projections is None and self.gradient_norm > 0.0:
            y, info = self.solve(gamma)
            if not info.get("indefinite"):
                slope -= 0.5 * gamma * float(y @ y)
        return slope


def laplace_model(
    energy: Energy | None,
    x0: Tensor,
    *,
    eigenvalues=None,
    hessian=None,
    dense_limit: int = 1000,
    num_probes: int = 20,
    num_iters: int = 80,
    seed: int = 0,
    cg_tol: float = 1e-10,
    f0: float | None = None,
    gradient: Tensor | None = None,
    on_probe: Callable[[int, int], None] | None = None,
) -> LaplaceModel:
    """Build the quadratic model of ``energy`` at ``x0`` (see the module docstring).

    ``eigenvalues``: the exact spectrum of the Hessian at x0 (e.g. from ``landscape
    spectrum``); ``hessian``: a dense matrix (eigendecomposed) or an operator (SLQ with
    ``num_probes`` Rademacher probes of ``num_iters`` Lanczos steps, seeded by ``seed``).
    Without either, the Hessian of ``energy`` is formed densely by autograd when
    ``n <= dense_limit`` and used as an operator (SLQ) otherwise. ``f0``/``gradient`` may
    be given to skip evaluating the energy. ``on_probe(done, total)`` reports SLQ's progress.
    """
    x0 = check_point(x0)
    n = x0.numel()
    if f0 is None or gradient is None:
        if energy is None:
            raise LandscapeError("The Laplace estimate needs the energy (or f0 and gradient) at x0.")
        values, grads = BatchedEnergy(energy).value_and_grad(x0.unsqueeze(0))
        f0 = float(values[0]) if f0 is None else f0
        gradient = grads[0] if gradient is None else gradient
    gradient = gradient.detach().reshape(-1).to(x0.dtype)
    common = {"f0": float(f0), "gradient": gradient, "cg_tol": cg_tol}

    def fallback_operator() -> LinearOperator | None:
        if hessian is not None:
            return as_operator(hessian)
        return EnergyHessian(energy, x0) if energy is not None else None

    if eigenvalues is not None:
        if isinstance(eigenvalues, Tensor):
            eigenvalues = eigenvalues.detach().cpu()
        lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
        if lam.size != n:
            raise ShapeError(f"eigenvalues has {lam.size} entries but the parameter vector has {n}; "
                             "pass the full spectrum.")
        return LaplaceModel(nodes=lam, weights=np.ones(n), source="eigenvalues", operator=fallback_operator(), **common)

    dense = None
    if isinstance(hessian, (Tensor, np.ndarray)):
        dense = torch.as_tensor(hessian).detach().to("cpu", torch.float64)
        if dense.shape != (n, n):
            raise ShapeError(f"hessian has shape {tuple(dense.shape)} but the parameter vector has {n} entries.")
    elif hessian is None and n <= dense_limit:
        if energy is None:
            raise LandscapeError("The Laplace estimate needs the energy, eigenvalues= or hessian=.")
        dense = dense_energy_hessian(energy, x0).to("cpu", torch.float64)
    if dense is not None:
        lam, Q = torch.linalg.eigh(0.5 * (dense + dense.T))
        proj = Q.T @ gradient.to("cpu", torch.float64)
        return LaplaceModel(nodes=lam.numpy(), weights=np.ones(n), projections=proj.numpy(), eigenvectors=Q,
                            source="dense", **common)

    op = as_operator(hessian) if hessian is not None else EnergyHessian(energy, x0)
    result = slq(op, num_probes=num_probes, num_iters=num_iters, seed=seed, on_probe=on_probe)
    nodes = result.nodes.reshape(-1)
    weights = result.weights.reshape(-1) * result.n / result.num_probes
    return LaplaceModel(nodes=nodes, weights=weights, source="slq", operator=op, slq_result=result, **common)
