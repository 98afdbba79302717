"""Grids of parameter points ``w + sum_k c_k d_k`` and the loss and error at each of them.

:func:`evaluate_points` evaluates many points in one forward pass: the parameters of a
chunk of points are stacked along a new leading dimension and the network is called
through ``torch.func.functional_call`` under ``vmap`` (a batched matmul or grouped
convolution per layer), so nothing is copied into the model per point. Memory grows
with points per pass x samples per pass, both bounded by arguments.
:func:`evaluate_points_loop` is the reference it is tested and benchmarked against:
copy each point's weights into the model, forward over the data, one point at a time
(the way the ``loss-landscape`` code does it).

BatchNorm: every point is evaluated in eval mode with the running statistics stored in
the checkpoint. That is the network the checkpoint defines (its reported test error is
the centre of the slice), and it keeps the value at a point a function of the weights
alone, which is what lets points be batched; re-estimating the statistics at each point
on training data (which Li et al. discuss) costs a pass over training data per point
and is not implemented yet. Dropout is off (eval mode).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from landscape.losses import cross_entropy
from landscape.slices.datalayer import DataLayers
from landscape.slices.directions import Direction

__all__ = ["Grid", "PointValues", "evaluate_points", "evaluate_points_loop", "interpolation_grid", "square_grid"]


@dataclass(frozen=True)
class Grid:
    """Coordinates along each direction; the points are their Cartesian product ("ij" order)."""

    axes: tuple[np.ndarray, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def coords(self) -> np.ndarray:
        """``(points, dims)``: row i is the i-th point in C order of :attr:`shape`."""
        mesh = np.meshgrid(*self.axes, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=1)


def square_grid(dims: int, span: float, points: int) -> Grid:
    """``points`` evenly spaced coordinates in [-span, span] along each of ``dims`` directions."""
    axis = np.linspace(-span, span, points)
    return Grid(tuple(axis.copy() for _ in range(dims)))


def interpolation_grid(points: int, margin: float) -> Grid:
    """``points`` evenly spaced values of t in [-margin, 1 + margin], with 0 and 1 always among them."""
    axis = np.union1d(np.linspace(-margin, 1.0 + margin, points), [0.0, 1.0])
    return Grid((axis,))


@dataclass
class PointValues:
    """Mean loss and error (fraction of wrong predictions) at each point of one split."""

    loss: np.ndarray
    error: np.ndarray


def wrong_predictions(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The number of predictions (argmax over the last dimension) that differ from ``targets``."""
    return (outputs.argmax(dim=-1) != targets).sum()


def _stacked(directions: Sequence[Direction], name: str) -> torch.Tensor:
    return torch.stack([d.tensors[name].reshape(-1) for d in directions])  # (k, numel)


def _point_parameters(weights: dict[str, torch.Tensor], stacked: dict[str, torch.Tensor],
                      coords: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{name: (p, *shape)}``: the parameters of p points at once."""
    return {n: w.unsqueeze(0) + (coords @ stacked[n]).reshape(len(coords), *w.shape) for n, w in weights.items()}


def _prepare(model: nn.Module, weights, directions, inputs, targets, dtype, device):
    module = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    weights = {n: w.to(device=device, dtype=dtype) for n, w in weights.items()}
    directions = [Direction({n: t.to(device=device, dtype=dtype) for n, t in d.tensors.items()}, d.label)
                  for d in directions]
    x = inputs.to(device)
    x = x.to(dtype) if x.is_floating_point() else x
    return module, weights, directions, x, targets.to(device)


#: Activations one vmapped pass may hold (points x samples x the largest layer output, x3 for
#: the layers alive at once) when ``points_per_pass`` is left to :func:`auto_points_per_pass`.
ACTIVATION_BUDGET = 512 * 2**20
MAX_POINTS_PER_PASS = 32


@torch.no_grad()
def auto_points_per_pass(module: nn.Module, sample: torch.Tensor, chunk_size: int, *,
                         budget: int = ACTIVATION_BUDGET, cap: int = MAX_POINTS_PER_PASS) -> int:
    """Grid points per pass such that their activations on ``chunk_size`` samples fit ``budget`` bytes."""
    largest = [1]

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output[0].numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        module(sample[:1])
    finally:
        for handle in handles:
            handle.remove()
    return int(max(1, min(cap, budget // (3 * largest[0] * min(chunk_size, len(sample))))))


@torch.no_grad()
def evaluate_points(model: nn.Module, weights: dict[str, torch.Tensor], directions: Sequence[Direction],
                    coords: np.ndarray, inputs: torch.Tensor, targets: torch.Tensor, *, chunk_size: int = 256,
                    points_per_pass: int | None = None, dtype: torch.dtype = torch.float32, device="cpu",
                    loss_fn: Callable = cross_entropy, error_fn: Callable = wrong_predictions,
                    data_layers: bool = True, on_points: Callable[[float], None] | None = None) -> PointValues:
    """Mean loss and error over all samples at the points ``weights + coords @ directions``.

    ``coords`` is ``(points, len(directions))``; ``chunk_size`` samples and
    ``points_per_pass`` points (None: :func:`auto_points_per_pass`) go through the network
    at once; ``on_points(n)`` is told
    the points done (fractions: a chunk of samples is part of a point) after each pass.
    ``data_layers``: the layers applied to the data take their responses from
    :class:`landscape.slices.datalayer.DataLayers` (once per sample chunk, not per point).
    Parameters not in ``weights`` and the buffers (BatchNorm running statistics) stay at
    the model's values. ``loss_fn(outputs, targets,
    reduction="sum")`` and ``error_fn(outputs, targets)`` are sums over a chunk; both
    means divide by ``targets.numel()`` (positions, for sequence models).
    """
    module, weights, directions, x, y = _prepare(model, weights, directions, inputs, targets, dtype, device)
    fixed = {n: t for n, t in list(module.named_parameters()) + list(module.named_buffers()) if n not in weights}
    stacked = {n: _stacked(directions, n) for n in weights}
    layers: DataLayers | None = None
    if points_per_pass is None:
        points_per_pass = auto_points_per_pass(module, x, chunk_size)

    def stats(params, c, xb, yb):
        if layers is not None:
            layers.bind(params, c)
        logits = functional_call(module, {**fixed, **params}, (xb,))
        return loss_fn(logits, yb, reduction="sum"), error_fn(logits, yb)

    batched = vmap(stats, in_dims=(0, 0, None, None))
    c = torch.as_tensor(np.asarray(coords), dtype=dtype, device=device).reshape(len(coords), len(directions))
    loss = np.zeros(len(c))
    wrong = np.zeros(len(c), dtype=np.int64)
    for first in range(0, len(x), chunk_size):
        xb, yb = x[first:first + chunk_size].clone(), y[first:first + chunk_size]  # a base of its own: views are seen
        if data_layers:
            layers = DataLayers(xb, [d.tensors for d in directions])
            layers.record(weights)
            with layers:
                functional_call(module, {**fixed, **weights}, (xb,))
        for start in range(0, len(c), points_per_pass):
            stop = min(start + points_per_pass, len(c))
            params = _point_parameters(weights, stacked, c[start:stop])
            with layers if layers is not None else contextlib.nullcontext():
                l_sum, w_sum = batched(params, c[start:stop], xb, yb)
            loss[start:stop] += l_sum.double().cpu().numpy()
            wrong[start:stop] += w_sum.cpu().numpy()
            if on_points is not None:
                on_points((stop - start) * len(yb) / len(y))
    count = y.numel()
    return PointValues(loss / count, wrong / count)


@torch.no_grad()
def evaluate_points_loop(model: nn.Module, weights: dict[str, torch.Tensor], directions: Sequence[Direction],
                         coords: np.ndarray, inputs: torch.Tensor, targets: torch.Tensor, *, chunk_size: int = 256,
                         dtype: torch.dtype = torch.float32, device="cpu", loss_fn: Callable = cross_entropy,
                         error_fn: Callable = wrong_predictions) -> PointValues:
    """The same values one point at a time: copy the point's weights into the model, forward
    over the data (the reference for tests and benchmarks)."""
    module, weights, directions, x, y = _prepare(model, weights, directions, inputs, targets, dtype, device)
    named = dict(module.named_parameters())
    count = y.numel()
    loss = np.zeros(len(coords))
    wrong = np.zeros(len(coords), dtype=np.int64)
    for i, point in enumerate(np.asarray(coords).reshape(len(coords), len(directions))):
        for n, w in weights.items():
            named[n].copy_(w + sum(float(a) * d.tensors[n] for a, d in zip(point, directions)))
        for first in range(0, len(x), chunk_size):
            logits = module(x[first:first + chunk_size])
            yb = y[first:first + chunk_size]
            loss[i] += float(loss_fn(logits, yb, reduction="sum"))
            wrong[i] += int(error_fn(logits, yb))
    return PointValues(loss / count, wrong / count)
