"""Per-parameter and per-layer views of a model, for layer-wise curvature and reports.

Curvature code flattens the trainable parameters into one vector in
``model.named_parameters()`` order (the order ``torch.func.functional_call`` dicts keep);
:func:`layer_slices` says which slice of that vector belongs to which layer, so a
Hessian block or a diagonal Fisher can be split by layer (paper Sec. 5.1 looks at the
spectrum of the whole network; the per-layer split is how we go past it).
"""

from __future__ import annotations

from torch import nn


def describe(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """``(name, shape, numel)`` of every trainable parameter, in ``named_parameters`` order."""
    return [
        (name, tuple(p.shape), p.numel())
        for name, p in model.named_parameters()
        if p.requires_grad
    ]


def layer_slices(model: nn.Module) -> list[tuple[str, slice]]:
    """Offsets of each layer's parameters in the flattened trainable-parameter vector.

    A layer is the module that owns the parameter (``block4.conv`` for
    ``block4.conv.weight`` and ``block4.conv.bias``); consecutive parameters of the same
    owner share one slice. For ``nn.LSTM`` every weight/bias of all its stacked layers
    belongs to the one module ``lstm``.
    """
    slices: list[tuple[str, slice]] = []
    offset = 0
    for name, _shape, numel in describe(model):
        owner = name.rpartition(".")[0]
        if slices and slices[-1][0] == owner:
            start = slices[-1][1].start
            slices[-1] = (owner, slice(start, offset + numel))
        else:
            slices.append((owner, slice(offset, offset + numel)))
        offset += numel
    return slices
