"""Local entropy by Langevin sampling and thermodynamic integration over the scope.

Chains. C independent chains sample the locally focused Gibbs distribution of Eq. (8)
(Chaudhari et al. 2017; full energy, temperature 1)

    P(x'; x, gamma) ∝ exp(-U(x')),    U(x') = f(x') + (gamma/2) ||x - x'||^2,

with the SGLD step Entropy-SGD uses (:func:`landscape.optim.langevin.langevin_step_`,
Alg. 1 lines 5-6). That step adds ``sqrt(lr) * noise * N(0, I)``; the Langevin diffusion
whose invariant law is exp(-U) needs ``x' <- x' - lr grad U + sqrt(2 lr) N(0, I)``, so the
chains pass ``noise = sqrt(2)`` (Alg. 1's epsilon ~ 1e-3 is a heavily cooled chain and
samples exp(-2U/epsilon^2) instead). By default each step is a Metropolis-adjusted
Langevin proposal (MALA; Roberts & Tweedie 1996): the same step, accepted with the
Metropolis-Hastings probability, which removes the O(lr) bias of the unadjusted chain at
no extra gradient cost (the gradient at the proposal is the next step's gradient). With
``metropolis=False`` the chain is plain SGLD (ULA); the acceptance probability it WOULD
have had is still reported as a discretisation indicator, together with the first-order
bias of the estimate on the quadratic model (see :func:`_ula_bias`). The step size is
tuned during burn-in to a target acceptance (0.574 for MALA, Roberts & Rosenthal 1998;
0.9 for ULA) and then frozen, so the measured part of every chain is a fixed Markov kernel.

Thermodynamic integration. Let G(gamma) = F(x, gamma) - (n/2) log(2 pi / gamma), the local
entropy relative to the flat reference. With t = log gamma,

    dG/dt = n/2 - (gamma/2) <||x' - x||^2>          (direct; Eq. 4 differentiated)
          = (1/2) <(x' - x) . grad f(x')>           (virial: <(x' - x) . grad U> = n by parts)

Both stay O(1) per direction instead of the O(n / gamma) of dF/dgamma itself, so nothing
cancels catastrophically. The chains use the minimum-variance combination
a * direct + (1 - a) * virial, with a estimated per level from the second half of burn-in
(independent of the measured samples, so the estimate stays unbiased); the virial form is
exact, zero-variance, for flat directions, the direct form for stiff ones. Then

    G(gamma) = G_lap(gamma_max) - [C(gamma_max) - C(gamma)] - int_{log gamma}^{log gamma_max} (dG/dt - dC/dt) dt,

* anchor: the Laplace value (:mod:`landscape.flatness.laplace`) at gamma_max, whose error
  is O(1/gamma_max^2) for smooth energies (exact for quadratics); gamma_max defaults to
  1000 * max(gamma, |lambda|_max). The reported ``anchor_error_estimate`` is half the gap
  between the sampled slope and the Laplace slope at the top node (the tail integral of an
  O(1/gamma^2) remainder);
* control curve C: the Laplace model with its eigenvalues clipped below at -gamma_min / 2
  (so it exists on the whole range), integrated in closed form; only the residual is
  integrated numerically. For a quadratic energy the residual has mean zero and the
  discretisation error vanishes. ``control=False`` integrates the raw slope (C = 0);
* discretisation: Gauss-Legendre in t on each segment between consecutive requested gammas
  and gamma_max, ``nodes_per_decade`` nodes per decade (at least ``min_nodes`` a segment).
  The chains anneal from gamma_max downwards, each level starting from the last.

Equilibrium check. The virial identity holds only for samples from P itself, so the gap
between the two slope estimators (per level, with its standard error over chains) tests
whether the chains equilibrated; a gap over 5 standard errors raises a warning. Unlike
the standard error, it catches chains that all lag behind in the same way.

Errors. Every chain runs the whole anneal, so each chain yields its own estimate of
G(gamma); the standard error is their standard deviation / sqrt(C) (autocorrelation
included), combined in quadrature with the anchor's (non-zero only for an SLQ anchor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError, NonFiniteLossError
from landscape.flatness.energy import BatchedEnergy, Energy, EnergyHessian, check_point
from landscape.flatness.laplace import LaplaceModel, laplace_model
from landscape.optim.langevin import GaussianNoise, langevin_step_

__all__ = ["LangevinChains", "gauss_legendre_log_grid", "sgld_gradient", "sgld_scope"]

TEMPERATURE_ONE_NOISE = math.sqrt(2.0)  # langevin_step_ noise giving the law exp(-U) exactly (lr -> 0)


@dataclass
class LevelStats:
    """Per-chain averages at one scope: the combined slope, its two estimators, <x'>."""

    gamma: float
    lr: float
    weight_direct: float
    slope: np.ndarray  # (C,) combined estimator of dG/dlog gamma
    direct: np.ndarray
    virial: np.ndarray
    accept: float  # mean acceptance probability over the measured steps
    mean_x: Tensor | None = None  # (C, n) time averages of x'
    extra: dict = field(default_factory=dict)


class LangevinChains:
    """C independent Langevin chains on exp(-f(x') - (gamma/2)||x - x'||^2), started at x.

    All chains live in one block ``X (C, n)`` so each step is one batched gradient call and
    one :func:`langevin_step_` (the Entropy-SGD kernel) with ``noise = sqrt(2)``.
    """

    def __init__(self, energy: BatchedEnergy, x0: Tensor, num_chains: int, *, seed: int,
                 metropolis: bool = True) -> None:
        if num_chains < 2:
            raise LandscapeError("Standard errors need at least 2 chains; set num_chains >= 2.")
        self.energy = energy
        self.x0 = x0
        self.n = x0.numel()
        self.metropolis = metropolis
        self.generator = torch.Generator(device=x0.device).manual_seed(seed)
        self.X = x0.expand(num_chains, self.n).clone()
        self.anchor = x0.expand(num_chains, self.n).clone()
        self.Y = torch.empty_like(self.X)
        self.noise = GaussianNoise([self.Y])
        self.fX, self.gX = energy.value_and_grad(self.X)
        if not bool(torch.isfinite(self.fX).all()):
            raise NonFiniteLossError("The energy is not finite at x0; check the parameters and the data.")
        self.sq = torch.zeros_like(self.fX)  # ||x' - x||^2 of the current states

    def step(self, gamma: float, lr: float) -> Tensor:
        """One proposal per chain; returns the Metropolis acceptance probabilities ``(C,)``.

        Proposal: ``y = x' - lr grad U(x') + sqrt(2 lr) xi`` by :func:`langevin_step_`, whose
        draws ``xi`` stay in the noise buffer, so the forward proposal density is
        exp(-||xi||^2 / 2) and only the backward one is computed:
        log alpha = U(x') - U(y) - ||x' - y + lr grad U(y)||^2 / (4 lr) + ||xi||^2 / 2.
        """
        Y = self.Y
        Y.copy_(self.X)
        langevin_step_([Y], [self.gX], [self.anchor], gamma=gamma, lr=lr, noise=TEMPERATURE_ONE_NOISE,
                       generator=self.generator, noise_buffer=self.noise)
        xi_sq = self.noise.views[0].square().sum(1)
        fY, gY = self.energy.value_and_grad(Y)
        dY = Y - self.anchor
        sqY = dY.square().sum(1)
        backward = torch.add(gY, dY, alpha=gamma).mul_(lr).add_(self.X).sub_(Y)
        log_alpha = (self.fX - fY) + 0.5 * gamma * (self.sq - sqY) - backward.square().sum(1) / (4.0 * lr) + 0.5 * xi_sq
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)
        prob = torch.exp(torch.clamp(log_alpha, max=0.0))
        if self.metropolis:
            u = torch.rand(self.X.shape[0], generator=self.generator, dtype=self.X.dtype, device=self.X.device)
            accept = torch.log(u) < log_alpha
            keep = accept.unsqueeze(1)
            self.X = torch.where(keep, Y, self.X)
            self.gX = torch.where(keep, gY, self.gX)
            self.fX = torch.where(accept, fY, self.fX)
            self.sq = torch.where(accept, sqY, self.sq)
        else:
            if not bool(torch.isfinite(fY).all()):
                raise NonFiniteLossError("An unadjusted Langevin step diverged; lower step_size or use "
                                         "metropolis=True.")
            self.X, self.Y = Y, self.X
            self.fX, self.gX, self.sq = fY, gY, sqY
        return prob

    def slopes(self, gamma: float) -> tuple[Tensor, Tensor]:
        """The direct and virial estimators of dG/dlog gamma at the current states, ``(C,)`` each."""
        direct = 0.5 * (self.n - gamma * self.sq)
        virial = 0.5 * ((self.X - self.anchor) * self.gX).sum(1)
        return direct, virial

    def run_level(self, gamma: float, lr: float, *, burn_in: int, num_steps: int, adapt: bool,
                  target_accept: float, adapt_rate: float = 0.3, keep_mean: bool = False) -> LevelStats:
        """Burn in (tuning ``lr`` if ``adapt``), then average over ``num_steps`` steps."""
        warm_direct, warm_virial = [], []
        for i in range(burn_in):
            prob = self.step(gamma, lr)
            if adapt:
                lr *= math.exp(adapt_rate * (float(prob.mean()) - target_accept))
            if i >= burn_in // 2:
                direct, virial = self.slopes(gamma)
                warm_direct.append(direct)
                warm_virial.append(virial)
        weight = _combination_weight(warm_direct, warm_virial)
        C = self.X.shape[0]
        sum_direct = torch.zeros(C, dtype=self.X.dtype, device=self.X.device)
        sum_virial = torch.zeros_like(sum_direct)
        sum_x = torch.zeros_like(self.X) if keep_mean else None
        sum_prob = 0.0
        for _ in range(num_steps):
            sum_prob += float(self.step(gamma, lr).mean())
            direct, virial = self.slopes(gamma)
            sum_direct += direct
            sum_virial += virial
            if sum_x is not None:
                sum_x += self.X
        direct = (sum_direct / num_steps).cpu().numpy()
        virial = (sum_virial / num_steps).cpu().numpy()
        return LevelStats(gamma=gamma, lr=lr, weight_direct=weight, slope=weight * direct + (1 - weight) * virial,
                          direct=direct, virial=virial, accept=sum_prob / num_steps,
                          mean_x=None if sum_x is None else sum_x / num_steps)


def _combination_weight(direct: list[Tensor], virial: list[Tensor]) -> float:
    """The a in [0, 1] minimising Var(a * direct + (1 - a) * virial), from burn-in samples."""
    if len(direct) < 2:
        return 0.5
    A = torch.cat(direct).double()
    B = torch.cat(virial).double()
    va, vb = float(A.var()), float(B.var())
    cov = float(((A - A.mean()) * (B - B.mean())).mean())
    denominator = va + vb - 2 * cov
    if not denominator > 1e-300:
        return 0.5
    return float(min(1.0, max(0.0, (vb - cov) / denominator)))


def gauss_legendre_log_grid(bounds: list[float], nodes_per_decade: float = 5.0, min_nodes: int = 3):
    """Gauss-Legendre nodes in t = log gamma on each segment [bounds[j], bounds[j+1]].

    Returns ``(gammas, weights, segment)`` as arrays: the rule integrates a function of t,
    ``int g(t) dt ~ sum_k weights[k] g(log gammas[k])`` per segment.
    """
    gammas, weights, segment = [], [], []
    for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        k = max(min_nodes, int(math.ceil(nodes_per_decade * math.log10(hi / lo))))
        z, w = np.polynomial.legendre.leggauss(k)
        a, b = math.log(lo), math.log(hi)
        gammas.append(np.exp(0.5 * (b - a) * z + 0.5 * (b + a)))
        weights.append(0.5 * (b - a) * w)
        segment.append(np.full(k, j))
    return np.concatenate(gammas), np.concatenate(weights), np.concatenate(segment)


def _positive_gammas(gammas) -> np.ndarray:
    values = np.unique(np.asarray(gammas, dtype=np.float64).reshape(-1))
    if values.size == 0 or not np.all(values > 0) or not np.all(np.isfinite(values)):
        raise LandscapeError("gamma must be positive and finite (the scope of Eq. 4); pass values > 0.")
    return values


def _ula_bias(levels: list[LevelStats], weights: np.ndarray, n: int, trace: float) -> np.ndarray:
    """First-order (in lr) bias of each level's slope under UNADJUSTED Langevin, quadratic model.

    For a Gaussian mode of stiffness kappa, ULA's stationary variance is
    1 / (kappa (1 - lr kappa / 2)) = 1/kappa + lr/2 + O(lr^2), whatever kappa: so
    <||x' - x||^2> is high by n lr / 2 and <d . grad f> by lr tr(H) / 2 (means are exact for
    a linear drift). The direct slope is then low by gamma n lr / 4, the virial slope high
    by lr tr(H) / 4. Returned: the bias of each level's combined slope times its weight.
    """
    out = []
    for level, w in zip(levels, weights):
        direct_bias = -level.gamma * n * level.lr / 4
        virial_bias = level.lr * trace / 4
        bias = level.weight_direct * direct_bias + (1 - level.weight_direct) * virial_bias
        out.append(w * bias)
    return np.asarray(out)


def _anneal(chains: LangevinChains, gammas: np.ndarray, *, stiffness: float, step_size: float | None,
            gamma_min: float, burn_in: int, num_steps: int, target_accept: float,
            progress=None) -> list[LevelStats]:
    """Run the chains through ``gammas`` (descending), each level starting where the last ended.

    The tuned step carries over, rescaled by (gamma_prev + L) / (gamma + L) with L the
    largest curvature, the stiffness of U that limits a stable step.
    """
    lr = 0.5 / (gammas[0] + stiffness)
    previous = gammas[0]
    levels = []
    for g in gammas:
        if step_size is not None:
            lr = step_size * gamma_min / g
        else:
            lr *= (previous + stiffness) / (g + stiffness)
        level = chains.run_level(float(g), lr, burn_in=burn_in, num_steps=num_steps, adapt=step_size is None,
                                 target_accept=target_accept)
        lr, previous = level.lr, g
        levels.append(level)
        if progress is not None:
            progress(len(levels), len(gammas), float(g))
    return levels


def sgld_scope(
    energy: Energy,
    x0: Tensor,
    gammas,
    *,
    seed: int = 0,
    num_chains: int = 16,
    num_steps: int = 400,
    burn_in: int = 150,
    step_size: float | None = None,
    metropolis: bool = True,
    target_accept: float | None = None,
    gamma_max: float | None = None,
    nodes_per_decade: float = 5.0,
    min_nodes: int = 3,
    control: bool = True,
    model: LaplaceModel | None = None,
    laplace_options: dict | None = None,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, list[str]]:
    """G(gamma) = F(x0, gamma) - (n/2) log(2 pi / gamma) at each of ``gammas`` (module docstring).

    Returns ``(estimates, stderrs, per_chain (C, m), diagnostics, warnings)`` for the sorted
    unique gammas. ``step_size``: None tunes it during burn-in (recommended); a number fixes
    the step at the smallest gamma, scaled as ``step_size * gamma_min / gamma`` above it.
    ``model``: a prebuilt :class:`LaplaceModel` (otherwise built with ``laplace_options``).
    ``progress(level, levels, gamma)`` is called after each scope level.
    """
    x0 = check_point(x0)
    targets = _positive_gammas(gammas)
    batched = BatchedEnergy(energy)
    if model is None:
        model = laplace_model(energy, x0, **(laplace_options or {}))
    scale = max(abs(model.lambda_max), abs(model.lambda_min))
    if gamma_max is None:
        gamma_max = 1e3 * max(float(targets[-1]), scale)
    if not gamma_max > targets[-1]:
        raise LandscapeError(f"gamma_max ({gamma_max:g}) must exceed the largest requested gamma ({targets[-1]:g}).")
    if not model.exists(gamma_max):
        raise LandscapeError(f"The Laplace anchor does not exist at gamma_max={gamma_max:g} (lambda_min = "
                             f"{model.lambda_min:.6g}); pass a larger gamma_max.")
    anchor, anchor_stderr, anchor_diag, warnings = model.value(gamma_max)
    floor = -0.5 * float(targets[0])

    def curve(g: float) -> tuple[float, float]:
        return model.curve(g, floor=floor) if control else (0.0, 0.0)

    node_gammas, node_weights, node_segment = gauss_legendre_log_grid(
        [*targets.tolist(), gamma_max], nodes_per_decade, min_nodes)
    order = np.argsort(-node_gammas)
    node_gammas, node_weights, node_segment = node_gammas[order], node_weights[order], node_segment[order]

    chains = LangevinChains(batched, x0, num_chains, seed=seed, metropolis=metropolis)
    target_accept = target_accept if target_accept is not None else (0.574 if metropolis else 0.9)
    levels = _anneal(chains, node_gammas, stiffness=max(model.lambda_max, 0.0), step_size=step_size,
                     gamma_min=float(targets[0]), burn_in=burn_in, num_steps=num_steps, target_accept=target_accept,
                     progress=progress)

    slopes = np.stack([lv.slope for lv in levels])  # (K, C)
    curve_slopes = np.array([curve(float(g))[1] for g in node_gammas])
    residual = slopes - curve_slopes[:, None]
    c_top = curve(gamma_max)[0]
    per_chain = np.empty((num_chains, targets.size))
    for j, g in enumerate(targets):
        above = node_segment >= j
        integral = (node_weights[above, None] * residual[above]).sum(0)
        per_chain[:, j] = anchor - (c_top - curve(float(g))[0]) - integral
    estimates = per_chain.mean(0)
    stderrs = np.sqrt(per_chain.var(0, ddof=1) / num_chains + anchor_stderr**2)

    gaps = np.stack([lv.direct - lv.virial for lv in levels])  # (K, C)
    gap_mean = gaps.mean(1)
    gap_stderr = gaps.std(1, ddof=1) / math.sqrt(num_chains)
    unequilibrated = int(np.sum(np.abs(gap_mean) > 5 * gap_stderr))
    if unequilibrated:
        warnings.append(f"At {unequilibrated} scope levels the direct and virial slopes disagree by more than 5 "
                        "standard errors, so the chains had not reached equilibrium (or, without Metropolis, the "
                        "step is too large): raise burn_in and num_steps.")
    top = levels[0]
    top_gap = float(top.slope.mean() - model.slope(top.gamma))
    diagnostics = {
        "chain": "MALA (Metropolis-adjusted Langevin)" if metropolis else "ULA (unadjusted Langevin, plain SGLD)",
        "langevin_noise": TEMPERATURE_ONE_NOISE,
        "num_chains": num_chains, "num_steps": num_steps, "burn_in": burn_in, "seed": seed,
        "integration": "Gauss-Legendre in log gamma, per segment; control curve = clipped Laplace model" if control
        else "Gauss-Legendre in log gamma, per segment; no control curve",
        "nodes_per_decade": nodes_per_decade,
        "gamma_max": gamma_max,
        "anchor": {"value": anchor, "stderr": anchor_stderr, **anchor_diag},
        "anchor_error_estimate": 0.5 * abs(top_gap),
        "anchor_slope_gap": top_gap,
        "anchor_slope_gap_stderr": float(top.slope.std(ddof=1) / math.sqrt(num_chains)),
        "control_floor": floor if control else None,
        "nodes": {
            "gamma": node_gammas.tolist(),
            "weight": node_weights.tolist(),
            "slope_mean": slopes.mean(1).tolist(),
            "slope_stderr": (slopes.std(1, ddof=1) / math.sqrt(num_chains)).tolist(),
            "control_slope": curve_slopes.tolist(),
            "weight_direct": [lv.weight_direct for lv in levels],
            "step_size": [lv.lr for lv in levels],
            "acceptance": [lv.accept for lv in levels],
            "equilibrium_gap": gap_mean.tolist(),
            "equilibrium_gap_stderr": gap_stderr.tolist(),
        },
        "gradient_evaluations": batched.grad_evals,
    }
    if control:
        rule = [float((node_weights * curve_slopes)[node_segment >= j].sum()) for j in range(targets.size)]
        exact = [c_top - curve(float(g))[0] for g in targets]
        diagnostics["discretisation_check"] = [abs(r - e) for r, e in zip(rule, exact)]
    if not metropolis:
        trace = float(np.sum(model.weights * model.nodes))
        bias_terms = _ula_bias(levels, node_weights, model.n, trace)
        diagnostics["ula_bias_first_order"] = [float(-bias_terms[node_segment >= j].sum()) for j in range(targets.size)]
        diagnostics["mean_metropolis_acceptance"] = float(np.mean([lv.accept for lv in levels]))
    low = [lv.accept for lv in levels if lv.accept < 0.2]
    if metropolis and low:
        warnings.append(f"{len(low)} scope levels accepted under 20% of proposals; the chains mixed poorly: "
                        "lower step_size or raise num_steps.")
    return estimates, stderrs, per_chain, diagnostics, warnings


def curvature_scale(energy: Energy, x0: Tensor, *, iters: int = 15, seed: int = 0) -> float:
    """|lambda|_max of the Hessian at x0 by power iteration (a step-size scale); 0 if unavailable."""
    try:
        op = EnergyHessian(energy, x0)
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(x0.numel(), generator=g, dtype=torch.float64).to(x0)
        estimate = 0.0
        for _ in range(iters):
            w = op @ (v / torch.linalg.vector_norm(v))
            estimate = float(torch.linalg.vector_norm(w))
            if estimate == 0.0 or not math.isfinite(estimate):
                return 0.0
            v = w
        return estimate
    except Exception:  # an energy autograd cannot differentiate twice
        return 0.0


def sgld_gradient(
    energy: Energy,
    x0: Tensor,
    gamma: float,
    *,
    seed: int = 0,
    num_chains: int = 16,
    num_steps: int = 1000,
    burn_in: int = 300,
    step_size: float | None = None,
    metropolis: bool = True,
    target_accept: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """-grad F(x0, gamma) = gamma (x0 - <x'>) (Eq. 7) with its standard error over chains.

    Returns ``(minus_grad, stderr, mean_x, diagnostics)``: per-coordinate standard errors
    are the spread of the C per-chain estimates / sqrt(C).
    """
    x0 = check_point(x0)
    gamma = float(_positive_gammas([gamma])[0])
    batched = BatchedEnergy(energy)
    chains = LangevinChains(batched, x0, num_chains, seed=seed, metropolis=metropolis)
    target_accept = target_accept if target_accept is not None else (0.574 if metropolis else 0.9)
    lr = step_size if step_size is not None else 0.5 / (gamma + curvature_scale(energy, x0, seed=seed))
    level = chains.run_level(gamma, lr, burn_in=burn_in, num_steps=num_steps, adapt=step_size is None,
                             target_accept=target_accept, keep_mean=True)
    per_chain = gamma * (x0.unsqueeze(0) - level.mean_x)
    minus_grad = per_chain.mean(0)
    stderr = per_chain.std(0, unbiased=True) / math.sqrt(num_chains)
    gap = level.direct - level.virial
    diagnostics = {"chain": "MALA" if metropolis else "ULA", "step_size": level.lr, "acceptance": level.accept,
                   "equilibrium_gap": float(gap.mean()),
                   "equilibrium_gap_stderr": float(gap.std(ddof=1) / math.sqrt(num_chains)),
                   "num_chains": num_chains, "num_steps": num_steps, "burn_in": burn_in, "seed": seed,
                   "gradient_evaluations": batched.grad_evals}
    return minus_grad, stderr, level.mean_x.mean(0), diagnostics
