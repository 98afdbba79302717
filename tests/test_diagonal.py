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
