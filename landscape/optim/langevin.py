"""The SGLD chain of Entropy-SGD (Chaudhari et al. 2017, Alg. 1 lines 5-7), as small pure functions.

The chain samples the locally focused Gibbs distribution of Eq. (8),

    P(x'; x, gamma)  ∝  exp[ -f(x') - (gamma/2) ||x - x'||^2 ],

with stochastic gradient Langevin dynamics started at the anchor ``x``, and keeps an
exponential average ``mu`` of its samples; ``x - mu`` estimates the local-entropy gradient
of Eq. (7) up to the factor ``gamma``. The functions work in place on lists of tensors (one
per parameter) with ``torch._foreach_*`` kernels, so one Langevin step costs a handful of
fused vector operations whatever the number of parameter tensors. Entropy-SGD and the
local-entropy estimators in :mod:`landscape.flatness` share them.

Randomness is explicit: noise comes from a generator the caller owns (a ``torch.Generator``
on the tensors' device, or MKL's Philox stream on the CPU, :mod:`landscape.optim.rng`), so a
chain is reproducible and its state can be checkpointed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from landscape.optim.rng import Generator, standard_normal_

__all__ = ["GaussianNoise", "ema_update_", "langevin_step_"]


class GaussianNoise:
    """Standard normal draws for a list of tensors, generated in ONE call per dtype.

    Calling ``torch.randn`` once per parameter tensor costs a Python round trip and a
    kernel launch each; a network with many small tensors pays that on every Langevin
    step. This keeps one flat buffer per dtype and hands out views shaped like the
    targets, so a draw is a single fill per dtype. The draws are a deterministic
    function of the generator state and of the order of ``like``.
    """

    def __init__(self, like: Sequence[Tensor]) -> None:
        if len(like) == 0:
            self._flats: list[Tensor] = []
            self.views: list[Tensor] = []
            return
        devices = {t.device for t in like}
        if len(devices) != 1:
            raise ValueError("Langevin noise needs all tensors on one device; move the parameters to a single device.")
        device = devices.pop()
        sizes: dict[torch.dtype, int] = {}
        for t in like:
            sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
        self._flats = [torch.empty(n, dtype=dtype, device=device) for dtype, n in sizes.items()]
        by_dtype = dict(zip(sizes, self._flats))
        offsets = dict.fromkeys(sizes, 0)
        views = []
        for t in like:
            start = offsets[t.dtype]
            views.append(by_dtype[t.dtype][start : start + t.numel()].view(t.shape))
            offsets[t.dtype] = start + t.numel()
        self.views = views

    def sample_(self, generator: Generator) -> list[Tensor]:
        """Refill the buffers with N(0, 1) draws and return the per-tensor views."""
        for flat in self._flats:
            standard_normal_(flat, generator)
        return self.views


def langevin_step_(
    xs: list[Tensor],
    grads: list[Tensor],
    anchors: list[Tensor],
    *,
    gamma: float,
    lr: float,
    noise: float,
    generator: Generator | None = None,
    noise_buffer: GaussianNoise | None = None,
) -> None:
    """One SGLD step of Alg. 1 (lines 5-6), in place on the chain ``xs``.

    With ``dx' = grad f(x') - gamma (x - x')`` (line 5) the update is (line 6)

        x' <- x' - lr * (grad + gamma * (x' - x)) + sqrt(lr) * noise * N(0, I).

    ``noise`` is the thermal noise epsilon of Alg. 1 (paper: 1e-4 to 1e-3); no random
    numbers are drawn when it is 0, so a noiseless chain leaves the generator untouched.
    ``noise_buffer`` (a :class:`GaussianNoise` built for ``xs``) makes the draw one kernel
    per dtype; without it each tensor gets its own draw.

    The coupling term is applied as ``x' <- lerp(x', x, lr*gamma)``, which is the same
    affine map as ``x' - lr*gamma*(x' - x)`` without a temporary.
    """
    if not (len(xs) == len(grads) == len(anchors)):
        raise ValueError("langevin_step_ needs as many gradients and anchors as chain tensors.")
    if lr * gamma != 0.0:
        torch._foreach_lerp_(xs, anchors, lr * gamma)
    torch._foreach_add_(xs, grads, alpha=-lr)
    if noise > 0.0:
        if generator is None:
            raise ValueError(
                "A Langevin step with noise > 0 needs an explicit generator (torch.Generator or PhiloxGenerator)."
            )
        if noise_buffer is not None:
            draws = noise_buffer.sample_(generator)
        else:
            draws = [standard_normal_(torch.empty_like(x), generator) for x in xs]
        torch._foreach_add_(xs, draws, alpha=math.sqrt(lr) * noise)


def ema_update_(mu: list[Tensor], xs: list[Tensor], alpha: float) -> None:
    """Exponential average of the chain, Alg. 1 line 7: ``mu <- (1 - alpha) mu + alpha x'``.

    ``alpha`` weights the NEWEST sample (the paper uses alpha = 0.75 "to put more weight on
    the later samples", Sec. 4.2); ``alpha = 1`` keeps only the last sample exactly.
    """
    torch._foreach_lerp_(mu, xs, alpha)
