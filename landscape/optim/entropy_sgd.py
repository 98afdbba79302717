"""Entropy-SGD and Entropy-Adam (Chaudhari et al. 2017, Alg. 1 with the practice of Sec. 4.2-4.3).

Both minimise the negative local entropy -F(x, gamma) of Eq. (6). Each outer step runs an
inner SGLD chain (:mod:`landscape.optim.langevin`) from the current weights ``x`` for ``L``
minibatches, keeps an exponential average ``mu`` of its samples, restores ``x`` and then
feeds the direction ``x - mu`` (Eq. 7 divided by gamma, Sec. 4.3) to an outer optimizer:
SGD with (Nesterov) momentum for :class:`EntropySGD`, Adam for :class:`EntropyAdam`
(Sec. 5.4.2). The classes are thin ``torch.optim.Optimizer`` wrappers around foreach
updates, so an outer step costs about ``L`` plain SGD steps.

Closure contract (shared by every optimizer in :mod:`landscape.optim`): ``step(closure)``
calls ``closure()`` exactly ``L`` times; each call must zero the gradients, run forward and
backward on a FRESH minibatch at the model's current parameter values (the chain's x') and
return the loss. ``step`` returns the loss of the first call, which is the minibatch loss at
``x`` itself because the chain starts there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from landscape.optim.langevin import GaussianNoise, ema_update_, langevin_step_
from landscape.optim.rng import KIND_PHILOX, KIND_TORCH, Generator, generator_kind, make_generator

__all__ = ["EntropyAdam", "EntropySGD"]

_GENERATOR_KEY = "generator_state"
_GENERATOR_KIND_KEY = "generator_kind"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def default_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from the global torch RNG (reproducible under ``torch.manual_seed``).

    Seeding from a draw, not from ``torch.initial_seed()``, keeps the noise stream distinct
    from the stream that initialised the weights.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    return generator


def default_noise_generator(device: torch.device, noise_rng: str = "auto") -> Generator:
    """The Entropy optimizers' default SGLD noise stream: like :func:`default_generator`, but
    MKL's Philox on the CPU where MKL is installed (``noise_rng="auto"``, :mod:`landscape.optim.rng`)."""
    return make_generator(device, int(torch.randint(0, 2**62, (1,)).item()), noise_rng)


def check_generator(generator: Generator, device: torch.device) -> None:
    """Refuse a generator on another device than the parameters (its draws could not be used there)."""
    if torch.device(generator.device).type != device.type:
        raise ValueError(
            f"The generator lives on {generator.device} but the parameters on {device}; "
            f"create it with torch.Generator(device='{device}')."
        )


@dataclass
class _Chain:
    """Scratch buffers of one param group's SGLD chain; rebuilt when its parameter set changes."""

    key: tuple[int, ...]
    params: list[Tensor]
    anchors: list[Tensor]
    means: list[Tensor]
    noise: GaussianNoise
    velocity: list[Tensor]

    @classmethod
    def for_params(cls, params: list[Tensor], with_velocity: bool) -> _Chain:
        return cls(
            key=tuple(id(p) for p in params),
            params=params,
            anchors=[torch.empty_like(p) for p in params],
            means=[torch.empty_like(p) for p in params],
            noise=GaussianNoise(params),
            velocity=[torch.zeros_like(p) for p in params] if with_velocity else [],
        )


class _LocalEntropyOptimizer(Optimizer):
    """Inner SGLD loop shared by Entropy-SGD and Entropy-Adam; subclasses supply the outer update."""

    closure_fresh_batch: ClassVar[bool] = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        L: int,
        generator: Generator | None,
    ) -> None:
        _require(
            isinstance(L, int) and not isinstance(L, bool) and L >= 1,
            f"L (Langevin steps per outer step) must be an integer >= 1, got {L!r}.",
        )
        _require(defaults["lr"] >= 0.0, f"lr must be >= 0, got {defaults['lr']}.")
        _require(defaults["sgld_lr"] > 0.0, f"sgld_lr must be > 0, got {defaults['sgld_lr']}.")
        _require(defaults["noise"] >= 0.0, f"noise (the SGLD thermal noise) must be >= 0, got {defaults['noise']}.")
        _require(defaults["gamma"] >= 0.0, f"gamma (the scope) must be >= 0, got {defaults['gamma']}.")
        _require(defaults["scoping"] >= 0.0, f"scoping (scope growth) must be >= 0, got {defaults['scoping']}.")
        _require(
            0.0 < defaults["alpha"] <= 1.0,
            f"alpha (weight of the newest SGLD sample) must be in (0, 1], got {defaults['alpha']}.",
        )
        _require(defaults["weight_decay"] >= 0.0, f"weight_decay must be >= 0, got {defaults['weight_decay']}.")
        _require(0.0 <= defaults.get("sgld_momentum", 0.0) < 1.0, "sgld_momentum must be in [0, 1).")
        defaults = {**defaults, "outer_step": 0}
        super().__init__(params, defaults)
        self.L = L
        device = self.param_groups[0]["params"][0].device
        self._owns_generator = generator is None
        if generator is None:
            generator = default_noise_generator(device)
        check_generator(generator, device)
        self.generator = generator
        self._chains: dict[int, _Chain] = {}
        self._last_direction_norm: Tensor | None = None

    @property
    def closure_calls_per_step(self) -> int:
        """Gradient evaluations per outer step: exactly ``L``."""
        return self.L

    @staticmethod
    def scope(group: dict[str, Any], outer_step: int) -> float:
        """Scoping of Sec. 4.3: ``gamma_t = gamma0 * (1 + gamma1)^t`` for the t-th outer step (t from 0)."""
        return group["gamma"] * (1.0 + group["scoping"]) ** outer_step

    def diagnostics(self) -> dict[str, float | int]:
        """JSON-able values of the last step: its scope ``gamma`` (param group 0), steps taken, and ||x - mu||.

        Before the first step ``gamma`` is the scope the first step will use.
        """
        group = self.param_groups[0]
        t = group["outer_step"]
        out: dict[str, float | int] = {"gamma": self.scope(group, max(t - 1, 0)), "outer_step": t}
        if self._last_direction_norm is not None:
            out["x_minus_mu_norm"] = float(self._last_direction_norm)
        return out

    # -- checkpointing: the generator travels with the optimizer state ------------------------

    def state_dict(self) -> dict[str, Any]:
        """``Optimizer.state_dict()`` plus the noise generator's state (a uint8 tensor) and kind."""
        state = super().state_dict()
        state[_GENERATOR_KEY] = self.generator.get_state()
        state[_GENERATOR_KIND_KEY] = generator_kind(self.generator)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state; the noise stream continues where the saved one stopped.

        A state saved by the other kind of generator (e.g. torch's mt19937 before MKL was
        installed) is adopted when this optimizer made its own generator; with a generator
        the caller passed in it is refused, since the caller's stream could not continue it.
        """
        state_dict = dict(state_dict)
        generator_state = state_dict.pop(_GENERATOR_KEY, None)
        kind = state_dict.pop(_GENERATOR_KIND_KEY, KIND_TORCH)
        if generator_state is not None and kind != generator_kind(self.generator):
            if not self._owns_generator:
                raise ValueError(
                    f"This optimizer state holds a {kind} noise stream but the optimizer was given a "
                    f"{generator_kind(self.generator)} generator; pass a generator of the saved kind (or none)."
                )
            device = self.param_groups[0]["params"][0].device
            self.generator = make_generator(device, 0, "mkl" if kind == KIND_PHILOX else "torch")
        super().load_state_dict(state_dict)
        if generator_state is not None:
            self.generator.set_state(generator_state.to(device="cpu", dtype=torch.uint8))
        self._chains.clear()

    # -- the step -------------------------------------------------------------------------

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One outer step of Alg. 1: ``L`` SGLD steps (``L`` closure calls), then the outer update.

        Returns the loss of the first closure call (the minibatch loss at ``x``).
        """
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure that recomputes the loss and gradients.")
        first_loss: Tensor | None = None
        chains: list[tuple[dict[str, Any], _Chain, float]] = []
        try:
            for inner in range(self.L):
                with torch.enable_grad():
                    loss = closure()
                with torch.no_grad():
                    if inner == 0:
                        first_loss = loss
                        chains = self._begin_chains()
                    for group, chain, gamma_t in chains:
                        self._langevin(group, chain, gamma_t)
        except BaseException:
            # A failing closure (e.g. a non-finite loss check) must not leave the model at x'.
            with torch.no_grad():
                for _, chain, _ in chains:
                    if chain.params:
                        torch._foreach_copy_(chain.params, chain.anchors)
            raise
        with torch.no_grad():
            norms: list[Tensor] = []
            for group, chain, gamma_t in chains:
                if chain.params:
                    torch._foreach_copy_(chain.params, chain.anchors)
                    directions = torch._foreach_sub(chain.anchors, chain.means)
                    norms.extend(torch._foreach_norm(directions))
                    if group["literal_outer_step"]:
                        torch._foreach_mul_(directions, gamma_t)
                    self._outer_update(group, chain.params, directions)
                group["outer_step"] += 1
            if norms:
                self._last_direction_norm = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
        assert first_loss is not None
        return first_loss

    def _begin_chains(self) -> list[tuple[dict[str, Any], _Chain, float]]:
        """x', mu <- x (Alg. 1 line 2) for the parameters that received a gradient."""
        chains = []
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients.")
            chain = self._chains.get(index)
            with_velocity = group.get("sgld_momentum", 0.0) > 0.0
            if chain is None or chain.key != tuple(id(p) for p in params) or bool(chain.velocity) != with_velocity:
                chain = self._chains[index] = _Chain.for_params(params, with_velocity)
            if params:
                torch._foreach_copy_(chain.anchors, params)
                torch._foreach_copy_(chain.means, params)
                if chain.velocity:
                    torch._foreach_zero_(chain.velocity)
            chains.append((group, chain, self.scope(group, group["outer_step"])))
        return chains

    def _langevin(self, group: dict[str, Any], chain: _Chain, gamma_t: float) -> None:
        """Alg. 1 lines 5-7 on the live parameters (they hold x' during the loop)."""
        if not chain.params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in chain.params]
        if chain.velocity:
            # Nesterov momentum on the data gradient only, as the reference code does.
            momentum = group["sgld_momentum"]
            torch._foreach_mul_(chain.velocity, momentum)
            torch._foreach_add_(chain.velocity, grads)
            grads = torch._foreach_add(grads, chain.velocity, alpha=momentum)
        langevin_step_(
            chain.params,
            grads,
            chain.anchors,
            gamma=gamma_t,
            lr=group["sgld_lr"],
            noise=group["noise"],
            generator=self.generator,
            noise_buffer=chain.noise,
        )
        ema_update_(chain.means, chain.params, group["alpha"])

    def _outer_update(self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor]) -> None:
        raise NotImplementedError


class EntropySGD(_LocalEntropyOptimizer):
    """Entropy-SGD (Chaudhari et al. 2017, Alg. 1) with an SGD/Nesterov outer loop (Sec. 4.2).

    One step: ``x', mu <- x``; ``L`` times: ``closure()`` on a fresh minibatch at x', the
    Langevin step ``x' <- x' - sgld_lr*(grad f(x') + gamma_t (x' - x)) + sqrt(sgld_lr)*noise*N(0,I)``
    and ``mu <- (1 - alpha) mu + alpha x'``; then restore ``x`` and take an SGD step
    (torch conventions: ``buf = momentum*buf + d``, Nesterov uses ``d + momentum*buf``,
    ``x <- x - lr*d``) on ``d = (x - mu) + weight_decay * x``. Scoping (Sec. 4.3):
    ``gamma_t = gamma * (1 + scoping)^t`` with t the number of outer steps already taken,
    kept per param group under ``"outer_step"`` so it survives ``state_dict()``. ``lr`` is
    the outer learning rate eta (what lr schedulers change); ``sgld_lr`` is eta', which the
    paper keeps fixed (annealing it "is detrimental", Sec. 4.2).

    Where the paper text and the authors' reference code (ucla-vision/entropy-sgd) differ,
    this class chooses:

    * Closure calls: exactly ``L`` per step. The reference code evaluates once more at x
      before the chain and discards that gradient (L + 1 evaluations); the first of our
      ``L`` calls is at x' = x already, so its loss is the one returned.
    * Averaging weight: ``alpha`` multiplies the NEWEST sample, as in Alg. 1 line 7 and the
      text of Sec. 4.2 (alpha = 0.75 "puts more weight on the later samples"). The reference
      code computes ``mu <- 0.75 mu + 0.25 x'``, i.e. alpha = 0.25 in our convention.
    * Outer step: ``x <- x - lr*(x - mu)`` as Sec. 4.3 recommends (the scope is divided out
      so scoping does not fight learning-rate annealing). ``literal_outer_step=True`` uses
      ``lr*gamma_t*(x - mu)``, Alg. 1 line 8 as printed.
    * Scoping: gamma_t grows every outer step; the reference Python code never increments
      its step counter, so its scope stays at gamma0.
    * Momentum: the outer loop uses SGD with (Nesterov) momentum on ``x - mu`` (Sec. 4.2).
      The inner SGLD loop has no momentum by default, as in Alg. 1; the reference code
      also applies Nesterov momentum to the inner data gradient, available here as
      ``sgld_momentum`` (its buffer restarts at zero every outer step, as there).
    * Weight decay: added once, to the outer direction ``x - mu`` (torch SGD convention).
      The reference code adds it to the inner gradients as well.
    * Noise scale: ``sqrt(sgld_lr)*noise`` per step, Alg. 1 line 6. The reference code adds
      ``sgld_lr*noise/sqrt(0.5*sgld_lr) = sqrt(2*sgld_lr)*noise``, a factor sqrt(2) more.

    The SGLD noise comes from ``generator``: a ``torch.Generator`` on the parameters'
    device or a :class:`~landscape.optim.rng.PhiloxGenerator` (MKL, CPU). By default one is
    seeded from the global torch RNG, and it is MKL's Philox on the CPU where MKL is
    installed (several times faster than torch's CPU mt19937 there, see
    :mod:`landscape.optim.rng`). Its state and kind are saved in ``state_dict()`` under
    ``"generator_state"``/``"generator_kind"`` so a resumed run is bit-identical.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        L: int = 20,
        sgld_lr: float = 0.1,
        noise: float = 1e-4,
        gamma: float = 0.03,
        scoping: float = 1e-3,
        alpha: float = 0.75,
        literal_outer_step: bool = False,
        sgld_momentum: float = 0.0,
        generator: Generator | None = None,
    ) -> None:
        _require(momentum >= 0.0, f"momentum must be >= 0, got {momentum}.")
        _require(
            not nesterov or momentum > 0.0,
            "Nesterov momentum needs momentum > 0; pass nesterov=False or a positive momentum.",
        )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            sgld_lr=sgld_lr,
            noise=noise,
            gamma=gamma,
            scoping=scoping,
            alpha=alpha,
            literal_outer_step=literal_outer_step,
            sgld_momentum=sgld_momentum,
        )
        super().__init__(params, defaults, L=L, generator=generator)

    def _outer_update(self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor]) -> None:
        """SGD with momentum on ``directions`` (modified in place), torch.optim.SGD conventions."""
        if group["weight_decay"] != 0.0:
            torch._foreach_add_(directions, params, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0.0:
            buffers, old_buffers, old_directions = [], [], []
            for p, d in zip(params, directions):
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d.clone()
                else:
                    old_buffers.append(buf)
                    old_directions.append(d)
                buffers.append(buf)
            if old_buffers:
                torch._foreach_mul_(old_buffers, momentum)
                torch._foreach_add_(old_buffers, old_directions)
            if group["nesterov"]:
                torch._foreach_add_(directions, buffers, alpha=momentum)
            else:
                directions = buffers
        torch._foreach_add_(params, directions, alpha=-group["lr"])


class EntropyAdam(_LocalEntropyOptimizer):
    """Entropy-Adam (Sec. 5.4.2): the Entropy-SGD inner loop with Adam as the outer optimizer.

    Adam (torch.optim.Adam conventions: L2 ``weight_decay`` added to the direction, bias
    correction, ``eps`` outside the square root) is applied to ``d = x - mu`` in place of the
    back-propagated gradient, "substituting the local entropy gradient" as Sec. 5.4.2 puts
    it; the paper ran it with L = 5 and a fixed gamma = 0.01 (hence ``scoping=0`` here). The
    defaults for Adam itself are torch's, ``betas=(0.9, 0.999)``; beta1 = 0.5 is quoted for
    the paper's char-LSTM run (the text of Sec. 5.4.2 does not state it): pass
    ``betas=(0.5, 0.999)`` to follow that.

    Everything else (closure calls, alpha, scoping, the Sec. 4.3 outer direction,
    ``literal_outer_step``, noise and generator) is as documented on :class:`EntropySGD`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        L: int = 5,
        sgld_lr: float = 0.1,
        noise: float = 1e-4,
        gamma: float = 0.01,
        scoping: float = 0.0,
        alpha: float = 0.75,
        literal_outer_step: bool = False,
        sgld_momentum: float = 0.0,
        generator: Generator | None = None,
    ) -> None:
        _require(
            len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
            f"betas must be two numbers in [0, 1), got {betas}.",
        )
        _require(eps > 0.0, f"eps must be > 0, got {eps}.")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            sgld_lr=sgld_lr,
            noise=noise,
            gamma=gamma,
            scoping=scoping,
            alpha=alpha,
            literal_outer_step=literal_outer_step,
            sgld_momentum=sgld_momentum,
        )
        super().__init__(params, defaults, L=L, generator=generator)

    def _outer_update(self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor]) -> None:
        """Adam on ``directions`` (modified in place), torch.optim.Adam conventions."""
        beta1, beta2 = group["betas"]
        if group["weight_decay"] != 0.0:
            torch._foreach_add_(directions, params, alpha=group["weight_decay"])
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        torch._foreach_lerp_(exp_avgs, directions, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, directions, directions, value=1.0 - beta2)
        step_sizes = [-group["lr"] / (1.0 - beta1**t) for t in steps]
        bias_correction2_sqrt = [(1.0 - beta2**t) ** 0.5 for t in steps]
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, bias_correction2_sqrt)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denominators, step_sizes)
