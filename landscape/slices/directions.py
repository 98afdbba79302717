"""Directions in parameter space along which a loss-landscape slice is taken.

A direction is a :class:`Direction`: one tensor per parameter of the network (same names
and shapes as ``model.named_parameters()``), a label, the seed it was drawn with (None
when it is not random) and, for eigen-directions, its eigenvalue.

* :func:`random_direction`: a Gaussian draw, filter-normalised as Li et al. 2018
  ("Visualizing the Loss Landscape of Neural Nets", Sec. 4): every filter of the
  direction is rescaled to the norm of the same filter of the weights. A filter is a
  slice along the first (output) dimension: an output channel of a convolution, a row
  (output unit) of a Linear layer. One-dimensional parameters (biases, BatchNorm scales
  and shifts) are zeroed by default, as Li et al. do; with ``keep_bias_bn`` each of them
  is kept and rescaled as a whole to the norm of the same tensor of the weights.
  Filter normalisation makes the slice invariant to the rescalings of a ReLU network
  that leave its function unchanged (Dinh et al. 2017): scale a layer by a, the next by
  1/a, and the slice does not move.
* :func:`hessian_directions`: Lanczos eigenvectors of the Hessian of the mean loss,
  scaled to the norm of the weights, so that ``--range`` means the same distance as for
  filter-normalised random directions (whose norm is that of the weights they follow).
* :func:`interpolation_direction`: the straight line to another solution,
  ``w_other - w``: t = 0 is this run, t = 1 the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from landscape.errors import LandscapeError

__all__ = ["Direction", "direction_seeds", "filter_normalize", "hessian_directions", "interpolation_direction",
           "random_direction", "stack", "weights_of"]


@dataclass
class Direction:
    """One direction: ``tensors[name]`` has the shape of parameter ``name`` (float64 whatever
    the weights' dtype: a path's end ``w + 1 * (w_other - w)`` is then ``w_other`` exactly)."""

    tensors: dict[str, torch.Tensor]
    label: str
    seed: int | None = None
    eigenvalue: float | None = None
    extra: dict = field(default_factory=dict)

    def flat(self) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in self.tensors.values()])

    def norm(self) -> float:
        return float(torch.linalg.vector_norm(self.flat().double()))


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` (detached), in ``named_parameters`` order."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def direction_seeds(seed: int, count: int) -> list[int]:
    """Independent seeds for ``count`` directions from one user seed (no overlap across seeds)."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def filter_normalize(direction: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], *,
                     keep_bias_bn: bool = False) -> dict[str, torch.Tensor]:
    """Li et al.'s filter normalisation of ``direction`` against ``weights`` (see the module doc)."""
    out = {}
    for name, d in direction.items():
        w = weights[name].to(d.dtype)
        if d.dim() <= 1:
            out[name] = _rescale(d, w) if keep_bias_bn else torch.zeros_like(d)
            continue
        d_rows, w_rows = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
        d_norm = torch.linalg.vector_norm(d_rows, dim=1, keepdim=True)
        w_norm = torch.linalg.vector_norm(w_rows, dim=1, keepdim=True)
        # a zero filter of the direction cannot be scaled to anything: it stays zero
        scale = torch.where(d_norm > 0, w_norm / torch.where(d_norm > 0, d_norm, 1), 0)
        out[name] = (d_rows * scale).reshape(d.shape)
    return out


def _rescale(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    d_norm = torch.linalg.vector_norm(d)
    return d * (torch.linalg.vector_norm(w) / d_norm) if d_norm > 0 else torch.zeros_like(d)


def random_direction(weights: dict[str, torch.Tensor], seed: int, *, normalization: str = "filter",
                     keep_bias_bn: bool = False, label: str = "random") -> Direction:
    """A Gaussian direction drawn with ``seed`` (float64 on the CPU: the same draw on every
    device and dtype), ``normalization`` "filter" (Li et al.) or "none" (the raw draw)."""
    if normalization not in ("filter", "none"):
        raise LandscapeError(f"normalization must be 'filter' or 'none', got '{normalization}'.")
    generator = torch.Generator().manual_seed(seed)
    # every tensor is drawn, even one zeroed below: the draw does not depend on the options
    raw = {n: torch.randn(w.shape, generator=generator, dtype=torch.float64) for n, w in weights.items()}
    if normalization == "filter":
        raw = filter_normalize(raw, {n: w.detach().cpu().double() for n, w in weights.items()},
                               keep_bias_bn=keep_bias_bn)
    tensors = {n: raw[n].to(device=w.device) for n, w in weights.items()}
    return Direction(tensors, label, seed=seed, extra={"normalization": normalization, "keep_bias_bn": keep_bias_bn})


def interpolation_direction(weights: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> Direction:
    """``other - weights``: the straight path from these weights (t = 0) to ``other`` (t = 1)."""
    if list(weights) != list(other) or any(weights[n].shape != other[n].shape for n in weights):
        raise LandscapeError("The two runs have different parameters (names or shapes): a path between them needs "
                             "the same architecture.")
    return Direction({n: other[n].to(weights[n].device, torch.float64) - weights[n].double() for n in weights},
                     "interpolation")


def hessian_directions(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, k: int = 2,
                       which: str = "LA", tol: float = 1e-6, seed: int = 0,
                       max_iters: int | None = None, device=None) -> list[Direction]:
    """Lanczos eigenvectors of the Hessian of the mean loss (float64, eval mode), largest
    eigenvalue first for ``which="LA"``; ``which="both"`` gives the top and the bottom one
    (k = 1 at each end). Each is scaled to the norm of the weights; the sign is fixed so
    that the largest-magnitude entry is positive (an eigenvector's sign is arbitrary)."""
    from landscape.curvature.operators import HessianOperator
    from landscape.spectra.lanczos import lanczos

    if which not in ("LA", "both"):
        raise LandscapeError(f"which must be 'LA' (top k) or 'both' (top and bottom), got '{which}'.")
    op = HessianOperator(model, None, batches, mode="eval", dtype=torch.float64, device=device)
    result = lanczos(op, k=1 if which == "both" else k, which=which, tol=tol, seed=seed, max_iters=max_iters,
                     stop="residual", return_vectors=True)
    weights = weights_of(model)
    w_norm = float(torch.linalg.vector_norm(torch.cat([w.reshape(-1).double() for w in weights.values()])))
    order = np.argsort(result.ritz_values)[::-1]
    if which == "both":
        order = order[[0, -1]] if len(order) > 1 else order
    found = []
    for rank, index in enumerate(order):
        vector = torch.as_tensor(result.ritz_vectors[:, index], dtype=torch.float64)
        vector = vector * torch.sign(vector[torch.argmax(vector.abs())]) * (w_norm / float(vector.norm()))
        tensors = {n: t.to(weights[n].device) for n, t in op.unflatten(vector.to(op.device)).items()}
        value = float(result.ritz_values[index])
        found.append(Direction(tensors, f"eigenvector {rank + 1}" if which == "LA" else ("top", "bottom")[rank],
                               eigenvalue=value, extra={"residual": float(result.residuals[index]),
                                                        "converged": bool(result.converged[index])}))
    return found


def stack(directions: Sequence[Direction]) -> np.ndarray:
    """The directions as one float64 array ``(len(directions), n_params)`` (for the npz)."""
    return np.stack([d.flat().detach().cpu().double().numpy() for d in directions])
