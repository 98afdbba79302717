"""Sharpness measures users compare, each labelled with its invariance to ReLU layer rescaling.

Dinh et al. 2017 ("Sharp minima can generalize for deep nets") show that scaling one
layer of a ReLU network by a > 0 and the next by 1/a leaves the function (and so every
loss and error) unchanged while making the Hessian arbitrarily sharp or flat. A measure
that changes under this map measures the parametrisation, not the minimum.
``invariant_to_rescaling`` says which measures survive; ``tests/test_flatness_measures.py``
proves it for the ones that claim it.

===============================  ===========================================  =========
measure                          definition                                   invariant
===============================  ===========================================  =========
epsilon-sharpness, relative      max_{|u_i|<=eps} L(w (1+u)) - L(w)            yes
epsilon-sharpness, keskar        max_{|d_i|<=eps(|w_i|+1)} L(w+d) - L(w)      no
PAC-Bayes sigma', multiplicative largest sigma: E L(w(1+sigma z)) - L <= t    yes
PAC-Bayes sigma', additive       largest sigma: E L(w+sigma z) - L <= t       no
Fisher-Rao norm                  <w, F w> (Liang et al. 2019)                 yes
Hessian trace, lambda_max        curvature engine                             no
===============================  ===========================================  =========

Epsilon-sharpness follows Keskar et al. 2017 (Sec. 2.2.1, their box C_eps and the
normalised 100 (max - L) / (1 + L)), maximised by projected sign-gradient ascent (the
L-infinity steepest ascent; Madry et al. 2018) instead of L-BFGS-B. The "relative" box
|d_i| <= eps |w_i| is the magnitude-aware version of Jiang et al. 2019 without the
additive constant that breaks invariance. The PAC-Bayes sigma' is the magnitude-aware
flatness bound of Jiang et al. 2019 (Sec. 4, "pacbayes.mag.flatness": they report
1/sigma'^2), found by bisection in log sigma with common random numbers.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import grad, jvp

from landscape.errors import LandscapeError
from landscape.flatness.network import NOISES, NetworkFunction, as_batches, check_parameter_names

__all__ = [
    "SharpnessResult",
    "epsilon_sharpness",
    "fisher_rao_norm",
    "hessian_sharpness",
    "pac_bayes_sigma",
    "rescale_layers",
]


@dataclass
class SharpnessResult:
    """One flatness/sharpness number with its error (``None`` when exact) and provenance."""

    measure: str
    value: float
    stderr: float | None
    invariant_to_rescaling: bool
    settings: dict
    extra: dict = field(default_factory=dict)
    perturbed: dict = field(default_factory=dict)
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def rescale_layers(model: nn.Module, first: str, second: str, alpha: float) -> nn.Module:
    """A copy of ``model`` with module ``first`` (weight and bias) times ``alpha`` and ``second``'s weight / alpha.

    For a ReLU network where only positively homogeneous maps (ReLU, max-pooling,
    flattening) sit between ``first`` and ``second``, the copy computes exactly the same
    function (Dinh et al. 2017, Sec. 3). Powers of two keep it exact in floating point.
    """
    if not alpha > 0:
        raise LandscapeError(f"alpha must be positive (a negative scale does not commute with ReLU), got {alpha}.")
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    for name in (first, second):
        if name not in modules or not isinstance(getattr(modules[name], "weight", None), Tensor):
            raise LandscapeError(
                f"'{name}' is not a module with a weight; modules: "
                f"{', '.join(n for n, m in modules.items() if getattr(m, 'weight', None) is not None)}."
            )
    with torch.no_grad():
        modules[first].weight.mul_(alpha)
        if getattr(modules[first], "bias", None) is not None:
            modules[first].bias.mul_(alpha)
        modules[second].weight.div_(alpha)
    return out


def _mean_loss(net: NetworkFunction, params: dict, batches) -> Tensor:
    total = sum(x.shape[0] for x, _ in batches)
    return sum((x.shape[0] / total) * net.loss_fn(net.logits(params, x), y) for x, y in batches)


def epsilon_sharpness(
    model: nn.Module,
    data,
    epsilon: float = 1e-3,
    *,
    box: str = "relative",
    steps: int = 20,
    step_fraction: float = 0.25,
    params: Sequence[str] | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    loss_fn: Callable | None = None,
    progress: Callable[[str], None] | None = None,
) -> SharpnessResult:
    """max over the box of L(w + d) - L(w), by ``steps`` of projected sign-gradient ascent.

    ``box="relative"``: |d_i| <= eps |w_i| (rescaling-invariant); ``box="keskar"``:
    |d_i| <= eps (|w_i| + 1) (Keskar et al. 2017, not invariant). The ascent starts at
    d = 0 and moves by ``step_fraction`` x the box half-width per step (up where a gradient
    component is 0, so a stationary point is left); the largest loss met on the way is the
    estimate (a lower bound of the true maximum). ``extra`` holds Keskar's normalised value
    100 (max - L) / (1 + L) and the ascent trace.
    """
    start = time.perf_counter()
    if box not in ("relative", "keskar"):
        raise LandscapeError(f"box must be 'relative' or 'keskar', got '{box}'.")
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise LandscapeError(f"epsilon must be a positive number, got {epsilon}.")
    if steps < 1:
        raise LandscapeError(f"steps must be >= 1, got {steps}.")
    net = NetworkFunction(model, params=params, dtype=dtype, device=device, loss_fn=loss_fn)
    batches = net.prepare(as_batches(data, batch_size))
    scale = {n: (w.abs() if box == "relative" else w.abs() + 1.0) for n, w in net.base.items()}
    radius = {n: epsilon * s for n, s in scale.items()}
    with torch.no_grad():
        base = float(_mean_loss(net, net.base, batches))
    delta = {n: torch.zeros_like(w) for n, w in net.base.items()}
    loss_grad = grad(lambda p: _mean_loss(net, p, batches))
    best, trace = base, [base]
    for _ in range(steps):
        point = {n: net.base[n] + delta[n] for n in net.names}
        g = loss_grad(point)
        with torch.no_grad():
            for n in net.names:
                # a zero gradient component (at a stationary point, all of them) would never move: step it up
                direction = torch.where(g[n] == 0, 1.0, torch.sign(g[n]))
                delta[n] = torch.clamp(delta[n] + step_fraction * radius[n] * direction, -radius[n], radius[n])
            value = float(_mean_loss(net, {n: net.base[n] + delta[n] for n in net.names}, batches))
        trace.append(value)
        if not math.isfinite(value):
            raise LandscapeError(f"The loss became {value} during the sharpness ascent (epsilon={epsilon:g} is too "
                                 "large for this network); use a smaller --epsilon.")
        best = max(best, value)
        if progress is not None:
            progress(f"epsilon-sharpness ({box}): step {len(trace) - 1}/{steps}, loss {value:.6g}")
    sharp = best - base
    return SharpnessResult(
        measure=f"epsilon-sharpness-{box}", value=sharp, stderr=None, invariant_to_rescaling=box == "relative",
        settings={"epsilon": epsilon, "box": box, "steps": steps, "step_fraction": step_fraction,
                  "data_samples": sum(x.shape[0] for x, _ in batches)},
        extra={"base_loss": base, "max_loss": best, "keskar_normalised": 100.0 * sharp / (1.0 + base),
               "ascent_trace": trace},
        perturbed=net.description(), wall_s=time.perf_counter() - start,
    )


def pac_bayes_sigma(
    model: nn.Module,
    data,
    *,
    target: float = 0.1,
    metric: str = "error",
    noise: str = "multiplicative",
    samples: int = 10,
    seed: int = 0,
    bounds: tuple[float, float] = (1e-5, 10.0),
    rtol: float = 0.01,
    max_iters: int = 60,
    params: Sequence[str] | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    loss_fn: Callable | None = None,
    progress: Callable[[str], None] | None = None,
) -> SharpnessResult:
    """The largest sigma with E_z[metric(w')] - metric(w) <= ``target`` (Jiang et al. 2019, Sec. 4).

    w' = w (1 + sigma z) for ``noise="multiplicative"`` (invariant) or w + sigma z. The
    same ``samples`` draws z serve every sigma tried, so the deviation is a fixed smooth
    function of sigma and bisection in log sigma converges to ``rtol``. ``value`` is
    sigma'; ``extra`` holds 1/sigma'^2 (the flatness measure Jiang et al. correlate with
    the generalisation gap) and the bisection history. ``stderr`` is the error of sigma'
    implied by the Monte-Carlo error of the deviation at sigma' (delta method, from the
    local slope; ``None`` when the draws cannot provide one). Jiang et al. perturb with
    sigma |w_i| + eps'; the additive eps' is left out here because it breaks the rescaling
    invariance. When the target is not crossed inside ``bounds``, ``extra["bracketed"]``
    is False, ``value`` is the bound reached and a warning says so.
    """
    start = time.perf_counter()
    if noise not in NOISES:
        raise LandscapeError(f"noise must be one of {', '.join(NOISES)}, got '{noise}'.")
    if metric not in ("error", "loss"):
        raise LandscapeError(f"metric must be 'error' or 'loss', got '{metric}'.")
    if not target > 0:
        raise LandscapeError(f"target deviation must be positive, got {target}.")
    low, high = float(bounds[0]), float(bounds[1])
    if not 0 < low < high:
        raise LandscapeError(f"bounds must satisfy 0 < low < high, got {bounds}.")
    if samples < 1:
        raise LandscapeError(f"samples must be >= 1, got {samples}.")
    net = NetworkFunction(model, params=params, dtype=dtype, device=device, loss_fn=loss_fn)
    batches = net.prepare(as_batches(data, batch_size))
    column = 0 if metric == "loss" else 1
    base = net.evaluate(net.base, batches)[column]
    generator = torch.Generator().manual_seed(int(seed))
    draws = [net.draw(generator) for _ in range(samples)]
    history: list[tuple[float, float, float]] = []
    cache: dict[float, tuple[float, float]] = {}
    # the metric is an average of per-sample values: allow for its last-bit rounding at the target
    slack = 1e-12 * max(1.0, abs(target))

    def deviation(sigma: float) -> tuple[float, float]:
        if sigma in cache:
            return cache[sigma]
        vals = np.array([net.evaluate(net.perturb(z, sigma, noise), batches)[column] for z in draws])
        vals = np.where(np.isfinite(vals), vals, np.inf)
        mean = float(vals.mean()) - base
        err = float(vals.std(ddof=1) / math.sqrt(samples)) if samples > 1 and np.all(np.isfinite(vals)) else math.nan
        history.append((sigma, mean, err))
        cache[sigma] = (mean, err)
        if progress is not None:
            progress(f"pac-bayes ({noise}): sigma {sigma:.4g} -> deviation {mean:.4g} (target {target:g})")
        return mean, err

    warnings = []
    bracketed = False
    dev_low, _ = deviation(low)
    dev_high, _ = deviation(high)
    if dev_low > target + slack:
        warnings.append(f"The deviation already exceeds the target at sigma={low:g}; sigma' is below the search "
                        "range (value = the lower bound).")
        sigma_star = low
    elif dev_high <= target + slack:
        warnings.append(f"The deviation stays below the target up to sigma={high:g}; sigma' is above the search "
                        "range (value = the upper bound).")
        sigma_star = high
    else:
        bracketed = True
        for _ in range(max_iters):
            mid = math.sqrt(low * high)
            if deviation(mid)[0] <= target + slack:
                low = mid
            else:
                high = mid
            if high / low - 1.0 <= rtol:
                break
        sigma_star = low
    # delta-method error: d sigma = d dev / (d dev / d sigma), the slope over the final bracket
    stderr = None
    if bracketed:
        dev_a, err_star = deviation(sigma_star)
        dev_b, _ = deviation(high)
        slope = (dev_b - dev_a) / (high - sigma_star)
        if slope > 0 and math.isfinite(err_star) and err_star > 0:
            stderr = err_star / slope
    if samples < 2:
        warnings.append("With one noise draw there is no Monte-Carlo error: use samples >= 2.")
    return SharpnessResult(
        measure=f"pac-bayes-sigma-{noise}", value=sigma_star, stderr=stderr,
        invariant_to_rescaling=noise == "multiplicative",
        settings={"target": target, "metric": metric, "noise": noise, "samples": samples, "seed": seed,
                  "bounds": list(bounds), "rtol": rtol, "data_samples": sum(x.shape[0] for x, _ in batches)},
        extra={"flatness_inverse_sigma_squared": 1.0 / sigma_star**2, "base": base, "bracketed": bracketed,
               "history": [{"sigma": s, "deviation": d, "stderr": e} for s, d, e in history]},
        perturbed=net.description(), wall_s=time.perf_counter() - start, warnings=warnings,
    )


def fisher_rao_norm(
    model: nn.Module,
    data,
    *,
    kind: str = "model",
    params: Sequence[str] | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> SharpnessResult:
    """The squared Fisher-Rao norm <w, F(w) w> (Liang et al. 2019, Def. 2), exactly.

    ``kind="model"``: F is the Fisher of the model's predictive distribution; the
    expectation over labels is a sum over the C classes (no sampling):
    (1/N) sum_i sum_y p(y|x_i) (w . grad_w log p(y|x_i))^2. ``kind="empirical"``: the
    observed labels, (1/N) sum_i (w . grad_w l_i)^2. Each directional derivative
    w . grad is one forward-mode product (``jvp`` along w) per batch. Invariant to
    every diagonal rescaling symmetry T (l(Tw) = l(w) gives grad l(Tw) = T^{-1} grad l(w),
    so (Tw) . grad l(Tw) = w . grad l(w)). ``value`` is <w, F w>; ``extra["norm"]`` its root.
    """
    start = time.perf_counter()
    if kind not in ("model", "empirical"):
        raise LandscapeError(f"kind must be 'model' or 'empirical', got '{kind}'.")
    net = NetworkFunction(model, params=params, dtype=dtype, device=device)
    batches = net.prepare(as_batches(data, batch_size))
    total = torch.zeros((), dtype=torch.float64, device=net.device)
    count = 0
    for x, y in batches:
        def log_probs(p, x=x):
            return torch.log_softmax(net.logits(p, x), dim=-1)

        with torch.no_grad():
            logp, dlogp = jvp(log_probs, (net.base,), (net.base,))
        logp = logp.reshape(-1, logp.shape[-1]).double()
        dlogp = dlogp.reshape(-1, dlogp.shape[-1]).double()
        targets = y.reshape(-1)
        if kind == "model":
            total += (logp.exp() * dlogp.square()).sum()
        else:
            total += dlogp.gather(1, targets[:, None]).square().sum()
        count += targets.numel()
    value = float(total) / count
    return SharpnessResult(
        measure=f"fisher-rao-{kind}", value=value, stderr=None, invariant_to_rescaling=True,
        settings={"kind": kind, "data_samples": sum(x.shape[0] for x, _ in batches)},
        extra={"norm": math.sqrt(max(value, 0.0)), "positions": count},
        perturbed=net.description(), wall_s=time.perf_counter() - start,
    )


def hessian_sharpness(
    model: nn.Module,
    data,
    *,
    trace_rel: float = 0.02,
    max_probes: int = 200,
    tol: float = 1e-8,
    seed: int = 0,
    params: Sequence[str] | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[SharpnessResult]:
    """Hessian lambda_max (Lanczos) and trace (Hutchinson, stopping at ``trace_rel``) of the mean loss; NOT invariant.

    Both come from the curvature engine (:mod:`landscape.spectra`) on the same samples.
    lambda_max has no standard error (it is deterministic): ``extra["residual_bound"]`` is
    its Ritz residual, which bounds |lambda_max - theta|; ``extra["error_bound"]`` the tighter
    Kato-Temple bound the stopping rule uses (tol is relative to it). Warnings say when Lanczos did not
    converge or the trace missed its target error within ``max_probes``.
    """
    from landscape.curvature.operators import HessianOperator
    from landscape.spectra.lanczos import lanczos
    from landscape.spectra.trace import hutchinson_trace

    start = time.perf_counter()
    check_parameter_names(model, params)
    op = HessianOperator(model, None, as_batches(data, batch_size), dtype=dtype, device=device, params=params)
    if progress is not None:
        progress(f"Hessian lambda_max by Lanczos ({op.shape[0]} parameters, {op.num_samples} samples)")
    top = lanczos(op, k=1, which="LA", tol=tol, seed=seed)
    lanczos_products = op.count
    lanczos_s = time.perf_counter() - start
    if progress is not None:
        progress(f"lambda_max {float(top.ritz_values.max()):.6g} after {lanczos_products} products, {lanczos_s:.0f} s; "
                 f"Hessian trace by Hutchinson (up to {max_probes} probes)")
    trace = hutchinson_trace(op, max_samples=max_probes, target_rel=trace_rel, seed=seed)
    top_warnings, trace_warnings = [], []
    if not top.all_converged:
        top_warnings.append(f"Lanczos did not reach tol={tol:g}: lambda_max is known to its residual bound only.")
    if trace.estimate != 0 and trace.stderr > trace_rel * abs(trace.estimate):
        trace_warnings.append(f"The trace's relative error {trace.stderr / abs(trace.estimate):.1%} misses the "
                              f"{trace_rel:.1%} target after {trace.samples} probes (its cap); raise "
                              "--max-probes.")
    perturbed = {"perturbed": list(op.names), "num_perturbed": int(op.shape[0]), "mode": "eval",
                 "dtype": str(op.dtype).replace("torch.", ""), "fixed_buffers": list(dict(op.module.named_buffers()))}
    settings = {"data_samples": op.num_samples, "seed": seed}
    return [
        SharpnessResult(
            measure="hessian-lambda-max",
            value=float(top.ritz_values.max()),
            stderr=None,
            invariant_to_rescaling=False,
            settings={**settings, "tol": tol},
            extra={
                "residual_bound": float(top.residuals.max()),
                "error_bound": float(top.error_bounds.max()),
                "converged": bool(top.all_converged),
                "products": lanczos_products,
            },
            perturbed=perturbed,
            wall_s=lanczos_s,
            warnings=top_warnings,
        ),
        SharpnessResult(
            measure="hessian-trace",
            value=float(trace.estimate),
            stderr=float(trace.stderr),
            invariant_to_rescaling=False,
            settings={**settings, "target_rel": trace_rel, "max_probes": max_probes},
            extra={
                "probes": trace.samples,
                "products": op.count - lanczos_products,
                "method": "hutchinson",
                "converged": bool(trace.converged),
            },
            perturbed=perturbed,
            wall_s=time.perf_counter() - start - lanczos_s,
            warnings=trace_warnings,
        ),
    ]

