"""Kendall tau, its bootstrap interval and Jiang et al.'s granulated tau, against closed forms and scipy."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from landscape.flatness.correlation import granulated_kendall, kendall_tau, kendall_tau_ci


def test_tau_b_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, size=17).astype(float)  # many ties
        y = x + rng.integers(-2, 3, size=17)
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_tau_by_counting_pairs():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    pairs = list(itertools.combinations(range(5), 2))
    concordant = sum((x[i] - x[j]) * (y[i] - y[j]) > 0 for i, j in pairs)
    discordant = sum((x[i] - x[j]) * (y[i] - y[j]) < 0 for i, j in pairs)
    assert (concordant, discordant) == (8, 2)
    assert kendall_tau(x, y) == pytest.approx((concordant - discordant) / len(pairs))
    assert kendall_tau(x, x**3) == 1.0
    assert kendall_tau(x, -x) == -1.0
    assert math.isnan(kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_bootstrap_interval_brackets_tau_and_is_reproducible():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + 0.8 * rng.normal(size=30)
    a = kendall_tau_ci(x, y, seed=3)
    b = kendall_tau_ci(x, y, seed=3)
    assert a == b
    assert -1 <= a.low < a.tau < a.high <= 1
    assert a.tau == pytest.approx(stats.kendalltau(x, y).statistic)
    # perfectly ordered data: every resample is perfectly ordered too
    perfect = kendall_tau_ci(np.arange(10.0), np.arange(10.0) ** 2, seed=0)
    assert (perfect.tau, perfect.low, perfect.high) == (1.0, 1.0, 1.0)


def test_granulated_tau_separates_hyperparameters():
    """Error rises with the measure when only lr changes, falls when only batch size changes."""
    hyper, measure, error = [], [], []
    for lr, batch in itertools.product((0.01, 0.1, 1.0), (32, 64, 128)):
        hyper.append({"lr": lr, "batch_size": batch, "optimizer": "sgd"})
        m = np.log10(lr) + batch / 64
        measure.append(m)
        error.append(np.log10(lr) - batch / 64)  # same lr ordering, opposite batch ordering
    result = granulated_kendall(measure, error, hyper)
    assert set(result.psi) == {"lr", "batch_size"}  # optimizer never varies
    assert result.psi["lr"] == pytest.approx(1.0)
    assert result.psi["batch_size"] == pytest.approx(-1.0)
    assert result.groups == {"lr": 3, "batch_size": 3}
    assert result.overall == pytest.approx(0.0)


def test_granulated_tau_counts_tied_groups_as_zero_like_eq4():
    """Three batch-size groups: one ordered (+1), two whose errors tie: Eq. (4) gives (1 + 0 + 0) / 3."""
    hyper = [{"lr": lr, "batch_size": b} for b in (32, 64, 128) for lr in (0.1, 1.0)]
    measure = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    error = [0.1, 0.2, 0.3, 0.3, 0.4, 0.4]
    result = granulated_kendall(measure, error, hyper, varied=["lr"])
    assert result.psi["lr"] == pytest.approx(1 / 3)
    assert result.groups["lr"] == 3


def test_granulated_tau_pools_seeds_into_one_group():
    """Seeds are repeats: two optimizers x seeds that do not line up still form one optimizer group."""
    hyper = [{"optimizer": "sgd"}, {"optimizer": "sgd"}, {"optimizer": "sam"}, {"optimizer": "sam"}]
    measure = [3.0, 4.0, 1.0, 2.0]  # sgd sharper
    error = [0.30, 0.40, 0.10, 0.20]  # and worse
    result = granulated_kendall(measure, error, hyper)
    assert set(result.psi) == {"optimizer"}
    # one group of 4 models: all 6 pairs concordant
    assert result.psi["optimizer"] == pytest.approx(1.0) and result.groups["optimizer"] == 1
