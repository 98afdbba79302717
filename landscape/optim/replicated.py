"""Replicated SGD, the "robust ensemble" of Baldassi et al. 2016 as used by Pittorino et al. 2021.

``y`` replicas ``w_a`` of the network are trained together, each on its own minibatches,
with the coupling energy

    E_coupling = (g_t / 2) * sum_a ||w_a - c||^2,     c = (1/y) sum_a w_a,

whose gradient with respect to ``w_a`` is ``g_t (w_a - c)`` (the terms through ``c`` cancel
because ``sum_a (w_a - c) = 0``, so treating ``c`` as a constant is exact). The coupling
grows as ``g_t = coupling * (1 + coupling_growth)^t`` (t = outer steps already taken), the
replicated analogue of Entropy-SGD's scoping: as g grows the replicas collapse onto a
point in a wide, flat region. Local entropy is what the replicas sample in the y -> inf
limit (Chaudhari et al. 2017, Sec. 3 and Baldassi et al. 2016a).

The optimizer owns a model: between steps the model holds the CENTRE ``c`` (parameters
averaged over replicas, floating-point buffers such as BatchNorm running statistics averaged,
integer buffers such as ``num_batches_tracked`` taken from replica 0), so evaluation and
checkpoints of the model see the centre. The replicas live in the optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from landscape.optim.entropy_sgd import _require, check_generator, default_generator
from landscape.optim.rng import Generator, standard_normal_

__all__ = ["ReplicatedSGD"]

_GENERATOR_KEY = "generator_state"
_BUFFERS_KEY = "replica_buffers"


class ReplicatedSGD(Optimizer):
    """Replicated SGD with (Nesterov) momentum: ``replicas`` coupled copies of ``model``.

    One step calls ``closure()`` once per replica (``replicas`` calls), each time with that
    replica's parameters and buffers loaded into the model, and each call should draw a
    fresh minibatch (``closure_fresh_batch = True``). Replica ``a`` then takes a torch-SGD
    step (``buf = momentum*buf + d``; Nesterov ``d + momentum*buf``; ``w <- w - lr*d``) on

        d = grad f(w_a) + weight_decay * w_a + g_t * (w_a - c),

    with ``c`` the replica mean at the start of the step (all replicas see the same centre).
    With ``coupling = 0`` this is exactly ``replicas`` independent SGD runs. ``step`` returns
    the loss of the first closure call (replica 0's minibatch loss).

    Initial replicas are copies of the model, each multiplied elementwise by
    ``1 + seed_perturbation * N(0, 1)`` (multiplicative, so the spread is scale-aware;
    ``seed_perturbation = 0`` gives identical starts that diverge only through their
    different minibatches). Replicas, their momentum buffers, their model buffers and the
    generator are all in ``state_dict()`` as tensors.
    """

    closure_fresh_batch: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        *,
        replicas: int = 3,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        coupling: float = 1e-3,
        coupling_growth: float = 1e-3,
        seed_perturbation: float = 0.0,
        generator: Generator | None = None,
    ) -> None:
        _require(isinstance(replicas, int) and replicas >= 1, f"replicas must be an integer >= 1, got {replicas!r}.")
        _require(lr >= 0.0, f"lr must be >= 0, got {lr}.")
        _require(momentum >= 0.0, f"momentum must be >= 0, got {momentum}.")
        _require(
            not nesterov or momentum > 0.0,
            "Nesterov momentum needs momentum > 0; pass nesterov=False or a positive momentum.",
        )
        _require(weight_decay >= 0.0, f"weight_decay must be >= 0, got {weight_decay}.")
        _require(coupling >= 0.0, f"coupling must be >= 0, got {coupling}.")
        _require(coupling_growth >= 0.0, f"coupling_growth must be >= 0, got {coupling_growth}.")
        _require(seed_perturbation >= 0.0, f"seed_perturbation must be >= 0, got {seed_perturbation}.")
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        _require(bool(named), "ReplicatedSGD needs a model with trainable parameters.")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            coupling=coupling,
            coupling_growth=coupling_growth,
            seed_perturbation=seed_perturbation,
            outer_step=0,
        )
        super().__init__([p for _, p in named], defaults)
        self.replicas = replicas
        self.model = model
        self._param_names = [name for name, _ in named]
        self._buffers = dict(model.named_buffers())
        self._replica_buffers: dict[str, Tensor] = {}
        device = named[0][1].device
        if generator is None:
            generator = default_generator(device)
        check_generator(generator, device)
        self.generator = generator
        # the replica mean after the last step (a function of the replicas only): the next
        # step's centre; None when the replicas were created or loaded since
        self._centre: list[Tensor] | None = None

    @property
    def closure_calls_per_step(self) -> int:
        """Gradient evaluations per step: one per replica."""
        return self.replicas

    @property
    def _params(self) -> list[Tensor]:
        return list(self.param_groups[0]["params"])

    def coupling_at(self, outer_step: int) -> float:
        """``g_t = coupling * (1 + coupling_growth)^t`` for the t-th step (t from 0)."""
        group = self.param_groups[0]
        return group["coupling"] * (1.0 + group["coupling_growth"]) ** outer_step

    def diagnostics(self) -> dict[str, float | int]:
        """Coupling of the last step (or of the first, before any), steps taken, mean ||w_a - c||^2 after it."""
        t = self.param_groups[0]["outer_step"]
        out: dict[str, float | int] = {"coupling": self.coupling_at(max(t - 1, 0)), "outer_step": t}
        if self._centre is not None and t > 0:
            out["replica_spread"] = float(self._spread())
        return out

    @torch.no_grad()
    def _spread(self) -> Tensor:
        """Mean over replicas of ||w_a - c||^2 (computed when asked: it is a diagnostic, and
        computing it every step would cost as much as the coupling itself)."""
        assert self._centre is not None
        stacks = [self.state[p]["replicas"] for p in self._params]
        parts = [((stack - c.unsqueeze(0)) ** 2).sum().float() for stack, c in zip(stacks, self._centre)]
        return torch.stack(parts).sum() / self.replicas

    def replica_state(self, index: int) -> dict[str, Tensor]:
        """Replica ``index``'s parameters and buffers by model name (views into the optimizer state)."""
        _require(0 <= index < self.replicas, f"replica index must be in [0, {self.replicas}), got {index}.")
        self._ensure_replicas()
        out = {name: self.state[p]["replicas"][index] for name, p in zip(self._param_names, self._params)}
        out.update({name: stack[index] for name, stack in self._replica_buffers.items()})
        return out

    # -- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``Optimizer.state_dict()`` plus the replicas' model buffers and the generator state."""
        state = super().state_dict()
        state[_BUFFERS_KEY] = dict(self._replica_buffers)
        state[_GENERATOR_KEY] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        buffers = state_dict.pop(_BUFFERS_KEY, {})
        generator_state = state_dict.pop(_GENERATOR_KEY, None)
        super().load_state_dict(state_dict)
        unknown = set(buffers) - set(self._buffers)
        _require(
            not unknown,
            f"The saved replica buffers {sorted(unknown)} are not in this model; "
            "load a state saved for the same architecture.",
        )
        self._replica_buffers = {
            name: stack.to(device=self._buffers[name].device, dtype=self._buffers[name].dtype).clone()
            for name, stack in buffers.items()
        }
        if generator_state is not None:
            self.generator.set_state(generator_state.to(device="cpu", dtype=torch.uint8))
        self._centre = None

    # -- the step --------------------------------------------------------------------------

    @torch.no_grad()
    def _ensure_replicas(self) -> None:
        """Create the replicas from the model on first use (multiplicatively perturbed if asked)."""
        group = self.param_groups[0]
        sigma = group["seed_perturbation"]
        for p in self._params:
            state = self.state[p]
            if "replicas" not in state:
                self._centre = None
                stack = p.detach().unsqueeze(0).repeat(self.replicas, *([1] * p.dim()))
                if sigma > 0.0:
                    noise = standard_normal_(torch.empty_like(stack), self.generator)
                    stack.mul_(noise.mul_(sigma).add_(1.0))
                state["replicas"] = stack
                state["momentum_buffers"] = torch.zeros_like(stack)
        for name, buffer in self._buffers.items():
            if name not in self._replica_buffers:
                self._replica_buffers[name] = buffer.detach().unsqueeze(0).repeat(self.replicas, *([1] * buffer.dim()))

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One step of every replica (``replicas`` closure calls); the model ends at the centre."""
        if closure is None:
            raise ValueError("ReplicatedSGD.step needs a closure that recomputes the loss and gradients.")
        self._ensure_replicas()
        group = self.param_groups[0]
        params = self._params
        stacks = [self.state[p]["replicas"] for p in params]
        velocities = [self.state[p]["momentum_buffers"] for p in params]
        g_t = self.coupling_at(group["outer_step"])
        centre = self._centre
        if centre is None:
            with torch.no_grad():
                centre = [stack.mean(dim=0) for stack in stacks]
        try:
            first_loss = self._step_replicas(closure, params, stacks, velocities, centre, g_t)
        finally:  # the model holds the centre afterwards, even if a closure raised
            with torch.no_grad():
                self._load_centre(params, stacks)
        group["outer_step"] += 1
        return first_loss

    def _step_replicas(
        self,
        closure: Callable[[], Tensor],
        params: list[Tensor],
        stacks: list[Tensor],
        velocities: list[Tensor],
        centre: list[Tensor],
        g_t: float,
    ) -> Tensor:
        """Load, evaluate and update each replica in turn; returns replica 0's loss."""
        group = self.param_groups[0]
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        first_loss: Tensor | None = None
        for a in range(self.replicas):
            with torch.no_grad():
                replica = [stack[a] for stack in stacks]
                torch._foreach_copy_(params, replica)
                for name, buffer in self._buffers.items():
                    buffer.copy_(self._replica_buffers[name][a])
            with torch.enable_grad():
                loss = closure()
            if a == 0:
                first_loss = loss
            with torch.no_grad():
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                # Same operation order as torch.optim.SGD, so coupling = 0 reproduces it bit for bit.
                d = torch._foreach_add(grads, replica, alpha=weight_decay) if weight_decay != 0.0 else grads
                if g_t != 0.0:  # d + g_t (w_a - c), in two passes and one new list
                    d = torch._foreach_add(d, replica, alpha=g_t)
                    torch._foreach_add_(d, centre, alpha=-g_t)
                if momentum != 0.0:
                    velocity = [v[a] for v in velocities]
                    torch._foreach_mul_(velocity, momentum)
                    torch._foreach_add_(velocity, d)
                    d = torch._foreach_add(d, velocity, alpha=momentum) if group["nesterov"] else velocity
                torch._foreach_add_(replica, d, alpha=-lr)
                for name, buffer in self._buffers.items():
                    self._replica_buffers[name][a].copy_(buffer)
        assert first_loss is not None
        return first_loss

    def _load_centre(self, params: list[Tensor], stacks: list[Tensor]) -> None:
        """Model <- centre: mean parameters, mean floating buffers, integer buffers of replica 0.

        The mean is kept as the next step's centre (the replicas change only in a step)."""
        self._centre = [stack.mean(dim=0) for stack in stacks]
        torch._foreach_copy_(params, self._centre)
        for name, buffer in self._buffers.items():
            stack = self._replica_buffers[name]
            buffer.copy_(stack.mean(dim=0) if stack.is_floating_point() else stack[0])
