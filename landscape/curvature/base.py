"""The one interface for curvature: symmetric linear operators over flat parameters.

Every operator (Hessian, GGN, Fisher, or a dense matrix in a test) supports ``A @ v``
for a vector ``(n,)`` and ``A @ V`` for a block ``(n, k)``, ``.shape``, ``.dtype``,
``.device`` and ``.to_scipy()``. Estimators (Lanczos, SLQ, trace) are free functions
that call :func:`as_operator` on whatever they are given, so a test can pass a dense
matrix with a known spectrum where production code passes a Hessian.

Operators count their products (``.count``: one per vector, a block of k counts k), the
figure benchmarks compare across libraries.
"""

from __future__ import annotations

import numpy as np
import torch


class LinearOperator:
    """Base class: subclasses implement ``_matmat(V)`` for a float tensor ``V (n, k)``."""

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def __init__(self) -> None:
        self.count = 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        if V.dim() != 2 or V.shape[0] != self.shape[1]:
            raise ValueError(f"expected a block of shape ({self.shape[1]}, k), got {tuple(V.shape)}")
        out = self._matmat(V.to(device=self.device, dtype=self.dtype))
        self.count += V.shape[1]
        return out

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v.reshape(-1, 1)).reshape(-1)

    def __matmul__(self, other):
        if isinstance(other, torch.Tensor):  # first: the common case, microseconds count per product
            return self.matvec(other) if other.dim() == 1 else self.matmat(other)
        if not isinstance(other, np.ndarray):
            return NotImplemented
        t = torch.from_numpy(other)
        out = self.matvec(t) if t.dim() == 1 else self.matmat(t)
        return out.detach().cpu().numpy()

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out)."""
        from scipy.sparse.linalg import LinearOperator as ScipyOperator

        def matvec(x):
            return self.matvec(torch.as_tensor(np.asarray(x).reshape(-1))).detach().cpu().double().numpy()

        def matmat(X):
            return self.matmat(torch.as_tensor(np.asarray(X))).detach().cpu().double().numpy()

        return ScipyOperator(self.shape, matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=np.float64)


class DenseOperator(LinearOperator):
    """A dense symmetric matrix (tensor or array) behind the operator interface."""

    def __init__(self, matrix) -> None:
        super().__init__()
        m = torch.as_tensor(matrix) if not isinstance(matrix, torch.Tensor) else matrix
        if m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"a square matrix is needed, got shape {tuple(m.shape)}")
        if not m.is_floating_point():
            m = m.double()
        self.matrix = m
        self.shape = (m.shape[0], m.shape[1])
        self.dtype = m.dtype
        self.device = m.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.matrix @ V


class _ScipyAdapter(LinearOperator):
    def __init__(self, op) -> None:
        super().__init__()
        self.op = op
        self.shape = tuple(op.shape)
        self.dtype = torch.float64
        self.device = torch.device("cpu")

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.op.matmat(V.cpu().numpy())), dtype=torch.float64)


def as_operator(A) -> LinearOperator:
    """Wrap ``A`` (a landscape operator, a dense tensor/array, or a scipy operator)."""
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, (torch.Tensor, np.ndarray)):
        return DenseOperator(A)
    if hasattr(A, "matmat") and hasattr(A, "shape"):
        return _ScipyAdapter(A)
    raise TypeError(f"cannot use a {type(A).__name__} as a linear operator")


class ScaledOperator(LinearOperator):
    """``factor * A`` for an operator ``A`` (e.g. the Hessian of N times the mean loss)."""

    def __init__(self, op, factor: float) -> None:
        super().__init__()
        self.op = as_operator(op)
        self.factor = float(factor)
        self.shape = tuple(self.op.shape)
        self.dtype = self.op.dtype
        self.device = self.op.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.factor * self.op.matmat(V)
