"""The public API on models of a user's own, against torch.func.hessian in float64.

Each case builds the loss as a function of the flat parameters, takes its dense Hessian
with torch.func, and checks the facade's dense matrix, its eigenvalues (ordered as asked,
inside their error bounds), its products and its trace against it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

import landscape
from landscape.errors import LandscapeError


def _reference(model: nn.Module, loss_of_outputs, batches) -> torch.Tensor:
    """Dense Hessian of sum_b (|b|/N) loss_b: the mean over every sample."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    buffers = dict(model.named_buffers())
    total = sum(int(x.shape[0]) for x, _ in batches)

    def loss(w):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(w, sizes), shapes)}
        return sum(x.shape[0] / total * loss_of_outputs(functional_call(model, {**params, **buffers}, (x,)), y)
                   for x, y in batches)

    return hessian(loss)(w0)


def _check(H: landscape.Hessian, reference: torch.Tensor) -> None:
    dense = H.dense()
    scale = float(reference.abs().max())
    torch.testing.assert_close(dense, reference, rtol=0, atol=1e-10 * scale)
    exact = np.linalg.eigvalsh(reference.numpy())
    top = H.eigenvalues(k=3, tol=1e-10)
    assert np.all(np.diff(top.values) <= 0)  # largest first
    assert np.all(np.abs(top.values - exact[::-1][:3]) <= top.error_bounds + 1e-9 * scale)
    bottom = H.eigenvalues(k=2, which="smallest", tol=1e-10)
    assert np.all(np.abs(bottom.values - exact[:2]) <= bottom.error_bounds + 1e-9 * scale)
    v = torch.randn(reference.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(H @ v, reference @ v, rtol=0, atol=1e-10 * scale * float(v.abs().sum()))
    np.testing.assert_allclose(H.to_scipy().matvec(v.numpy()), (reference @ v).numpy(), rtol=0,
                               atol=1e-10 * scale * float(v.abs().sum()))


def test_tanh_mlp_with_mse_and_unequal_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(11, 3, dtype=torch.float64), torch.randn(11, 2, dtype=torch.float64)
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]  # a short last batch weighs 3/11
    H = landscape.Hessian(model, nn.MSELoss(), batches)
    reference = _reference(model, nn.MSELoss(), batches)
    _check(H, reference)
    trace = H.trace(rel_tol=0.05, seed=0)
    assert trace.converged and abs(trace.value - float(torch.trace(reference))) <= 4 * trace.stderr


def test_conv_net_with_batchnorm_in_eval_mode():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3)).double()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    x, y = torch.randn(6, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = nn.CrossEntropyLoss()
    H = landscape.Hessian(model, loss, [(x, y)])
    _check(H, _reference(model, loss, [(x, y)]))


class _LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(2, 3, batch_first=True)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def test_lstm():
    torch.manual_seed(2)
    model = _LSTMClassifier().double()
    x, y = torch.randn(5, 4, 2, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])
    loss = nn.CrossEntropyLoss()
    H = landscape.Hessian(model, loss, [(x, y)])
    _check(H, _reference(model, loss, [(x, y)]))


class _DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))

    def forward(self, x):
        return {"logits": self.body(x), "features": x}


def test_a_model_returning_a_dict_with_a_batch_fn():
    torch.manual_seed(3)
    model = _DictModel().double()
    x, y = torch.randn(9, 3, dtype=torch.float64), torch.tensor([0, 1, 2] * 3)
    data = [{"inputs": x[:5], "label": y[:5], "id": torch.arange(5)},
            {"inputs": x[5:], "label": y[5:], "id": torch.arange(5, 9)}]

    def loss(outputs, targets):
        return nn.functional.cross_entropy(outputs["logits"], targets)

    H = landscape.Hessian(model, loss, data, batch_fn=lambda b: (b["inputs"], b["label"]))
    _check(H, _reference(model, loss, [(x[:5], y[:5]), (x[5:], y[5:])]))


def test_longer_tuples_use_their_first_two_entries_and_dicts_need_a_batch_fn():
    model = nn.Linear(2, 2).double()
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    H = landscape.Hessian(model, nn.CrossEntropyLoss(), [(x, y, torch.ones(4))])
    assert H.shape == (6, 6)
    with pytest.raises(LandscapeError, match="batch_fn"):
        landscape.Hessian(model, nn.CrossEntropyLoss(), [{"x": x, "y": y}])


def test_the_top_level_names_are_the_documented_ones():
    for name in landscape.__all__:
        assert getattr(landscape, name) is not None, name
    assert landscape.trace.__name__ == "hutchinson_trace" and math.isfinite(1.0)
    with pytest.raises(AttributeError):
        landscape.not_a_public_name  # noqa: B018


def test_per_sample_gradients_and_their_moments_match_a_loop():
    """vmap over samples against one autograd call per sample, with unequal batches and a dict of outputs."""
    torch.manual_seed(4)
    model = _DictModel().double()
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    data = [(x[:4], y[:4]), (x[4:], y[4:])]

    def loss(outputs, targets):
        return nn.functional.cross_entropy(outputs["logits"], targets)

    loop = []
    for i in range(7):
        model.zero_grad()
        loss(model(x[i:i + 1]), y[i:i + 1]).backward()
        loop.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    loop = torch.stack(loop)
    rows = landscape.per_sample_gradients(model, loss, data)
    torch.testing.assert_close(rows, loop, rtol=0, atol=1e-12)
    moments = landscape.gradient_moments(model, loss, data)
    torch.testing.assert_close(moments.mean, loop.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(moments.variance, loop.var(0, unbiased=False), rtol=0, atol=1e-12)
    assert moments.samples == 7
