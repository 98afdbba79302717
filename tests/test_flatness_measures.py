"""Local energy and sharpness measures against closed forms, dense Hessians and the rescaling symmetry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.errors import LandscapeError
from landscape.flatness import (
    epsilon_sharpness,
    fisher_rao_norm,
    hessian_sharpness,
    local_energy,
    pac_bayes_sigma,
    rescale_layers,
)


def relu_net(bias: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12, bias=bias), nn.ReLU(), nn.Linear(12, 10, bias=bias), nn.ReLU(),
                         nn.Linear(10, 3, bias=bias)).double()


def toy_data(n: int = 96, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    teacher = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = (x @ teacher).argmax(dim=1)
    return x, y


def trained_net(steps: int = 300, smooth: bool = False):
    net = relu_net()
    if smooth:  # tanh: the loss is smooth, so Taylor expansions hold (a ReLU net has kinks)
        net = nn.Sequential(*[nn.Tanh() if isinstance(m, nn.ReLU) else m for m in net])
    x, y = toy_data()
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net, (x, y)


def dense_hessian_and_params(net, data):
    x, y = data
    names = [n for n, _ in net.named_parameters()]
    base = {n: p.detach() for n, p in net.named_parameters()}
    sizes = [p.numel() for p in base.values()]
    shapes = [p.shape for p in base.values()]
    w = torch.cat([p.reshape(-1) for p in base.values()])

    def loss(flat):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(flat, sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(net, params, (x,)), y)

    return torch.func.hessian(loss)(w), w


# ---- local energy ------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["multiplicative", "additive"])
def test_local_energy_at_sigma_zero_is_exactly_zero(noise):
    net, data = trained_net(50)
    test = toy_data(40, seed=7)
    result = local_energy(net, {"train": data, "test": test}, [0.0, 0.05], noise=noise, samples=3, seed=0)
    for split in ("train", "test"):
        for metric in ("loss", "error"):
            assert result.delta[split][metric][0] == 0.0
            assert result.std[split][metric][0] == 0.0
        assert result.delta[split]["loss"][1] != 0.0


@pytest.mark.parametrize("noise", ["multiplicative", "additive"])
def test_local_energy_matches_second_order_expansion(noise):
    """For small sigma, delta E_loss = (sigma^2 / 2) sum_i s_i^2 H_ii, s = w (multiplicative) or 1 (additive).

    The first-order term has zero mean and the third-order term vanishes by symmetry of
    z, so the expansion holds to O(sigma^4); the Monte-Carlo error is the only slack.
    """
    net, data = trained_net(smooth=True)
    H, w = dense_hessian_and_params(net, data)
    sigma = 3e-3 if noise == "multiplicative" else 1e-3
    scale = w.square() if noise == "multiplicative" else torch.ones_like(w)
    expected = 0.5 * sigma**2 * float((scale * torch.diagonal(H)).sum())
    result = local_energy(net, data, [sigma], noise=noise, samples=400, seed=3)
    got = result.delta["train"]["loss"][0]
    err = result.stderr["train"]["loss"][0]
    assert abs(got - expected) < 4 * err + 1e-3 * abs(expected), (got, expected, err)
    assert expected > 0


def test_local_energy_multiplicative_noise_is_exactly_rescaling_invariant_and_additive_is_not():
    net, data = trained_net(100)
    rescaled = rescale_layers(rescale_layers(net, "0", "2", 4.0), "2", "4", 0.25)
    x, _ = data
    assert torch.equal(net(x), rescaled(x))  # the same function
    sigmas = [0.01, 0.1, 0.3]
    a = local_energy(net, data, sigmas, noise="multiplicative", samples=5, seed=11)
    b = local_energy(rescaled, data, sigmas, noise="multiplicative", samples=5, seed=11)
    for metric in ("loss", "error"):
        np.testing.assert_array_equal(a.values["train"][metric], b.values["train"][metric])
    assert a.invariant_to_rescaling
    c = local_energy(net, data, sigmas, noise="additive", samples=5, seed=11)
    d = local_energy(rescaled, data, sigmas, noise="additive", samples=5, seed=11)
    assert not c.invariant_to_rescaling
    assert np.max(np.abs(c.delta["train"]["loss"] - d.delta["train"]["loss"])) > 1e-2


def test_local_energy_records_what_was_perturbed_and_validates_input():
    net, data = trained_net(10)
    result = local_energy(net, data, [0.1], samples=2, params=["4"])
    assert result.perturbed["perturbed"] == ["4.weight", "4.bias"]
    assert "0.weight" in result.perturbed["fixed_parameters"]
    assert result.perturbed["mode"] == "eval"
    for bad in ([-0.1], [], [float("nan")]):
        with pytest.raises(LandscapeError):
            local_energy(net, data, bad)
    with pytest.raises(LandscapeError):
        local_energy(net, data, [0.1], noise="gaussian")
    with pytest.raises(LandscapeError):
        local_energy(net, data, [0.1], samples=0)


def test_local_energy_leaves_batchnorm_buffers_and_the_model_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()
    x, y = toy_data()
    net.train()
    net(x)  # give the running statistics non-trivial values
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = local_energy(net, (x, y), [0.0, 0.2], samples=3)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.training  # the caller's mode is not changed
    assert "1.running_mean" in result.perturbed["fixed_buffers"]
    net.eval()
    with torch.no_grad():
        base = nn.functional.cross_entropy(net(x), y).item()
    assert result.base["train"]["loss"] == pytest.approx(base, rel=1e-12)


# ---- Fisher-Rao --------------------------------------------------------------------------------


def test_fisher_rao_norm_closed_form_for_a_bias_free_relu_net():
    """Without biases f(a w) = a^3 f(w) for three layers, so w . grad f = 3 f (Liang et al. 2019, Thm. 3.1)."""
    net = relu_net(bias=False)
    x, y = toy_data()
    with torch.no_grad():
        f = net(x)
        p = torch.softmax(f, dim=1)
        centred = 3.0 * (f - (p * f).sum(dim=1, keepdim=True))  # w . grad log p(y|x) for every y
    model_value = float((p * centred.square()).sum(dim=1).mean())
    empirical_value = float(centred.gather(1, y[:, None]).square().mean())
    assert fisher_rao_norm(net, (x, y), kind="model").value == pytest.approx(model_value, rel=1e-12)
    assert fisher_rao_norm(net, (x, y), kind="empirical").value == pytest.approx(empirical_value, rel=1e-12)


def test_fisher_rao_norm_equals_w_fisher_w_from_dense_per_sample_gradients_and_is_invariant():
    net, data = trained_net(60)
    x, y = data
    names = [n for n, _ in net.named_parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    rows = []
    for i in range(x.shape[0]):
        net.zero_grad()
        nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([dict(net.named_parameters())[n].grad.reshape(-1) for n in names]))
    G = torch.stack(rows)
    expected = float(w @ (G.T @ G / x.shape[0]) @ w)
    result = fisher_rao_norm(net, data, kind="empirical", batch_size=17)
    assert result.value == pytest.approx(expected, rel=1e-10)
    rescaled = rescale_layers(net, "2", "4", 8.0)
    assert fisher_rao_norm(rescaled, data, kind="empirical").value == pytest.approx(result.value, rel=1e-10)
    assert fisher_rao_norm(rescaled, data).value == pytest.approx(fisher_rao_norm(net, data).value, rel=1e-10)
    assert result.invariant_to_rescaling


# ---- epsilon-sharpness --------------------------------------------------------------------------


def test_epsilon_sharpness_equals_the_linearised_maximum_for_tiny_boxes():
    """Away from a minimum and for tiny eps, max over the box is sum_i r_i |g_i| to first order."""
    net = relu_net()
    data = toy_data()
    x, y = data
    eps = 1e-7
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    for box in ("relative", "keskar"):
        expected = sum(float((eps * (p.detach().abs() + (box == "keskar")) * p.grad.abs()).sum())
                       for p in net.parameters())
        result = epsilon_sharpness(net, data, eps, box=box, steps=4, step_fraction=1.0)
        assert result.value == pytest.approx(expected, rel=1e-4)
        assert result.extra["keskar_normalised"] == pytest.approx(100 * expected / (1 + result.extra["base_loss"]),
                                                                  rel=1e-4)


def test_relative_epsilon_sharpness_is_invariant_keskar_is_not():
    net, data = trained_net()
    rescaled = rescale_layers(net, "0", "2", 16.0)
    rel_a = epsilon_sharpness(net, data, 1e-2, box="relative", steps=10)
    rel_b = epsilon_sharpness(rescaled, data, 1e-2, box="relative", steps=10)
    assert rel_a.value > 0
    assert rel_b.value == pytest.approx(rel_a.value, rel=1e-9)
    assert rel_a.invariant_to_rescaling
    kes_a = epsilon_sharpness(net, data, 1e-2, box="keskar", steps=10)
    kes_b = epsilon_sharpness(rescaled, data, 1e-2, box="keskar", steps=10)
    assert not kes_a.invariant_to_rescaling
    assert abs(kes_b.value - kes_a.value) > 0.1 * kes_a.value


# ---- PAC-Bayes sigma' --------------------------------------------------------------------------


def test_pac_bayes_sigma_brackets_the_target_and_is_invariant_with_multiplicative_noise():
    net, data = trained_net()
    a = pac_bayes_sigma(net, data, target=0.05, metric="loss", samples=6, seed=2, rtol=1e-3)
    history = {round(h["sigma"], 15): h["deviation"] for h in a.extra["history"]}
    assert history[round(a.value, 15)] <= 0.05
    assert any(s > a.value and s <= a.value * 1.002 and d > 0.05 for s, d in history.items())
    assert a.extra["flatness_inverse_sigma_squared"] == pytest.approx(1 / a.value**2)
    rescaled = rescale_layers(net, "2", "4", 4.0)
    b = pac_bayes_sigma(rescaled, data, target=0.05, metric="loss", samples=6, seed=2, rtol=1e-3)
    assert b.value == a.value
    c = pac_bayes_sigma(net, data, target=0.05, metric="loss", noise="additive", samples=6, seed=2, rtol=1e-3)
    d = pac_bayes_sigma(rescaled, data, target=0.05, metric="loss", noise="additive", samples=6, seed=2, rtol=1e-3)
    assert abs(math.log(c.value / d.value)) > 0.05


# ---- Hessian sharpness -------------------------------------------------------------------------


def test_hessian_sharpness_matches_the_dense_hessian_and_is_not_invariant():
    net, data = trained_net()
    H, _ = dense_hessian_and_params(net, data)
    top, trace = hessian_sharpness(net, data, trace_rel=0.01, max_probes=400, seed=0)
    assert top.value == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)
    assert abs(trace.value - float(torch.trace(H))) < 4 * trace.stderr + 1e-9
    assert not top.invariant_to_rescaling and not trace.invariant_to_rescaling
    rescaled = rescale_layers(net, "0", "2", 4.0)
    top_b, _ = hessian_sharpness(rescaled, data, max_probes=10)
    assert abs(top_b.value - top.value) > 0.1 * top.value


def test_rescale_layers_refuses_nonsense():
    net = relu_net()
    with pytest.raises(LandscapeError):
        rescale_layers(net, "0", "1", 2.0)  # "1" is the ReLU
    with pytest.raises(LandscapeError):
        rescale_layers(net, "0", "2", -1.0)


def test_epsilon_sharpness_finds_the_best_corner_of_a_convex_loss():
    """Cross-entropy of a linear model is convex in its weights, so its maximum over the box sits at a
    corner: enumerate all 2^4 corners and compare (the ascent gives a lower bound that should reach it)."""
    import itertools

    torch.manual_seed(3)
    model = nn.Linear(1, 2).double()
    x = torch.randn(40, 1, dtype=torch.float64)
    y = (x[:, 0] + 0.3 * torch.randn(40, dtype=torch.float64) > 0).long()
    eps = 0.5
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    best = -math.inf
    for signs in itertools.product((-1.0, 1.0), repeat=4):
        d = eps * w.abs() * torch.tensor(signs, dtype=torch.float64)
        params = {"weight": (w[:2] + d[:2]).view(2, 1), "bias": w[2:] + d[2:]}
        best = max(best, float(nn.functional.cross_entropy(functional_call(model, params, (x,)), y)))
    with torch.no_grad():
        base = float(nn.functional.cross_entropy(model(x), y))
    result = epsilon_sharpness(model, (x, y), eps, box="relative", steps=30)
    assert result.value <= best - base + 1e-12
    assert result.value == pytest.approx(best - base, rel=1e-9)


def test_pac_bayes_on_the_error_metric_and_outside_the_search_range():
    net, data = trained_net()
    result = pac_bayes_sigma(net, data, target=0.1, metric="error", samples=4, seed=0, rtol=1e-3)
    assert result.extra["bracketed"] and not result.warnings
    history = {h["sigma"]: h["deviation"] for h in result.extra["history"]}
    assert history[result.value] <= 0.1 + 1e-12
    above = [d for s, d in history.items() if result.value < s <= result.value * 1.0011]
    assert above and all(d > 0.1 for d in above)
    narrow = pac_bayes_sigma(net, data, target=0.1, metric="error", samples=2, bounds=(1e-4, 1e-3))
    assert not narrow.extra["bracketed"] and narrow.value == 1e-3 and narrow.stderr is None
    assert "above the search range" in narrow.warnings[0]


def test_noise_draws_do_not_depend_on_the_precision():
    net, data = trained_net(20)
    a = local_energy(net, data, [0.1], samples=3, seed=5, dtype=torch.float64)
    b = local_energy(net.float(), (data[0].float(), data[1]), [0.1], samples=3, seed=5, dtype=torch.float32)
    np.testing.assert_allclose(a.values["train"]["loss"], b.values["train"]["loss"], rtol=1e-4)


def test_a_parameter_name_that_matches_nothing_is_refused():
    net, data = trained_net(5)
    with pytest.raises(LandscapeError, match="nosuch"):
        local_energy(net, data, [0.1], samples=2, params=["4", "nosuch"])


def test_local_energy_takes_any_mean_loss_callable():
    """A loss without a reduction= argument (nn.MSELoss, a lambda) works: its batch means are weighted by
    target counts, so the value is the mean over all targets (closed form: a linear model at its weights)."""
    import torch
    from torch import nn

    from landscape.flatness.local_energy import local_energy

    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randn(10, 2, dtype=torch.float64)
    expected = float(((model(x) - y) ** 2).mean())
    for loss in (nn.MSELoss(), lambda out, target: ((out - target) ** 2).mean()):
        energy = local_energy(model, {"train": (x, y)}, (0.0,), samples=1, loss_fn=loss, batch_size=3)
        base = energy.to_dict()["base"]["train"]
        assert base["loss"] == pytest.approx(expected, rel=1e-12)
        assert math.isnan(base["error"])  # real targets have no error rate
