"""Trace estimators from matrix-vector products: Hutchinson and Hutch++.

Hutchinson (1990): ``tr A = E[v^T A v]`` for Rademacher v; the estimate is the mean of
the samples with standard error s / sqrt(m). Samples are drawn in blocks until the
standard error falls below ``target_stderr`` (absolute) or ``target_rel`` x |estimate|,
or the product budget runs out.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021): spend a third of the budget on a
sketch Q of A's range (orthonormalised A S), take tr(Q^T A Q) exactly, and apply
Hutchinson to the deflated remainder (I - QQ^T) A (I - QQ^T). For matrices whose trace
is dominated by a few large eigenvalues (Hessians) the error drops from O(1/sqrt(m)) to
O(1/m). The standard error reported is that of the Hutchinson part (the deflated
part is exact).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from landscape.curvature.base import as_operator


@dataclass
class TraceResult:
    estimate: float
    stderr: float
    hvp_count: int
    samples: int
    method: str
    wall_s: float
    converged: bool = True  # False: the stopping rule's target was not reached within max_samples


def _rademacher(n: int, k: int, g: torch.Generator, device, dtype) -> torch.Tensor:
    return (torch.randint(0, 2, (n, k), generator=g, dtype=dtype) * 2 - 1).to(device)


def hutchinson_trace(
    A,
    *,
    max_samples: int = 1000,
    min_samples: int = 10,
    block: int = 10,
    target_stderr: float | None = None,
    target_rel: float | None = None,
    seed: int = 0,
    on_block: Callable[[int, int, float], None] | None = None,
) -> TraceResult:
    """Hutchinson's estimator with a stopping rule on its standard error.

    Stops once the standard error reaches ``target_stderr`` or ``target_rel`` x |mean|, or
    at ``max_samples`` probes; ``converged`` says which. ``on_block(probes, max_samples,
    rel_stderr)`` is called after each block of probes (progress).
    """
    start = time.perf_counter()
    op = as_operator(A)
    n = op.shape[0]
    g = torch.Generator().manual_seed(seed)
    before = op.count
    samples: list[float] = []
    reached = target_stderr is None and target_rel is None
    while len(samples) < max_samples:
        k = min(block, max_samples - len(samples))
        V = _rademacher(n, k, g, op.device, torch.float64)
        AV = op.matmat(V).to(torch.float64)
        samples.extend((V * AV).sum(dim=0).tolist())
        if len(samples) >= max(min_samples, 2):
            mean = sum(samples) / len(samples)
            stderr = _stderr(samples)
            if on_block is not None:
                on_block(len(samples), max_samples, stderr / abs(mean) if mean else math.inf)
            reached = ((target_stderr is not None and stderr <= target_stderr)
                       or (target_rel is not None and stderr <= target_rel * abs(mean)))
            if reached:
                break
    mean = sum(samples) / len(samples)
    return TraceResult(mean, _stderr(samples), op.count - before, len(samples), "hutchinson",
                       time.perf_counter() - start, converged=reached)


def hutchpp_trace(A, *, num_matvecs: int = 99, seed: int = 0) -> TraceResult:
    """Hutch++ with a total budget of ``num_matvecs`` products (split in thirds)."""
    start = time.perf_counter()
    op = as_operator(A)
    n = op.shape[0]
    g = torch.Generator().manual_seed(seed)
    before = op.count
    k = max(1, num_matvecs // 3)
    S = _rademacher(n, k, g, op.device, torch.float64)
    Q, _ = torch.linalg.qr(op.matmat(S).to(torch.float64))
    exact_part = float(torch.sum(Q * op.matmat(Q).to(torch.float64)))
    m = max(2, num_matvecs - 2 * k)
    G = _rademacher(n, m, g, op.device, torch.float64)
    G = G - Q @ (Q.T @ G)
    AG = op.matmat(G).to(torch.float64)
    samples = (G * AG).sum(dim=0).tolist()
    estimate = exact_part + sum(samples) / len(samples)
    return TraceResult(
        estimate, _stderr(samples), op.count - before, len(samples), "hutch++", time.perf_counter() - start
    )


def _stderr(samples: list[float]) -> float:
    m = len(samples)
    if m < 2:
        return float("nan")
    mean = sum(samples) / m
    var = sum((s - mean) ** 2 for s in samples) / (m - 1)
    return math.sqrt(var / m)
