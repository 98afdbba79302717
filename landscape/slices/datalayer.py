"""The layers that see the data, evaluated once per sample chunk instead of once per point.

A Linear or convolution layer applied to the data x is linear in its weights, so at the
grid point ``W + sum_k c_k D_k``::

    layer(x, W + sum_k c_k D_k) = layer(x, W) + sum_k c_k layer(x, D_k)

(biases likewise). :class:`DataLayers` computes the k + 1 responses on the right once per
chunk of samples (in a forward pass at the centre) and, while the vmapped forward pass
over a chunk of points runs, answers each such layer with the combination: one sum of
k + 1 terms per point instead of a convolution or a matmul with the data. Exact up to
rounding; a layer whose input is not the data (or a view of it) is left alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_LINEAR_IN_WEIGHT = (F.linear, F.conv1d, F.conv2d, F.conv3d)


def _split(args, kwargs):
    rest, kwargs = list(args), dict(kwargs or {})
    x = rest.pop(0) if rest else kwargs.pop("input")
    weight = rest.pop(0) if rest else kwargs.pop("weight")
    bias = rest.pop(0) if rest else kwargs.pop("bias", None)
    return x, weight, bias, rest, kwargs


class DataLayers(TorchFunctionMode):
    """Record (``record``) then replay (``bind``) the data layers of one sample chunk."""

    def __init__(self, data: torch.Tensor, directions: list[dict[str, torch.Tensor]]):
        super().__init__()
        self.data, self.directions = data, directions
        self.names: dict[int, str] = {}
        self.responses: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # weight name -> (at W, per direction)
        self.coords: torch.Tensor | None = None
        self.recording = False

    def record(self, params: dict[str, torch.Tensor]) -> None:
        """Next calls (a forward pass at the centre ``params``) compute the responses."""
        self.names, self.recording = {id(t): n for n, t in params.items()}, True

    def bind(self, params: dict[str, torch.Tensor], coords: torch.Tensor) -> None:
        """Next calls (inside vmap: batched ``params`` and ``coords``) replay them."""
        self.names, self.coords, self.recording = {id(t): n for n, t in params.items()}, coords, False

    def _is_data(self, x) -> bool:
        return isinstance(x, torch.Tensor) and (x is self.data or x._base is self.data)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in _LINEAR_IN_WEIGHT:
            return func(*args, **(kwargs or {}))
        x, weight, bias, rest, kw = _split(args, kwargs)
        w_name = self.names.get(id(weight))
        b_name = None if bias is None else self.names.get(id(bias))
        if not self._is_data(x) or w_name is None or (bias is not None and b_name is None):
            return func(*args, **(kwargs or {}))
        if self.recording:
            centre = func(x, weight, bias, *rest, **kw)
            per_direction = torch.stack([func(x, d[w_name], None if b_name is None else d[b_name], *rest, **kw)
                                         for d in self.directions])
            self.responses[w_name] = (centre, per_direction)
            return centre
        if w_name not in self.responses:
            return func(*args, **(kwargs or {}))
        centre, per_direction = self.responses[w_name]
        return centre + torch.tensordot(self.coords, per_direction, dims=1)
