"""Sharpness-Aware Minimisation (Foret et al. 2021) and its adaptive variant ASAM (Kwon et al. 2021).

SAM minimises ``max_{||e|| <= rho} f(w + e)`` with a first-order inner maximiser: the
ascent step ``e = rho * g / ||g||`` (ASAM: ``e = rho * T^2 g / ||T g||`` with the
elementwise scale ``T = |w|``, i.e. ASAM's ``T_w`` with eta = 0, which makes the
neighbourhood, and so the measured sharpness, invariant to per-weight rescaling), then a
step of a base optimizer with the gradient at ``w + e``. Norms are taken over ALL
parameters jointly. It is the common "flat minima" baseline next to Entropy-SGD.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = ["SAM"]

_BASES: dict[str, type[Optimizer]] = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


def _resolve_base(base: str | type[Optimizer]) -> type[Optimizer]:
    if isinstance(base, str):
        if base.lower() not in _BASES:
            raise ValueError(
                f"Unknown SAM base optimizer {base!r}; use one of {sorted(_BASES)} or a torch.optim.Optimizer class."
            )
        return _BASES[base.lower()]
    if isinstance(base, type) and issubclass(base, Optimizer):
        return base
    raise ValueError(f"SAM's base must be 'sgd', 'adam' or a torch.optim.Optimizer subclass, got {base!r}.")


class SAM(Optimizer):
    """SAM / ASAM around a base optimizer: ``SAM(params, "sgd", rho=0.05, lr=0.1, momentum=0.9)``.

    ``step(closure)`` calls the closure twice on the SAME minibatch
    (``closure_fresh_batch = False``): at ``w`` (this loss is returned), then at ``w + e``;
    it restores ``w`` exactly (from a copy, not by subtracting ``e``) and lets the base
    optimizer step with the second gradient. ``base`` is ``"sgd"``, ``"adam"`` or a
    ``torch.optim.Optimizer`` class; ``base_kwargs`` go to it (``lr`` etc.).

    If ``model`` is given, all its buffers (BatchNorm running mean/var and
    ``num_batches_tracked``) are snapshotted before the second forward pass and restored
    after it, so running statistics are updated by the first pass only, at ``w``.

    ``param_groups`` and ``state`` are the base optimizer's (``rho``/``adaptive`` live in the
    same group dicts), so lr schedulers act on the base learning rate and ``state_dict()``
    is the base optimizer's state dict.
    """

    closure_fresh_batch: ClassVar[bool] = False
    closure_calls_per_step: ClassVar[int] = 2

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base: str | type[Optimizer] = "sgd",
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        if rho < 0.0:
            raise ValueError(f"rho (the SAM neighbourhood radius) must be >= 0, got {rho}.")
        base_cls = _resolve_base(base)
        super().__init__(params, dict(rho=rho, adaptive=adaptive))
        self.base_optimizer = base_cls(self.param_groups, **base_kwargs)
        self.model = model
        self._link_base()
        self.defaults.update(self.base_optimizer.defaults)
        self._last_grad_norm: Tensor | None = None

    def _link_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def diagnostics(self) -> dict[str, float]:
        """``rho`` of param group 0 and the joint gradient norm at ``w`` in the last step (ASAM: ||T g||)."""
        out = {"rho": float(self.param_groups[0]["rho"])}
        if self._last_grad_norm is not None:
            out["grad_norm"] = float(self._last_grad_norm)
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self._link_base()  # torch replaces the group list and the state on load

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """Ascent to ``w + e``, gradient there on the same batch, back to ``w``, base step.

        Returns the loss of the first closure call (at ``w``).
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and gradients on the same minibatch.")
        with torch.enable_grad():
            loss = closure()
        with torch.no_grad():
            groups = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
            scaled = []  # T g per group (T = |w| for ASAM, 1 for SAM)
            for group, params in zip(self.param_groups, groups):
                grads = [p.grad for p in params]
                adaptive = group["adaptive"] and params
                scaled.append(torch._foreach_mul(grads, torch._foreach_abs(params)) if adaptive else grads)
            norms = [n for grads in scaled for n in (torch._foreach_norm(grads) if grads else [])]
            if not norms:
                return loss
            dtype = norms[0].dtype
            for n in norms[1:]:
                dtype = torch.promote_types(dtype, n.dtype)
            grad_norm = torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]))
            self._last_grad_norm = grad_norm
            # max(., tiny) instead of "+ eps": exact for any realistic norm, and e = 0 for g = 0.
            inverse_norm = 1.0 / grad_norm.clamp_min(1e-12)
            saved = [[p.detach().clone() for p in params] for params in groups]
            for group, params, tg in zip(self.param_groups, groups, scaled):
                if not params:
                    continue
                scale = inverse_norm * group["rho"]
                if group["adaptive"]:
                    perturbation = torch._foreach_mul(tg, torch._foreach_abs(params))  # T^2 g
                    torch._foreach_mul_(perturbation, scale)
                else:
                    perturbation = torch._foreach_mul(tg, scale)
                torch._foreach_add_(params, perturbation)
            buffers = [(b, b.detach().clone()) for b in self.model.buffers()] if self.model is not None else []
        try:
            with torch.enable_grad():
                closure()
        finally:  # back to w (and the first pass's statistics) even if the closure raised
            with torch.no_grad():
                for buffer, snapshot in buffers:
                    buffer.copy_(snapshot)
                for params, originals in zip(groups, saved):
                    if params:
                        torch._foreach_copy_(params, originals)
        self.base_optimizer.step()
        return loss
