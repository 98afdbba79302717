"""Curvature of any PyTorch model in a few lines: :class:`Hessian`, :class:`GGN`, :class:`Fisher`.

::

    H = landscape.Hessian(model, loss_fn, data)        # any nn.Module; loss_fn(outputs, targets) -> batch mean
    H.eigenvalues(k=10)                                 # Lanczos with full reorthogonalisation, largest first
    H.trace(rel_tol=0.01); H.density(); H.dense(); H @ v; H.to_scipy()

The matrix is that of the MEAN loss over every sample ``data`` yields (each batch weighted
by its size, docs/design.md sec. 4), in float64 and eval mode unless told otherwise.
``data`` is a DataLoader or any iterable of batches: ``(inputs, targets)`` pairs, longer
tuples (the first two are used), or anything ``batch_fn(batch) -> (inputs, targets)``
turns into a pair (dicts, say). The batches are read once and held by the operator.
Every result says how well it is known: eigenvalues come with their Kato-Temple error
bounds, the trace with its standard error and whether it met its target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.curvature.operators import FisherOperator, GGNOperator, HessianOperator
from landscape.errors import LandscapeError
from landscape.spectra.lanczos import lanczos
from landscape.spectra.slq import SLQResult, slq
from landscape.spectra.trace import hutchinson_trace

__all__ = ["Eigenvalues", "Fisher", "GGN", "GradientMoments", "Hessian", "Trace", "as_pairs", "gradient_moments",
           "per_sample_gradients"]

_WHICH = {"largest": "LA", "smallest": "SA", "both": "both", "magnitude": "LM"}


@dataclass(frozen=True)
class Eigenvalues:
    """Ritz values in the order asked for (largest first for ``"largest"``), each within
    ``error_bounds[i]`` of an eigenvalue of the operator; ``converged`` says whether that
    bound met the requested tolerance."""

    values: np.ndarray
    error_bounds: np.ndarray
    converged: np.ndarray
    which: str
    products: int


@dataclass(frozen=True)
class Trace:
    """Hutchinson's estimate with its standard error; ``converged`` is False where the probe
    cap stopped it before ``rel_tol``."""

    value: float
    stderr: float
    probes: int
    converged: bool


def as_pairs(data: Any, batch_fn: Callable[[Any], tuple] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs, targets)`` per batch of ``data`` (see the module docstring)."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        data = [data]  # one batch given as a pair of tensors
    if not isinstance(data, Iterable):
        raise LandscapeError("data must be a DataLoader or an iterable of batches, e.g. [(inputs, targets)].")
    pairs = []
    for batch in data:
        if batch_fn is not None:
            batch = batch_fn(batch)
        if isinstance(batch, dict):
            raise LandscapeError("a batch is a dict: pass batch_fn=lambda b: (b['inputs'], b['targets']) (your "
                                 "keys) to say which entries are the inputs and the targets.")
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise LandscapeError(f"a batch must be an (inputs, targets) pair or longer tuple, got "
                                 f"{type(batch).__name__}; pass batch_fn to map it to one.")
        pairs.append((batch[0], batch[1]))
    return pairs


class _Curvature:
    """The shared facade: an operator of the mean loss, and the estimators that run on it."""

    def __init__(self, model: nn.Module, loss_fn: Callable | None, data: Any, *,
                 batch_fn: Callable[[Any], tuple] | None = None, params: list[str] | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None, mode: str = "eval"):
        self.operator = self._build(model, loss_fn, as_pairs(data, batch_fn), dtype=dtype, device=device,
                                    mode=mode, params=params)

    def _build(self, model, loss_fn, batches, **options):  # pragma: no cover - each subclass has its own
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        return self.operator.shape

    def __matmul__(self, other):
        return self.operator @ other

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out)."""
        return self.operator.to_scipy()

    def eigenvalues(self, k: int = 10, which: str = "largest", *, tol: float = 1e-8,
                    max_iters: int | None = None, seed: int = 0) -> Eigenvalues:
        """``k`` eigenvalues at the ``which`` end: largest, smallest, both (k at each end) or magnitude."""
        if which not in _WHICH:
            raise LandscapeError(f"which must be one of {', '.join(_WHICH)}, got {which!r}.")
        result = lanczos(self.operator, k=k, which=_WHICH[which], tol=tol, max_iters=max_iters, seed=seed)
        order = np.arange(len(result.ritz_values))  # ascending from lanczos
        if which == "largest":
            order = order[::-1]
        elif which == "magnitude":
            order = np.argsort(-np.abs(result.ritz_values), kind="stable")
        return Eigenvalues(values=result.ritz_values[order], error_bounds=result.error_bounds[order],
                           converged=result.converged[order], which=which, products=result.hvp_count)

    def trace(self, rel_tol: float = 0.01, *, max_probes: int = 1000, seed: int = 0) -> Trace:
        """Hutchinson's estimate, stopping at ``rel_tol`` relative standard error or ``max_probes``."""
        result = hutchinson_trace(self.operator, max_samples=max_probes, target_rel=rel_tol, seed=seed)
        return Trace(value=result.estimate, stderr=result.stderr, probes=result.samples, converged=result.converged)

    def density(self, *, probes: int = 10, iters: int = 90, seed: int = 0) -> SLQResult:
        """Stochastic Lanczos quadrature: ``.density(grid)`` smooths it, ``.trace_estimate()`` integrates it."""
        return slq(self.operator, num_probes=probes, num_iters=iters, seed=seed)

    def dense(self) -> torch.Tensor:
        """The whole matrix (n x n, float64 on the CPU), one block of products at a time.

        Held in memory: above ``2 GiB`` use :func:`landscape.dense_hessian` with an output
        folder (memory-mapped, resumable, and much faster for ReLU classifiers)."""
        n = self.shape[0]
        if n * n * 8 > 2 * 2**30:
            raise LandscapeError(f"the {n:,} x {n:,} matrix takes {n * n * 8 / 2**30:.1f} GiB: build it with "
                                 "landscape.dense_hessian(H.operator, out_dir) (memory-mapped, resumable).")
        columns = []
        for start in range(0, n, 64):
            block = torch.eye(n, dtype=torch.float64)[:, start:start + 64]
            columns.append(self.operator.matmat(block).detach().to("cpu", torch.float64))
        matrix = torch.cat(columns, dim=1)
        return 0.5 * (matrix + matrix.T)


class Hessian(_Curvature):
    """The Hessian of the mean loss (exact products: no finite differences)."""

    def _build(self, model, loss_fn, batches, **options):
        return HessianOperator(model, loss_fn, batches, **options)


class GGN(_Curvature):
    """The generalised Gauss-Newton matrix ``sum_b (|b|/N) J_b^T H_z J_b`` of the outputs z."""

    def _build(self, model, loss_fn, batches, **options):
        return GGNOperator(model, loss_fn, batches, **options)


class Fisher(_Curvature):
    """The empirical Fisher (per-sample gradients at the observed targets) or, with
    ``kind="mc"``, the Monte-Carlo Fisher at targets drawn from the model (classifiers)."""

    def __init__(self, model: nn.Module, loss_fn: Callable | None, data: Any, *, kind: str = "empirical",
                 draws: int = 1, seed: int = 0, **options):
        self._fisher = {"kind": kind, "mc_samples": draws, "seed": seed}
        super().__init__(model, loss_fn, data, **options)

    def _build(self, model, loss_fn, batches, **options):
        return FisherOperator(model, loss_fn, batches, **self._fisher, **options)


@dataclass(frozen=True)
class GradientMoments:
    """Moments of the per-sample gradients g_i over the N samples: ``mean`` (the mean loss's
    gradient), ``second_moment`` (mean of g_i**2: the empirical Fisher's diagonal) and
    ``variance`` (``second_moment - mean**2``, the population variance per parameter)."""

    mean: torch.Tensor
    second_moment: torch.Tensor
    variance: torch.Tensor
    samples: int


def _sample_gradients(model, loss_fn, data, batch_fn, **options):
    """Each batch's ``(B, n)`` per-sample gradients, one batch at a time (vmapped over samples)."""
    operator = FisherOperator(model, loss_fn, as_pairs(data, batch_fn), kind="empirical", **options)
    for x, y in operator.batches:
        yield operator.per_sample_gradients(x, y).detach()


def per_sample_gradients(model: nn.Module, loss_fn: Callable | None, data: Any, *,
                         batch_fn: Callable[[Any], tuple] | None = None, **options) -> torch.Tensor:
    """``(N, n)``: row i is the gradient of sample i's own loss (``loss_fn`` on that sample alone),
    by ``torch.func.vmap`` over the samples; options as for :class:`Hessian` (dtype, device, params)."""
    return torch.cat(list(_sample_gradients(model, loss_fn, data, batch_fn, **{"dtype": torch.float64, **options})))


def gradient_moments(model: nn.Module, loss_fn: Callable | None, data: Any, *,
                     batch_fn: Callable[[Any], tuple] | None = None, **options) -> GradientMoments:
    """The mean, second moment and variance of the per-sample gradients, accumulated batch by batch
    (the (N, n) matrix is never held); options as for :class:`Hessian`."""
    total = first = second = None
    for rows in _sample_gradients(model, loss_fn, data, batch_fn, **{"dtype": torch.float64, **options}):
        part_first, part_second = rows.sum(0), (rows * rows).sum(0)
        first = part_first if first is None else first + part_first
        second = part_second if second is None else second + part_second
        total = rows.shape[0] + (total or 0)
    mean, second = first / total, second / total
    return GradientMoments(mean=mean, second_moment=second, variance=(second - mean * mean).clamp_min(0.0),
                           samples=int(total))

