"""Flatness measures: local entropy (Chaudhari et al. 2017, Eq. 4), local energy, sharpness.

Library API only (the ``landscape flatness`` command builds on it)::

    from landscape.flatness import local_entropy
    result = local_entropy(energy, x0, gamma=1.0, method="sgld", seed=0)
    result.estimate, result.stderr    # F(x0, gamma) - (n/2) log(2 pi / gamma)

``energy`` is any callable over a flat parameter vector (:func:`energy_from_model` makes
one from a network and its data). Perturbation measures take the model and its data::

    local_energy(model, {"train": train, "test": test}, sigmas=[0.01, 0.1])   # Pittorino et al. 2021
    epsilon_sharpness(model, train, 1e-3); pac_bayes_sigma(model, train); fisher_rao_norm(model, train)

Each sharpness result states ``invariant_to_rescaling`` (Dinh et al. 2017).
"""

from __future__ import annotations

from landscape.flatness.energy import BatchedEnergy, EnergyHessian, dense_energy_hessian, energy_from_model
from landscape.flatness.laplace import LaplaceModel, conjugate_gradient, laplace_model
from landscape.flatness.local_energy import LocalEnergyResult, local_energy
from landscape.flatness.local_entropy import (
    LocalEntropyGradient,
    LocalEntropyResult,
    ScopeCurve,
    flat_reference,
    local_entropy,
    local_entropy_gradient,
    scope_curve,
)
from landscape.flatness.quadrature import energy_on_grid, grid_local_entropy, quadrature_local_entropy, quadrature_mean
from landscape.flatness.sgld import LangevinChains, gauss_legendre_log_grid, sgld_gradient, sgld_scope
from landscape.flatness.sharpness import (
    SharpnessResult,
    epsilon_sharpness,
    fisher_rao_norm,
    hessian_sharpness,
    pac_bayes_sigma,
    rescale_layers,
)

__all__ = [
    "BatchedEnergy",
    "EnergyHessian",
    "LangevinChains",
    "LaplaceModel",
    "LocalEnergyResult",
    "LocalEntropyGradient",
    "LocalEntropyResult",
    "ScopeCurve",
    "SharpnessResult",
    "conjugate_gradient",
    "dense_energy_hessian",
    "energy_from_model",
    "energy_on_grid",
    "epsilon_sharpness",
    "fisher_rao_norm",
    "flat_reference",
    "gauss_legendre_log_grid",
    "grid_local_entropy",
    "hessian_sharpness",
    "laplace_model",
    "local_entropy",
    "local_energy",
    "local_entropy_gradient",
    "pac_bayes_sigma",
    "quadrature_local_entropy",
    "quadrature_mean",
    "rescale_layers",
    "scope_curve",
    "sgld_gradient",
    "sgld_scope",
]
