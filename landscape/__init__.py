"""landscape: the geometry of neural-network loss landscapes.

The public entry points, importable from the top level (loaded on first use, so that
``import landscape`` and the command line stay quick)::

    from landscape import Hessian, lanczos, local_energy, EntropySGD

Curvature of any model: :class:`Hessian`, :class:`GGN`, :class:`Fisher` (``.eigenvalues()``,
``.trace()``, ``.density()``, ``.dense()``, ``@``, ``.to_scipy()``) and the operators
under them. Spectra: :func:`lanczos`, :func:`slq`, :func:`trace` (Hutchinson),
:func:`exact_spectrum`, :func:`dense_hessian`. Flatness: :func:`local_entropy`,
:func:`local_energy`, :func:`sharpness` (epsilon-sharpness), :func:`hessian_sharpness`,
:func:`pac_bayes_sigma`, :func:`fisher_rao_norm`. Optimizers: :class:`EntropySGD`,
:class:`EntropyAdam`, :class:`ReplicatedSGD`, :class:`SAM`. Data, models and runs:
:func:`load_dataset`, :func:`build_model`, :func:`load_checkpoint`. Platform services:
:mod:`landscape.platform`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

#: public name -> (module, attribute)
_PUBLIC = {
    "Hessian": ("landscape.api", "Hessian"),
    "GGN": ("landscape.api", "GGN"),
    "Fisher": ("landscape.api", "Fisher"),
    "Eigenvalues": ("landscape.api", "Eigenvalues"),
    "per_sample_gradients": ("landscape.api", "per_sample_gradients"),
    "gradient_moments": ("landscape.api", "gradient_moments"),
    "HessianOperator": ("landscape.curvature.operators", "HessianOperator"),
    "GGNOperator": ("landscape.curvature.operators", "GGNOperator"),
    "FisherOperator": ("landscape.curvature.operators", "FisherOperator"),
    "lanczos": ("landscape.spectra.lanczos", "lanczos"),
    "slq": ("landscape.spectra.slq", "slq"),
    "trace": ("landscape.spectra.trace", "hutchinson_trace"),
    "exact_spectrum": ("landscape.spectra.exact", "exact_spectrum"),
    "dense_hessian": ("landscape.curvature.dense", "dense_hessian"),
    "diagonal_fisher": ("landscape.curvature.diagonal", "diagonal_fisher"),
    "local_entropy": ("landscape.flatness.local_entropy", "local_entropy"),
    "local_energy": ("landscape.flatness.local_energy", "local_energy"),
    "sharpness": ("landscape.flatness.sharpness", "epsilon_sharpness"),
    "hessian_sharpness": ("landscape.flatness.sharpness", "hessian_sharpness"),
    "pac_bayes_sigma": ("landscape.flatness.sharpness", "pac_bayes_sigma"),
    "fisher_rao_norm": ("landscape.flatness.sharpness", "fisher_rao_norm"),
    "EntropySGD": ("landscape.optim.entropy_sgd", "EntropySGD"),
    "EntropyAdam": ("landscape.optim.entropy_sgd", "EntropyAdam"),
    "ReplicatedSGD": ("landscape.optim.replicated", "ReplicatedSGD"),
    "SAM": ("landscape.optim.sam", "SAM"),
    "load_dataset": ("landscape.data", "load_dataset"),
    "build_model": ("landscape.models", "build_model"),
    "load_checkpoint": ("landscape.checkpoint", "load_checkpoint"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
