"""Energies over a flat parameter vector: batched values and gradients, Hessian products.

The local-entropy estimators take the energy f of Chaudhari et al. 2017 (Eq. 4) as a
callable ``f(x: Tensor(n,)) -> scalar Tensor`` differentiable by autograd: a toy function
in a test, or a network's mean training loss as a function of its flat parameter vector
(:func:`energy_from_model`). This module turns such a callable into what the estimators
need:

* :class:`BatchedEnergy`: values and gradients at a block of points ``X (C, n)`` (C
  Langevin chains, or a quadrature grid). It tries ``torch.func.vmap`` first (one
  vectorised call) and falls back to one autograd call per row when the callable has no
  batching rule (``.item()`` inside, data-dependent control flow). Gradient evaluations
  are counted, one per row.
* :class:`EnergyHessian`: the Hessian of f at a point as a
  :class:`~landscape.curvature.base.LinearOperator` (forward-over-reverse products,
  Pearlmutter 1994), so SLQ and conjugate gradients run on any energy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, jvp, vmap

from landscape.curvature.base import LinearOperator
from landscape.errors import LandscapeError, ShapeError

Energy = Callable[[Tensor], Tensor]

__all__ = ["BatchedEnergy", "Energy", "EnergyHessian", "check_point", "dense_energy_hessian", "energy_from_model"]


def check_point(x0: Tensor) -> Tensor:
    """Validate the anchor point: a 1-D floating tensor (returned detached)."""
    if not isinstance(x0, Tensor):
        raise ShapeError("x0 must be a torch tensor: pass the flat parameter vector, "
                         "e.g. torch.tensor([...], dtype=torch.float64).")
    if x0.dim() != 1 or x0.numel() == 0:
        raise ShapeError(f"x0 must be a non-empty flat vector of shape (n,), got shape {tuple(x0.shape)}; "
                         "flatten it first.")
    if not x0.is_floating_point():
        raise ShapeError("x0 must be a floating-point tensor; convert it with x0.double().")
    return x0.detach()


class BatchedEnergy:
    """Values and gradients of ``energy`` at the rows of a block ``X (C, n)``.

    ``vectorize``: ``None`` tries ``vmap`` once and remembers whether it worked; ``True``
    or ``False`` forces the choice. ``grad_evals`` counts gradient evaluations (rows).
    """

    def __init__(self, energy: Energy, *, vectorize: bool | None = None) -> None:
        if not callable(energy):
            raise LandscapeError("energy must be a callable f(x) -> scalar tensor over the flat parameter vector.")
        self.energy = energy
        self.vectorize = vectorize
        self.grad_evals = 0
        self.value_evals = 0

    def _scalar(self, x: Tensor) -> Tensor:
        value = self.energy(x)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ShapeError("energy(x) must return a scalar tensor (one number per parameter vector).")
        return value.reshape(())

    def value_and_grad(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(X_c), grad f(X_c))`` for each row, shapes ``(C,)`` and ``(C, n)``."""
        self.grad_evals += X.shape[0]
        if self.vectorize is not False:
            try:
                grads, values = vmap(grad_and_value(self._scalar))(X)
                self.vectorize = True
                return values.detach(), grads.detach()
            except ShapeError:
                raise
            except Exception:  # no batching rule: fall back to rows (decided once)
                if self.vectorize:
                    raise
                self.vectorize = False
        values, grads = [], []
        for row in X:
            with torch.enable_grad():
                x = row.detach().clone().requires_grad_(True)
                value = self._scalar(x)
                (g,) = torch.autograd.grad(value, x)
            values.append(value.detach())
            grads.append(g.detach())
        return torch.stack(values), torch.stack(grads)

    def values(self, X: Tensor, chunk: int = 65536) -> Tensor:
        """``f(X_c)`` for each row (no gradients), in chunks of ``chunk`` rows."""
        self.value_evals += X.shape[0]
        out = []
        with torch.no_grad():
            for start in range(0, X.shape[0], chunk):
                block = X[start : start + chunk]
                if self.vectorize is not False:
                    try:
                        out.append(vmap(self._scalar)(block))
                        self.vectorize = True
                        continue
                    except ShapeError:
                        raise
                    except Exception:
                        if self.vectorize:
                            raise
                        self.vectorize = False
                out.append(torch.stack([self._scalar(row) for row in block]))
        return torch.cat(out)


class EnergyHessian(LinearOperator):
    """The Hessian of ``energy`` at ``x0`` as a linear operator (``H @ v``, ``H @ V``).

    Products are ``jvp`` of ``grad`` (exact, one gradient-cost each), blocks go through
    ``vmap`` over columns in chunks of ``chunk_size`` (falling back to a loop).
    """

    def __init__(self, energy: Energy, x0: Tensor, *, chunk_size: int = 32) -> None:
        super().__init__()
        x0 = check_point(x0)
        self.energy = energy
        self.x0 = x0
        self.shape = (x0.numel(), x0.numel())
        self.dtype = x0.dtype
        self.device = x0.device
        self.chunk_size = chunk_size
        self._vectorize: bool | None = None

    def _hvp(self, v: Tensor) -> Tensor:
        _, hv = jvp(grad(lambda x: self.energy(x).reshape(())), (self.x0,), (v,))
        return hv

    def _matmat(self, V: Tensor) -> Tensor:
        if V.shape[1] == 1:
            return self._hvp(V[:, 0]).unsqueeze(1)
        if self._vectorize is not False:
            try:
                out = vmap(self._hvp, in_dims=1, out_dims=1, chunk_size=self.chunk_size)(V)
                self._vectorize = True
                return out
            except Exception:
                if self._vectorize:
                    raise
                self._vectorize = False
        return torch.stack([self._hvp(V[:, j]) for j in range(V.shape[1])], dim=1)


def dense_energy_hessian(energy: Energy, x0: Tensor, *, block: int = 64) -> Tensor:
    """The dense Hessian of ``energy`` at ``x0`` (n HVPs in column blocks), symmetrised."""
    op = EnergyHessian(energy, x0)
    n = op.shape[0]
    eye = torch.eye(n, dtype=op.dtype, device=op.device)
    H = torch.cat([op @ eye[:, start : start + block] for start in range(0, n, block)], dim=1)
    return 0.5 * (H + H.T)


def energy_from_model(
    model: torch.nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    mode: str = "eval",
    dtype: torch.dtype | None = torch.float64,
    params: Sequence[str] | None = None,
):
    """A network's MEAN training loss as an energy over its flat parameter vector.

    Returns ``(energy, x0, hessian)``: the callable, the model's current parameters as a
    flat vector, and the :class:`~landscape.curvature.operators.HessianOperator` at x0
    (usable as ``hessian=`` for the Laplace estimate). Batches are weighted by
    ``|b| / N`` (docs/design.md sec. 4, via the operator's machinery), the model runs on a
    private copy in ``mode`` (default eval) and ``dtype`` (default float64); ``params``
    restricts the energy to the named parameter tensors, the others stay fixed.
    """
    from landscape.curvature.operators import HessianOperator

    op = HessianOperator(model, loss_fn, batches, mode=mode, dtype=dtype, params=params)

    def energy(x: Tensor) -> Tensor:
        p = op.unflatten(x)
        return sum(w * op.batch_loss(p, xb, yb) for (xb, yb), w in zip(op.batches, op.weights))

    return energy, op.parameter_vector().clone(), op
