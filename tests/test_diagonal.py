"""The exact true-Fisher diagonal equals the diagonal of the dense GGN; the CLI exposes it."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature.diagonal import diagonal_fisher
from landscape.curvature.operators import FisherOperator, GGNOperator
from landscape.errors import LandscapeError


def test_exact_fisher_diagonal_is_the_ggn_diagonal_with_unequal_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 4))
    x, y = torch.randn(11, 1, 6, 6), torch.randint(0, 4, (11,))
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    ggn = GGNOperator(model, None, batches, dtype=torch.float64)
    dense = ggn @ torch.eye(ggn.shape[0], dtype=torch.float64)
    fisher = FisherOperator(model, None, batches, dtype=torch.float64, sample_chunk=3)
    exact = diagonal_fisher(fisher, exact_expectation=True)
    np.testing.assert_allclose(exact.numpy(), torch.diagonal(dense).numpy(), rtol=1e-10, atol=1e-15)
    # and it differs from the empirical diagonal (observed labels only)
    assert not torch.allclose(diagonal_fisher(fisher), exact, rtol=1e-3)


def test_exact_fisher_diagonal_refuses_sequence_outputs():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.out = nn.Linear(3, 5)

        def forward(self, tokens):
            return self.out(self.emb(tokens))

    tokens = torch.randint(0, 5, (4, 6))
    op = FisherOperator(Seq(), None, [(tokens, tokens)], dtype=torch.float64)
    with pytest.raises(LandscapeError, match="sequence"):
        diagonal_fisher(op, exact_expectation=True)


def _per_sample_reference(op):
    total = torch.zeros(op.shape[0], dtype=op.dtype)
    for index, ((x, y), w) in enumerate(zip(op.batches, op.weights)):
        labels = [y] if op.fisher_kind == "empirical" else list(op._sampled_labels()[index])
        for lab in labels:
            G = op.per_sample_gradients(x, lab)
            total += w * (G * G).mean(0) / len(labels)
    return total


def _conv_bn_net(c_in: int, c_mid: int, flat: int, classes: int) -> nn.Module:
    """Conv (stride 2, padding 1) + BatchNorm2d + max-pool, then Linear + BatchNorm1d: eval mode, random statistics."""
    model = nn.Sequential(nn.Conv2d(c_in, c_mid, 3, stride=2, padding=1), nn.BatchNorm2d(c_mid), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 5), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, classes))
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
    return model.eval()


@pytest.mark.parametrize("kind,conv_chunk", [("empirical", 128), ("mc", 128), ("empirical", 4)])
def test_layerwise_diagonal_equals_squared_per_sample_gradients(kind, conv_chunk, monkeypatch):
    """The one-backward layer-wise path (Linear, Conv2d with stride/padding, BatchNorm in eval mode);
    conv patches in sample chunks that split a batch (4 of 6) or not."""
    from landscape.curvature import diagonal
    from landscape.curvature.diagonal import _layerwise_diagonal

    monkeypatch.setattr(diagonal, "CONV_SAMPLE_CHUNK", conv_chunk)
    torch.manual_seed(1)
    model = _conv_bn_net(2, 3, 3 * 2 * 2, 4)
    x, y = torch.randn(9, 2, 8, 8), torch.randint(0, 4, (9,))
    op = FisherOperator(model, None, [(x[:6], y[:6]), (x[6:], y[6:])], kind=kind, mc_samples=2,
                        dtype=torch.float64)
    fast = _layerwise_diagonal(op)
    assert fast is not None
    np.testing.assert_allclose(fast.numpy(), _per_sample_reference(op).numpy(), rtol=1e-10, atol=1e-16)
    assert torch.equal(diagonal_fisher(op), fast)


def test_layerwise_diagonal_falls_back_for_shared_layers():
    from landscape.curvature.diagonal import _layerwise_diagonal

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 4)

        def forward(self, x):
            return self.layer(torch.relu(self.layer(x)))  # one layer called twice: per-call hooks would double count

    model = Twice()
    x, y = torch.randn(5, 4), torch.randint(0, 4, (5,))
    op = FisherOperator(model, None, [(x, y)], dtype=torch.float64)
    assert _layerwise_diagonal(op) is None
    np.testing.assert_allclose(diagonal_fisher(op).numpy(), _per_sample_reference(op).numpy(), rtol=1e-10)
    # the vmapped fallback of the exact (GGN) diagonal
    ggn = GGNOperator(model, None, [(x, y)], dtype=torch.float64)
    dense = ggn @ torch.eye(ggn.shape[0], dtype=torch.float64)
    np.testing.assert_allclose(diagonal_fisher(op, exact_expectation=True).numpy(), torch.diagonal(dense).numpy(),
                               rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("batched,chunk", [(True, None), (False, None), (True, 3)])
def test_layerwise_exact_expectation_is_the_ggn_diagonal(batched, chunk, monkeypatch):
    """One forward + one batched backward of the C columns of B (or one pass per class): diag of the dense GGN;
    with chunk 3 the batches of 4 and 3 samples go through in chunks of 3 + 1 and 3."""
    from landscape.curvature import diagonal

    if chunk is not None:
        monkeypatch.setattr(diagonal, "_ggn_chunk", lambda op, layers, x: min(chunk, x.shape[0]))

    torch.manual_seed(2)
    model = _conv_bn_net(1, 2, 2 * 2 * 2, 3)
    x, y = torch.randn(7, 1, 8, 8), torch.randint(0, 3, (7,))
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    ggn = GGNOperator(model, None, batches, dtype=torch.float64)
    dense = ggn @ torch.eye(ggn.shape[0], dtype=torch.float64)
    real = diagonal._ggn_batch
    taken = []

    def spy(*args):
        out = real(*args) if batched else False
        taken.append(out)
        return out

    monkeypatch.setattr(diagonal, "_ggn_batch", spy)
    fast = diagonal._layerwise_diagonal(FisherOperator(model, None, batches, dtype=torch.float64),
                                        exact_expectation=True)
    assert fast is not None and taken == [batched] * (3 if chunk == 3 else 2)
    # the chunk of the batched backward follows the byte budget: the whole batch here, 1 on a tiny budget
    op = FisherOperator(model, None, batches, dtype=torch.float64)
    layers = {m: mod for m, mod in diagonal._layer_of(op).values()}
    xs = torch.cat([b[0] for b in op.batches])
    if chunk is None:
        assert diagonal._ggn_chunk(op, layers, xs) == 7
        monkeypatch.setattr(diagonal, "GGN_CHUNK_BYTES", 1)
        assert diagonal._ggn_chunk(op, layers, xs) == 1
    np.testing.assert_allclose(fast.numpy(), torch.diagonal(dense).numpy(), rtol=1e-10, atol=1e-15)
