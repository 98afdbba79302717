"""Optimizers: Entropy-SGD / Entropy-Adam, replicated SGD, SAM, and a name-based factory.

Closure contract (the training loop relies on it): ``opt.step(closure)`` where ``closure()``
zeros the gradients, runs forward and backward at the model's CURRENT parameter values and
returns the loss. Every optimizer here returns the loss of its FIRST closure call and
declares

* ``closure_fresh_batch``: True if each closure call should draw a fresh minibatch
  (Entropy-SGD, Entropy-Adam, replicated SGD), False if all calls in one step reuse the
  same minibatch (SAM; plain torch optimizers, which lack the attribute, count as False);
* ``closure_calls_per_step``: gradient evaluations per step (L, replicas, 2), so the loop
  can count effective epochs;
* ``diagnostics()``: a JSON-able dict of current values (scope, coupling, ...).

The helpers :func:`closure_fresh_batch` and :func:`closure_calls_per_step` read those with the
torch-optimizer defaults (False, 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.optim.entropy_sgd import EntropyAdam, EntropySGD
from landscape.optim.langevin import GaussianNoise, ema_update_, langevin_step_
from landscape.optim.replicated import ReplicatedSGD
from landscape.optim.rng import NOISE_RNG_CHOICES, Generator, PhiloxGenerator, make_generator
from landscape.optim.sam import SAM

__all__ = [
    "OPTIMIZER_NAMES",
    "SAM",
    "EntropyAdam",
    "EntropySGD",
    "GaussianNoise",
    "NOISE_RNG_CHOICES",
    "PhiloxGenerator",
    "ReplicatedSGD",
    "build_optimizer",
    "closure_calls_per_step",
    "closure_fresh_batch",
    "ema_update_",
    "langevin_step_",
    "make_generator",
]

OPTIMIZER_NAMES = ("sgd", "adam", "entropy-sgd", "entropy-adam", "replicated-sgd", "sam")

# Per-optimizer defaults for the arguments that build_optimizer leaves as None.
_ENTROPY_DEFAULTS = {
    "entropy-sgd": {"L": 20, "gamma": 0.03, "scoping": 1e-3},
    "entropy-adam": {"L": 5, "gamma": 0.01, "scoping": 0.0},
}


def closure_fresh_batch(optimizer: torch.optim.Optimizer) -> bool:
    """Whether each closure call of ``optimizer.step`` should see a fresh minibatch (False for torch optimizers)."""
    return bool(getattr(optimizer, "closure_fresh_batch", False))


def closure_calls_per_step(optimizer: torch.optim.Optimizer) -> int:
    """Gradient evaluations per ``optimizer.step`` (1 for torch optimizers)."""
    return int(getattr(optimizer, "closure_calls_per_step", 1))


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    L: int | None = None,
    sgld_lr: float = 0.1,
    noise: float = 1e-4,
    gamma: float | None = None,
    scoping: float | None = None,
    alpha: float = 0.75,
    sgld_momentum: float = 0.0,
    replicas: int = 3,
    coupling: float = 1e-3,
    coupling_growth: float = 1e-3,
    rho: float = 0.05,
    adaptive: bool = False,
    sam_base: str = "sgd",
    generator: Generator | None = None,
) -> torch.optim.Optimizer:
    """The optimizer called ``name`` (one of :data:`OPTIMIZER_NAMES`) over ``model``'s trainable parameters.

    Arguments an optimizer does not use are ignored; ``None`` means that optimizer's own
    default (``L``: 20 for entropy-sgd, 5 for entropy-adam; ``gamma``: 0.03 / 0.01;
    ``scoping``: 1e-3 / 0). Nesterov is applied only when ``momentum > 0``. ``sam_base``
    picks SAM's base ("sgd" with the momentum arguments, or "adam" with ``betas``).
    ``sgld_momentum`` is the Entropy optimizers' Nesterov momentum on the SGLD data gradient
    (0: Alg. 1 as printed; the paper's Sec. 5.2 runs use it in "both loops").
    Unknown names and invalid hyper-parameters raise :class:`LandscapeError`.
    """
    key = name.lower()
    if key not in OPTIMIZER_NAMES:
        raise LandscapeError(f"Unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}.")
    params = [p for p in model.parameters() if p.requires_grad]
    use_nesterov = nesterov and momentum > 0.0
    sgd_kwargs: dict[str, Any] = dict(lr=lr, momentum=momentum, nesterov=use_nesterov, weight_decay=weight_decay)
    adam_kwargs: dict[str, Any] = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    try:
        if key == "sgd":
            return torch.optim.SGD(params, **sgd_kwargs)
        if key == "adam":
            return torch.optim.Adam(params, **adam_kwargs)
        if key in _ENTROPY_DEFAULTS:
            defaults = _ENTROPY_DEFAULTS[key]
            chain: dict[str, Any] = dict(
                L=defaults["L"] if L is None else L,
                sgld_lr=sgld_lr,
                noise=noise,
                gamma=defaults["gamma"] if gamma is None else gamma,
                scoping=defaults["scoping"] if scoping is None else scoping,
                alpha=alpha,
                sgld_momentum=sgld_momentum,
                generator=generator,
            )
            if key == "entropy-sgd":
                return EntropySGD(params, **sgd_kwargs, **chain)
            return EntropyAdam(params, **adam_kwargs, **chain)
        if key == "replicated-sgd":
            return ReplicatedSGD(
                model,
                replicas=replicas,
                coupling=coupling,
                coupling_growth=coupling_growth,
                generator=generator,
                **sgd_kwargs,
            )
        base = sam_base.lower()
        if base not in ("sgd", "adam"):
            raise LandscapeError(f"Unknown SAM base optimizer {sam_base!r}; choose 'sgd' or 'adam'.")
        base_kwargs = sgd_kwargs if base == "sgd" else adam_kwargs
        return SAM(params, base, rho=rho, adaptive=adaptive, model=model, **base_kwargs)
    except ValueError as err:
        raise LandscapeError(str(err)) from err
