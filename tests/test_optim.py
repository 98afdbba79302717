"""Optimizers against hand computations, torch's own optimizers and exact counts."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.optim.rng import make_generator, mkl_available
from landscape.optim import (
    OPTIMIZER_NAMES,
    SAM,
    EntropyAdam,
    EntropySGD,
    ReplicatedSGD,
    build_optimizer,
    closure_calls_per_step,
    closure_fresh_batch,
)

F64 = torch.float64
A = torch.tensor([[2.0, 0.5, 0.1], [0.5, 1.5, -0.3], [0.1, -0.3, 1.0]], dtype=F64)  # SPD
X0 = torch.tensor([0.7, -1.2, 0.4], dtype=F64)


def _quadratic(x: torch.Tensor, counter: list[int] | None = None, seen: list[torch.Tensor] | None = None):
    """Closure for f(x) = 0.5 x^T A x on the parameter ``x``; optionally counts calls and records x."""

    def closure() -> torch.Tensor:
        if counter is not None:
            counter[0] += 1
        if seen is not None:
            seen.append(x.detach().clone())
        x.grad = None
        loss = 0.5 * x @ A @ x
        loss.backward()
        return loss.detach()

    return closure


def _hand_entropy_sgd(x, *, steps, lr, sgld_lr, gamma, scoping, alpha, L, momentum=0.0, nesterov=False,
                      literal=False, weight_decay=0.0, sgld_momentum=0.0):
    """Alg. 1 + Sec. 4.3 written out on the quadratic, independently of the library; ``sgld_momentum``:
    Nesterov momentum on the inner loop's data gradient, restarted at each outer step (reference code)."""
    x = x.clone()
    buf = None
    for t in range(steps):
        g_t = gamma * (1.0 + scoping) ** t
        xp, mu = x.clone(), x.clone()
        velocity = torch.zeros_like(x)
        for _ in range(L):
            data = A @ xp
            velocity = sgld_momentum * velocity + data
            dxp = data + sgld_momentum * velocity - g_t * (x - xp)
            xp = xp - sgld_lr * dxp
            mu = (1.0 - alpha) * mu + alpha * xp
        d = (x - mu) * (g_t if literal else 1.0) + weight_decay * x
        if momentum:
            buf = d.clone() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        x = x - lr * d
    return x


# ---------------------------------------------------------------------------- Entropy-SGD


@pytest.mark.parametrize("literal", [False, True])
def test_entropy_sgd_one_step_equals_hand_computation(literal):
    lr, sgld_lr, gamma, alpha = 0.5, 0.2, 0.7, 0.75
    x = X0.clone().requires_grad_()
    opt = EntropySGD([x], lr, momentum=0.0, nesterov=False, L=2, sgld_lr=sgld_lr, noise=0.0, gamma=gamma,
                     scoping=0.0, alpha=alpha, literal_outer_step=literal)
    opt.step(_quadratic(x))
    x0 = X0
    x1 = x0 - sgld_lr * (A @ x0 - gamma * (x0 - x0))  # first SGLD step: the coupling vanishes at x' = x
    mu1 = (1 - alpha) * x0 + alpha * x1
    x2 = x1 - sgld_lr * (A @ x1 - gamma * (x0 - x1))
    mu2 = (1 - alpha) * mu1 + alpha * x2
    expected = x0 - lr * (gamma if literal else 1.0) * (x0 - mu2)
    torch.testing.assert_close(x.detach(), expected, rtol=0, atol=1e-12)


def test_entropy_sgd_nesterov_scoping_weight_decay_over_two_steps():
    kw = dict(lr=0.3, sgld_lr=0.15, gamma=0.4, scoping=0.5, alpha=0.6, L=3)
    x = X0.clone().requires_grad_()
    opt = EntropySGD([x], kw["lr"], momentum=0.8, nesterov=True, weight_decay=0.05, noise=0.0,
                     **{k: v for k, v in kw.items() if k != "lr"})
    closure = _quadratic(x)
    for _ in range(2):
        opt.step(closure)
    expected = _hand_entropy_sgd(X0, steps=2, momentum=0.8, nesterov=True, weight_decay=0.05, **kw)
    torch.testing.assert_close(x.detach(), expected, rtol=0, atol=1e-12)
    # The plain (non-Nesterov) heavy ball is a different trajectory: the test can tell them apart.
    heavy_ball = _hand_entropy_sgd(X0, steps=2, momentum=0.8, nesterov=False, weight_decay=0.05, **kw)
    assert not torch.allclose(x.detach(), heavy_ball, atol=1e-6)


def test_entropy_sgd_inner_nesterov_momentum_over_two_steps():
    """``sgld_momentum`` (the paper's "Nesterov's momentum for both loops", Sec. 5.2) against the hand
    computation, from the optimizer and through ``build_optimizer`` as ``landscape train`` builds it."""
    kw = dict(lr=0.3, sgld_lr=0.15, gamma=0.4, scoping=0.5, alpha=0.6, L=3)
    expected = _hand_entropy_sgd(X0, steps=2, momentum=0.8, nesterov=True, sgld_momentum=0.7, **kw)
    without = _hand_entropy_sgd(X0, steps=2, momentum=0.8, nesterov=True, **kw)
    assert not torch.allclose(expected, without, atol=1e-6)  # the inner momentum changes the trajectory
    x = X0.clone().requires_grad_()
    opt = EntropySGD([x], kw["lr"], momentum=0.8, nesterov=True, noise=0.0, sgld_momentum=0.7,
                     **{k: v for k, v in kw.items() if k != "lr"})
    for _ in range(2):
        opt.step(_quadratic(x))
    torch.testing.assert_close(x.detach(), expected, rtol=0, atol=1e-12)
    model = nn.Linear(3, 1, bias=False).double()
    built = build_optimizer("entropy-sgd", model, lr=0.3, sgld_momentum=0.7, noise=0.0)
    assert built.param_groups[0]["sgld_momentum"] == 0.7


def test_scope_grows_every_step_and_survives_state_dict():
    gamma, scoping = 0.3, 0.25
    kw = dict(lr=0.4, sgld_lr=0.2, gamma=gamma, scoping=scoping, alpha=0.75, L=2)
    x = X0.clone().requires_grad_()
    opt = EntropySGD([x], kw["lr"], momentum=0.0, nesterov=False, noise=0.0,
                     **{k: v for k, v in kw.items() if k != "lr"})
    assert opt.diagnostics()["gamma"] == gamma
    for t in range(5):
        opt.step(_quadratic(x))
        assert opt.diagnostics()["gamma"] == gamma * (1 + scoping) ** t
        assert opt.diagnostics()["outer_step"] == t + 1
    # The growing scope was the one actually used (a constant scope gives another point).
    torch.testing.assert_close(x.detach(), _hand_entropy_sgd(X0, steps=5, **kw), rtol=0, atol=1e-12)
    assert not torch.allclose(x.detach(), _hand_entropy_sgd(X0, steps=5, **{**kw, "scoping": 0.0}), atol=1e-6)

    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    y = x.detach().clone().requires_grad_()
    resumed = EntropySGD([y], 1.0, momentum=0.0, nesterov=False, noise=0.0, L=2)  # other hyper-parameters
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.diagnostics()["gamma"] == gamma * (1 + scoping) ** 4
    opt.step(_quadratic(x))
    resumed.step(_quadratic(y))
    assert resumed.diagnostics()["gamma"] == gamma * (1 + scoping) ** 5
    assert torch.equal(x, y)


def test_closure_is_called_exactly_L_times_per_step():
    x = X0.clone().requires_grad_()
    counter = [0]
    opt = EntropySGD([x], 0.1, L=7, noise=1e-3, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        opt.step(_quadratic(x, counter))
    assert counter[0] == 21
    assert closure_calls_per_step(opt) == 7 and closure_fresh_batch(opt)


def test_alpha_weights_the_newest_langevin_sample():
    alpha, sgld_lr, gamma = 0.3, 0.25, 0.5
    x = X0.clone().requires_grad_()
    seen: list[torch.Tensor] = []
    # lr = 1 and no momentum: the new x is x - (x - mu) = mu.
    opt = EntropySGD([x], 1.0, momentum=0.0, nesterov=False, L=2, sgld_lr=sgld_lr, noise=0.0, gamma=gamma,
                     scoping=0.0, alpha=alpha)
    first_loss = opt.step(_quadratic(x, seen=seen))
    x0, x1 = seen  # the closure sees x'_0 = x, then x'_1
    assert torch.equal(x0, X0) and not torch.allclose(x1, x0)
    assert first_loss == 0.5 * X0 @ A @ X0  # step returns the first closure's loss, at x
    x2 = x1 - sgld_lr * (A @ x1 + gamma * (x1 - x0))
    assert not torch.allclose(x1, x2)
    expected = (1 - alpha) ** 2 * x0 + alpha * (1 - alpha) * x1 + alpha * x2
    reversed_weights = alpha**2 * x0 + (1 - alpha) * alpha * x1 + (1 - alpha) * x2
    torch.testing.assert_close(x.detach(), expected, rtol=0, atol=1e-12)
    assert not torch.allclose(x.detach(), reversed_weights, atol=1e-6)


def _noisy_run(seed: int) -> torch.Tensor:
    x = X0.clone().requires_grad_()
    opt = EntropySGD([x], 0.5, L=3, noise=1e-2, generator=torch.Generator().manual_seed(seed))
    for _ in range(3):
        opt.step(_quadratic(x))
    return x.detach()


def test_noise_is_reproducible_from_the_generator():
    assert torch.equal(_noisy_run(5), _noisy_run(5))
    assert not torch.equal(_noisy_run(5), _noisy_run(6))


NOISE_KINDS = ["torch", pytest.param("mkl", marks=pytest.mark.skipif(not mkl_available(), reason="MKL not installed"))]


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_variance_is_sgld_lr_times_noise_squared(kind):
    n, sgld_lr, noise = 200_000, 0.1, 1e-3
    x = torch.zeros(n, dtype=F64, requires_grad=True)

    def zero_gradient() -> torch.Tensor:
        x.grad = None
        loss = (0.0 * x).sum()
        loss.backward()
        return loss.detach()

    # gamma = 0, one Langevin step, alpha = 1, lr = 1, no momentum: x_new = x'_1 = sqrt(lr) * noise * z.
    opt = EntropySGD([x], 1.0, momentum=0.0, nesterov=False, L=1, sgld_lr=sgld_lr, noise=noise, gamma=0.0,
                     scoping=0.0, alpha=1.0, generator=make_generator("cpu", 1, kind))
    opt.step(zero_gradient)
    displacement = x.detach()
    assert abs(displacement.var().item() / (sgld_lr * noise**2) - 1.0) < 0.03
    assert abs(displacement.mean().item()) < 5 * (sgld_lr * noise**2 / n) ** 0.5


def test_noiseless_chain_draws_no_random_numbers():
    generator = torch.Generator().manual_seed(3)
    before = generator.get_state()
    x = X0.clone().requires_grad_()
    EntropySGD([x], 0.1, L=3, noise=0.0, generator=generator).step(_quadratic(x))
    assert torch.equal(generator.get_state(), before)


def test_entropy_adam_outer_step_is_torch_adam_on_x_minus_mu():
    sgld_lr, gamma, alpha, L = 0.2, 0.3, 0.75, 2
    x = X0.clone().requires_grad_()
    opt = EntropyAdam([x], 0.05, betas=(0.5, 0.99), weight_decay=0.01, L=L, sgld_lr=sgld_lr, noise=0.0,
                      gamma=gamma, scoping=0.0, alpha=alpha)
    reference = X0.clone().requires_grad_()
    adam = torch.optim.Adam([reference], lr=0.05, betas=(0.5, 0.99), weight_decay=0.01)
    for _ in range(3):
        opt.step(_quadratic(x))
        with torch.no_grad():
            r = reference.detach()
            xp, mu = r.clone(), r.clone()
            for _ in range(L):
                xp = xp - sgld_lr * (A @ xp + gamma * (xp - r))
                mu = (1 - alpha) * mu + alpha * xp
        reference.grad = r - mu
        adam.step()
        torch.testing.assert_close(x.detach(), reference.detach(), rtol=0, atol=1e-12)


def test_invalid_hyper_parameters_raise_one_sentence_value_errors():
    x = X0.clone().requires_grad_()
    for kwargs in (dict(L=0), dict(alpha=0.0), dict(alpha=1.5), dict(sgld_lr=0.0), dict(noise=-1.0)):
        with pytest.raises(ValueError, match=r"\.$"):
            EntropySGD([x], 0.1, **kwargs)
    with pytest.raises(ValueError, match="lr"):
        EntropySGD([x], -0.1)
    with pytest.raises(ValueError, match="closure"):
        EntropySGD([x], 0.1).step()


def test_a_failing_closure_leaves_the_weights_at_x():
    x = X0.clone().requires_grad_()
    quadratic = _quadratic(x)
    calls = [0]

    def closure() -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 3:
            raise FloatingPointError("non-finite loss")
        return quadratic()

    with pytest.raises(FloatingPointError):
        EntropySGD([x], 0.1, L=4, noise=0.0).step(closure)
    assert torch.equal(x.detach(), X0)


def test_lr_scheduler_drives_the_outer_learning_rate():
    x = X0.clone().requires_grad_()
    opt = EntropySGD([x], 0.5, L=2, noise=1e-3, generator=torch.Generator().manual_seed(0))
    torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.0)
    opt.step(_quadratic(x))
    assert torch.equal(x.detach(), X0)  # lr 0: the chain ran but x is restored and not moved
    opt.param_groups[0]["lr"] = 0.5
    opt.step(_quadratic(x))
    assert not torch.allclose(x.detach(), X0)


# ---------------------------------------------------------------------------- Replicated SGD


def _bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)).double()


def _batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + k)
    return torch.randn(8, 3, generator=g, dtype=F64), torch.randint(0, 2, (8,), generator=g)


def _stream_closure(model: nn.Module, start: int = 0, counter: list[int] | None = None):
    """Closure drawing batch start, start+1, ... on successive calls (a fresh batch per call)."""
    position = [start]

    def closure() -> torch.Tensor:
        inputs, targets = _batch(position[0])
        position[0] += 1
        if counter is not None:
            counter[0] += 1
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        return loss.detach()

    return closure


def test_uncoupled_replicas_are_independent_sgd_runs():
    replicas, steps = 3, 4
    model = _bn_net()
    start = copy.deepcopy(model)
    opt = ReplicatedSGD(model, 0.1, replicas=replicas, momentum=0.9, nesterov=True, weight_decay=1e-3, coupling=0.0)
    counter = [0]
    closure = _stream_closure(model, counter=counter)
    for _ in range(steps):
        opt.step(closure)
    assert counter[0] == replicas * steps and closure_calls_per_step(opt) == replicas
    for a in range(replicas):
        single = copy.deepcopy(start)
        sgd = torch.optim.SGD(single.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        for k in range(steps):
            inputs, targets = _batch(k * replicas + a)  # replica a's k-th batch
            sgd.zero_grad()
            nn.functional.cross_entropy(single(inputs), targets).backward()
            sgd.step()
        state = opt.replica_state(a)
        for name, value in single.state_dict().items():
            assert torch.equal(state[name], value), (a, name)
    assert not torch.equal(opt.replica_state(0)["0.weight"], opt.replica_state(1)["0.weight"])


def test_model_holds_the_centre_after_a_step():
    model = _bn_net()
    opt = ReplicatedSGD(model, 0.1, replicas=3, coupling=0.1, seed_perturbation=0.05,
                        generator=torch.Generator().manual_seed(2))
    opt.step(_stream_closure(model))
    states = [opt.replica_state(a) for a in range(3)]
    for name, value in model.state_dict().items():
        stack = torch.stack([s[name] for s in states])
        expected = stack.mean(dim=0) if stack.is_floating_point() else stack[0]
        assert torch.equal(value, expected), name
    assert not torch.equal(states[0]["1.running_mean"], states[1]["1.running_mean"])


def test_coupled_steps_follow_the_update_rule_with_the_centre_at_each_step_start():
    """Two steps of w_a <- w_a - lr (grad f_a(w_a) + g_t (w_a - c)), c the replica mean when
    the step starts (the second step reuses the mean the first one ended with), by hand."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    lr, g0, growth, y = 0.1, 0.7, 0.5, 3
    opt = ReplicatedSGD(model, lr, replicas=y, momentum=0.0, nesterov=False, coupling=g0, coupling_growth=growth,
                        seed_perturbation=0.3, generator=torch.Generator().manual_seed(6))
    opt._ensure_replicas()
    names = [n for n, _ in model.named_parameters()]
    reps = [{n: opt.replica_state(a)[n].clone() for n in names} for a in range(y)]
    probe = copy.deepcopy(model)
    closure = _stream_closure(model)
    for t in range(2):
        opt.step(closure)
        g_t = g0 * (1 + growth) ** t
        centre = {n: sum(r[n] for r in reps) / y for n in names}
        for a in range(y):
            probe.load_state_dict(reps[a])
            inputs, targets = _batch(t * y + a)
            grads = torch.autograd.grad(nn.functional.cross_entropy(probe(inputs), targets), list(probe.parameters()))
            reps[a] = {n: reps[a][n] - lr * (g + g_t * (reps[a][n] - centre[n])) for n, g in zip(names, grads)}
    for a in range(y):
        for n in names:
            torch.testing.assert_close(opt.replica_state(a)[n], reps[a][n], rtol=1e-12, atol=1e-14)
    centre = {n: sum(r[n] for r in reps) / y for n in names}
    spread = sum(((r[n] - centre[n]) ** 2).sum() for r in reps for n in names) / y
    assert opt.diagnostics()["replica_spread"] == pytest.approx(float(spread), rel=1e-6)


def _replica_spread(coupling: float) -> float:
    model = _bn_net()
    opt = ReplicatedSGD(model, 0.1, replicas=4, coupling=coupling, coupling_growth=0.0, seed_perturbation=0.2,
                        generator=torch.Generator().manual_seed(4))
    closure = _stream_closure(model)
    for _ in range(6):
        opt.step(closure)
    return opt.diagnostics()["replica_spread"]


def test_coupling_shrinks_the_replica_spread():
    assert _replica_spread(2.0) < 0.5 * _replica_spread(0.0)


# ---------------------------------------------------------------------------- SAM


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _loss_and_grads(model: nn.Module, params: list[torch.Tensor]) -> list[torch.Tensor]:
    inputs, targets = _batch(0)
    loss = nn.functional.cross_entropy(torch.func.functional_call(model, dict(zip(
        [n for n, _ in model.named_parameters()], params)), (inputs,)), targets)
    return list(torch.autograd.grad(loss, params))


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_perturbation_and_update_match_the_formulas(adaptive):
    rho, lr = 0.3, 0.2
    model = _mlp()
    reference = copy.deepcopy(model)
    seen: list[list[torch.Tensor]] = []

    def closure() -> torch.Tensor:
        seen.append([p.detach().clone() for p in model.parameters()])
        inputs, targets = _batch(0)  # SAM: the same batch for both calls
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        return loss.detach()

    opt = SAM(model.parameters(), "sgd", rho=rho, adaptive=adaptive, lr=lr, momentum=0.9, nesterov=True)
    sgd = torch.optim.SGD(reference.parameters(), lr=lr, momentum=0.9, nesterov=True)
    for _ in range(2):
        seen.clear()
        opt.step(closure)
        w = [p.detach().clone().requires_grad_() for p in reference.parameters()]
        g = _loss_and_grads(reference, w)
        scale = [p.detach().abs() if adaptive else torch.ones_like(p) for p in w]
        norm = torch.sqrt(sum(((t * gi) ** 2).sum() for t, gi in zip(scale, g)))
        e = [rho * t**2 * gi / norm for t, gi in zip(scale, g)]
        perturbed = [(wi + ei).detach() for wi, ei in zip(w, e)]
        for got, want in zip(seen[1], perturbed):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        g2 = _loss_and_grads(reference, [p.requires_grad_() for p in perturbed])
        for p, gi in zip(reference.parameters(), g2):
            p.grad = gi
        sgd.step()
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-12)
    assert closure_calls_per_step(opt) == 2 and not closure_fresh_batch(opt)


@pytest.mark.parametrize("pass_model", [True, False])
def test_sam_updates_batchnorm_statistics_on_the_first_pass_only(pass_model):
    model = _bn_net()
    single_forward = copy.deepcopy(model)
    inputs, targets = _batch(0)
    single_forward(inputs)

    def closure() -> torch.Tensor:
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        return loss.detach()

    opt = SAM(model.parameters(), "sgd", rho=0.5, model=model if pass_model else None, lr=0.1)
    opt.step(closure)
    same = all(torch.equal(b, c) for b, c in zip(model.buffers(), single_forward.buffers()))
    assert same == pass_model  # without the model, the second pass updates the statistics again


def test_sam_lr_scheduler_reaches_the_base_optimizer():
    model = _mlp()
    opt = SAM(model.parameters(), "adam", rho=0.05, lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(_stream_closure(model))
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.005
    opt.load_state_dict(opt.state_dict())  # torch replaces the group list on load; SAM must follow it
    assert opt.param_groups is opt.base_optimizer.param_groups
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.0025


# ---------------------------------------------------------------------------- factory, checkpoints


def _build(name: str, model: nn.Module, seed: int, kind: str = "torch") -> torch.optim.Optimizer:
    return build_optimizer(name, model, lr=0.05, L=3, noise=1e-2, replicas=2, coupling=0.1,
                           generator=make_generator("cpu", seed, kind))


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("steps_before_save", [0, 2])
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_state_dict_round_trip_continues_identically(name, steps_before_save, kind):
    model = _bn_net()
    opt = _build(name, model, seed=0, kind=kind)
    if isinstance(opt, ReplicatedSGD):
        opt.param_groups[0]["seed_perturbation"] = 0.1  # the replicas' start draws from the generator
    calls = closure_calls_per_step(opt)
    for k in range(steps_before_save):
        opt.step(_stream_closure(model, start=k * calls))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_model = _bn_net(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = _build(name, resumed_model, seed=99, kind=kind)
    resumed.load_state_dict(saved["optimizer"])
    for k in range(steps_before_save, steps_before_save + 2):
        opt.step(_stream_closure(model, start=k * calls))
        resumed.step(_stream_closure(resumed_model, start=k * calls))
    for (key, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), key
    if hasattr(opt, "diagnostics"):
        assert json.loads(json.dumps(opt.diagnostics())) == resumed.diagnostics()


def test_build_optimizer_resolves_names_and_defaults():
    model = _mlp()
    assert isinstance(build_optimizer("sgd", model, lr=0.1, momentum=0.0), torch.optim.SGD)
    assert isinstance(build_optimizer("adam", model, lr=0.1), torch.optim.Adam)
    entropy_sgd = build_optimizer("entropy-sgd", model, lr=0.1)
    entropy_adam = build_optimizer("Entropy-Adam", model, lr=0.1)
    assert (entropy_sgd.L, entropy_sgd.param_groups[0]["gamma"]) == (20, 0.03)
    assert (entropy_adam.L, entropy_adam.param_groups[0]["gamma"]) == (5, 0.01)
    assert build_optimizer("entropy-sgd", model, lr=0.1, L=4, gamma=0.2).L == 4
    sam = build_optimizer("sam", model, lr=0.1, sam_base="adam")
    assert isinstance(sam, SAM) and isinstance(sam.base_optimizer, torch.optim.Adam)
    assert isinstance(build_optimizer("replicated-sgd", model, lr=0.1), ReplicatedSGD)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert closure_calls_per_step(sgd) == 1 and not closure_fresh_batch(sgd)
    with pytest.raises(LandscapeError, match="entropy-sgd"):
        build_optimizer("entropy_sdg", model, lr=0.1)
    with pytest.raises(LandscapeError, match="L"):
        build_optimizer("entropy-sgd", model, lr=0.1, L=0)
