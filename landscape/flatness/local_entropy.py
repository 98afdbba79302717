"""Local entropy F(x, gamma) of an energy, with standard errors (Chaudhari et al. 2017, Sec. 3-4).

Definition (Eq. 4):

    F(x, gamma) = log ∫ exp(-f(x') - (gamma/2) ||x - x'||^2) dx'.

Reference. Every estimate is reported RELATIVE to the flat reference, the F of f = 0:

    estimate = F(x, gamma) - (n/2) log(2 pi / gamma),

so a constant energy f = c gives -c, a quadratic at its minimum gives
-(1/2) sum_i log(1 + lambda_i / gamma) (docs/design.md sec. 4), and numbers are comparable
across models of different sizes. Its negative is directly comparable with f: -estimate
tends to f(x) as gamma grows (Fig. 2).

Methods:

* ``"quadrature"``: trapezoid rule on a grid (n = 1 or 2 only): the reference in tests and
  for Fig. 2 (:mod:`landscape.flatness.quadrature`);
* ``"laplace"``: the saddle-point value -f - (1/2) sum log(1 + lambda/gamma) + (1/2) g^T (H +
  gamma I)^{-1} g from an exact spectrum, a dense Hessian or an operator (SLQ + CG), NaN
  with a warning where some lambda + gamma <= 0 (:mod:`landscape.flatness.laplace`);
* ``"sgld"``: Langevin chains (the Entropy-SGD kernel, Metropolis-adjusted by default) and
  thermodynamic integration over the scope from a Laplace anchor at large gamma
  (:mod:`landscape.flatness.sgld`).

Also the gradient -grad F = gamma (x - <x'>) (Eq. 7) with its error, and scope curves.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.flatness.energy import Energy, check_point
from landscape.flatness.laplace import laplace_model
from landscape.flatness.quadrature import quadrature_local_entropy, quadrature_mean
from landscape.flatness.sgld import _positive_gammas, sgld_gradient, sgld_scope
from landscape.io import to_plain

__all__ = [
    "LocalEntropyGradient",
    "LocalEntropyResult",
    "ScopeCurve",
    "flat_reference",
    "local_entropy",
    "local_entropy_gradient",
    "scope_curve",
]

METHODS = ("sgld", "laplace", "quadrature")
_LAPLACE_KEYS = ("eigenvalues", "hessian", "dense_limit", "num_probes", "num_iters", "cg_tol", "on_probe")
_SGLD_KEYS = ("num_chains", "num_steps", "burn_in", "step_size", "metropolis", "target_accept", "gamma_max",
              "nodes_per_decade", "min_nodes", "control", "progress")
_QUADRATURE_KEYS = ("bounds", "num_points", "width", "margin", "edge_tol", "max_expansions", "max_evaluations")


def flat_reference(n: int, gamma: float) -> float:
    """(n/2) log(2 pi / gamma): the local entropy of the zero energy, subtracted from every estimate."""
    return 0.5 * n * math.log(2.0 * math.pi / gamma)


@dataclass
class LocalEntropyResult:
    """``estimate`` = F(x, gamma) - (n/2) log(2 pi / gamma), with ``stderr``.

    ``stderr`` is a Monte-Carlo standard error for ``sgld`` (over independent chains, plus
    the SLQ anchor's), the SLQ standard error for an operator ``laplace`` (0 when exact),
    and an estimate of the absolute integration error for ``quadrature``. ``warnings``
    holds one-sentence notes (e.g. a Laplace value that does not exist); ``diagnostics``
    says how the number was obtained.
    """

    estimate: float
    stderr: float
    method: str
    gamma: float
    n: int
    reference: str = "flat"
    diagnostics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    seed: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def local_entropy(self) -> float:
        """The absolute F(x, gamma) of Eq. (4) (estimate + the flat reference)."""
        return self.estimate + flat_reference(self.n, self.gamma)

    def to_dict(self) -> dict:
        return to_plain(asdict(self))


@dataclass
class ScopeCurve:
    """F(x, gamma) - (n/2) log(2 pi / gamma) over a grid of scopes (ascending ``gammas``).

    For ``sgld`` the values share chains, so their errors are correlated across gamma.
    """

    gammas: np.ndarray
    estimates: np.ndarray
    stderrs: np.ndarray
    method: str
    n: int
    reference: str = "flat"
    diagnostics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    seed: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return to_plain(asdict(self))


@dataclass
class LocalEntropyGradient:
    """``minus_grad`` = -grad_x F(x, gamma) = gamma (x - <x'>) (Eq. 7), per-coordinate ``stderr``."""

    minus_grad: Tensor
    stderr: Tensor
    mean: Tensor  # <x'> under P(x'; x, gamma) of Eq. (8)
    method: str
    gamma: float
    diagnostics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    seed: int = 0


def _split_options(method: str, options: dict) -> dict:
    allowed = {"sgld": _SGLD_KEYS + ("laplace_options",), "laplace": _LAPLACE_KEYS, "quadrature": _QUADRATURE_KEYS}
    if method not in allowed:
        raise LandscapeError(f"Unknown method '{method}': choose one of {', '.join(METHODS)}.")
    unknown = sorted(set(options) - set(allowed[method]) - (set(_LAPLACE_KEYS) if method == "sgld" else set()))
    if unknown:
        raise LandscapeError(f"Option(s) {', '.join(unknown)} do not apply to method '{method}'; "
                             f"allowed: {', '.join(allowed[method])}.")
    return options


def _sgld_kwargs(options: dict, seed: int) -> dict:
    """Route Laplace-anchor options given flat (eigenvalues=, hessian=, ...) into laplace_options."""
    kwargs = {k: v for k, v in options.items() if k in _SGLD_KEYS}
    laplace = dict(options.get("laplace_options") or {})
    laplace.update({k: v for k, v in options.items() if k in _LAPLACE_KEYS})
    laplace.setdefault("seed", seed)
    kwargs["laplace_options"] = laplace
    return kwargs


def scope_curve(energy: Energy, x0: Tensor, gammas, *, method: str = "sgld", seed: int = 0, **options) -> ScopeCurve:
    """F(x0, gamma) - (n/2) log(2 pi / gamma) at each gamma (sorted, unique), by ``method``.

    ``sgld`` runs ONE anneal from gamma_max through all requested gammas; ``laplace``
    builds the quadratic model once; ``quadrature`` integrates at each gamma.
    Options are those of :func:`local_entropy`.
    """
    start = time.perf_counter()
    x0 = check_point(x0)
    values = _positive_gammas(gammas)
    options = _split_options(method, options)
    n = x0.numel()
    warnings: list[str] = []
    if method == "sgld":
        estimates, stderrs, _, diagnostics, warnings = sgld_scope(energy, x0, values, seed=seed,
                                                                   **_sgld_kwargs(options, seed))
    elif method == "laplace":
        model = laplace_model(energy, x0, seed=seed, **options)
        rows = [model.value(float(g)) for g in values]
        estimates = np.array([r[0] for r in rows])
        stderrs = np.array([r[1] for r in rows])
        diagnostics = {"per_gamma": [r[2] for r in rows]}
        for r in rows:
            warnings.extend(r[3])
    else:
        rows = [quadrature_local_entropy(energy, x0, float(g), **options) for g in values]
        estimates = np.array([r[0] for r in rows])
        stderrs = np.array([r[1] for r in rows])
        diagnostics = {"per_gamma": [r[2] for r in rows]}
    return ScopeCurve(gammas=values, estimates=np.asarray(estimates), stderrs=np.asarray(stderrs), method=method,
                      n=n, diagnostics=diagnostics, wall_s=time.perf_counter() - start, seed=seed, warnings=warnings)


def local_entropy(energy: Energy, x0: Tensor, gamma: float, *, method: str = "sgld", seed: int = 0,
                  **options) -> LocalEntropyResult:
    """F(x0, gamma) - (n/2) log(2 pi / gamma) of Eq. (4) for ``energy`` (a callable over flat vectors).

    ``energy(x)`` returns a scalar tensor and is differentiable by autograd; ``x0`` is a flat
    (float64 recommended) tensor; ``gamma > 0`` is the scope. Options by method:

    * ``sgld``: ``num_chains`` (16), ``num_steps`` (400 per scope level), ``burn_in`` (150),
      ``step_size`` (None: tuned in burn-in), ``metropolis`` (True: MALA; False: plain
      SGLD), ``target_accept``, ``gamma_max`` (default 1000 max(gamma, |lambda|_max)),
      ``nodes_per_decade`` (5), ``min_nodes`` (3), ``control`` (True), ``progress``
      (a callable ``(level, levels, gamma)`` called after each scope level), and the Laplace
      options below for the anchor (or ``laplace_options={...}``);
    * ``laplace``: ``eigenvalues`` (exact spectrum), ``hessian`` (dense matrix or operator),
      ``dense_limit`` (1000: autograd builds the dense Hessian up to this n, SLQ above),
      ``num_probes`` (20), ``num_iters`` (80), ``cg_tol`` (1e-10);
    * ``quadrature`` (n = 1, 2): ``bounds``, ``num_points``, ``width`` (12), ``margin``,
      ``edge_tol``, ``max_expansions``, ``max_evaluations``.

    ``seed`` drives every random draw (chains, SLQ probes): same seed, same result.
    """
    start = time.perf_counter()
    try:
        gamma = float(gamma)
    except (TypeError, ValueError):
        raise LandscapeError(f"gamma must be a positive number (the scope of Eq. 4), got {gamma!r}.") from None
    if not (gamma > 0 and math.isfinite(gamma)):
        raise LandscapeError(f"gamma must be a positive number (the scope of Eq. 4), got {gamma!r}.")
    curve = scope_curve(energy, x0, [float(gamma)], method=method, seed=seed, **options)
    diagnostics = curve.diagnostics
    if method in ("laplace", "quadrature"):
        diagnostics = diagnostics["per_gamma"][0]
    return LocalEntropyResult(estimate=float(curve.estimates[0]), stderr=float(curve.stderrs[0]), method=method,
                              gamma=float(gamma), n=curve.n, diagnostics=diagnostics,
                              wall_s=time.perf_counter() - start, seed=seed, warnings=curve.warnings)


def local_entropy_gradient(energy: Energy, x0: Tensor, gamma: float, *, method: str = "sgld", seed: int = 0,
                           **options) -> LocalEntropyGradient:
    """-grad_x F(x0, gamma) = gamma (x0 - <x'>) (Eq. 7), with per-coordinate errors.

    ``sgld``: MALA chains at ``gamma`` (options ``num_chains``, ``num_steps``, ``burn_in``,
    ``step_size``, ``metropolis``, ``target_accept``), errors over chains. ``laplace``:
    the quadratic model's gamma (H + gamma I)^{-1} g (exact for quadratics; options as in
    :func:`local_entropy`). ``quadrature`` (n = 1, 2): <x'> on the grid, error from the
    rule at twice the spacing.
    """
    start = time.perf_counter()
    x0 = check_point(x0)
    gamma = float(_positive_gammas([gamma])[0])
    if method == "sgld":
        allowed = ("num_chains", "num_steps", "burn_in", "step_size", "metropolis", "target_accept")
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise LandscapeError(f"Option(s) {', '.join(unknown)} do not apply to the sgld gradient; "
                                 f"allowed: {', '.join(allowed)}.")
        minus_grad, stderr, mean, diagnostics = sgld_gradient(energy, x0, gamma, seed=seed, **options)
    elif method == "laplace":
        model = laplace_model(energy, x0, seed=seed, **_split_options("laplace", options))
        if not model.exists(gamma):
            raise LandscapeError(f"The Laplace gradient does not exist at gamma={gamma:g} (lambda_min = "
                                 f"{model.lambda_min:.6g}); use a larger gamma or method='sgld'.")
        y, info = model.solve(gamma)
        if info.get("indefinite"):
            raise LandscapeError(f"H + gamma I is not positive definite at gamma={gamma:g}; "
                                 "use a larger gamma or method='sgld'.")
        minus_grad = gamma * y.to(x0.dtype)
        stderr = torch.zeros_like(minus_grad)
        mean = x0 - y.to(x0.dtype)
        diagnostics = {"source": model.source, **({"cg": info} if info else {})}
    elif method == "quadrature":
        mean_np, error_np, diagnostics = quadrature_mean(energy, x0, gamma, **options)
        mean = torch.as_tensor(mean_np, dtype=x0.dtype, device=x0.device)
        minus_grad = gamma * (x0 - mean)
        stderr = gamma * torch.as_tensor(error_np, dtype=x0.dtype, device=x0.device)
    else:
        raise LandscapeError(f"Unknown method '{method}': choose one of {', '.join(METHODS)}.")
    return LocalEntropyGradient(minus_grad=minus_grad, stderr=stderr, mean=mean, method=method, gamma=gamma,
                                diagnostics=diagnostics, wall_s=time.perf_counter() - start, seed=seed)
