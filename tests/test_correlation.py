"""Kendall tau, its bootstrap interval and Jiang et al.'s granulated tau, against closed forms and scipy."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from landscape.flatness.correlation import granulated_kendall, kendall_tau, kendall_tau_a, kendall_tau_ci


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


# ---- edges and the bootstrap recomputed (what mutation testing found unchecked) -------------------------


def tau_a_by_pairs(x, y):
    pairs = list(itertools.combinations(range(len(x)), 2))
    return sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs) / len(pairs)


def test_tau_on_two_models_on_integers_and_without_the_non_finite_ones():
    assert kendall_tau([1, 2], [3, 5]) == 1.0 and kendall_tau([1, 2], [5, 3]) == -1.0
    assert kendall_tau_a([1, 2], [5, 3]) == -1.0
    assert math.isnan(kendall_tau([1.0], [2.0])) and math.isnan(kendall_tau_a([1.0], [2.0]))
    x = np.array([1.0, np.nan, 3.0, 2.0, np.inf, 5.0])
    y = np.array([2.0, 0.0, 1.0, 4.0, 3.0, -np.inf])
    keep = np.isfinite(x) & np.isfinite(y)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x[keep], y[keep]).statistic, abs=1e-12)
    with pytest.raises(ValueError):
        kendall_tau([1.0, 2.0], [1.0, 2.0, 3.0])


def test_tau_a_counts_ties_as_zero_over_all_pairs():
    rng = np.random.default_rng(4)
    for _ in range(10):
        x = rng.integers(0, 4, size=9)
        y = rng.integers(0, 4, size=9)
        assert kendall_tau_a(x, y) == pytest.approx(tau_a_by_pairs(x, y), abs=1e-12)


def test_bootstrap_interval_is_the_percentile_interval_of_resampled_models():
    """Recomputed from the documented procedure: numpy's default_rng(seed), n models drawn with replacement
    per resample, scipy's tau-b of each, resamples with an undefined tau dropped, then the percentiles."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=7).astype(float)  # ties: some resamples are constant in x
    y = x + rng.normal(size=7)
    result = kendall_tau_ci(list(x) + [np.nan], list(y) + [1.0], confidence=0.8, n_boot=300, seed=9)
    draws_rng = np.random.default_rng(9)
    draws = []
    for _ in range(300):
        idx = draws_rng.integers(0, 7, 7)
        tau = stats.kendalltau(x[idx], y[idx]).statistic
        if math.isfinite(tau):
            draws.append(tau)
    assert 0 < len(draws) < 300
    low, high = np.quantile(draws, [0.1, 0.9])
    assert (result.low, result.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert (result.n, result.n_boot, result.confidence, result.seed) == (7, len(draws), 0.8, 9)
    assert result.to_dict() == {"tau": result.tau, "ci_low": result.low, "ci_high": result.high, "confidence": 0.8,
                                "n": 7, "n_boot": len(draws), "seed": 9, "ci_method": "percentile bootstrap over models"}


@pytest.mark.parametrize("x, y, n", [([1.0, 2.0], [2.0, 1.0], 2), ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], 4)])
def test_bootstrap_interval_is_undefined_for_two_models_or_an_undefined_tau(x, y, n):
    result = kendall_tau_ci(x, y, confidence=0.9, n_boot=50, seed=4)
    assert math.isnan(result.low) and math.isnan(result.high)
    assert (result.n, result.n_boot, result.confidence, result.seed) == (n, 0, 0.9, 4)
    assert result.tau == kendall_tau(x, y) or (math.isnan(result.tau) and math.isnan(kendall_tau(x, y)))


def test_granulated_tau_edges_and_its_record():
    hyper = [{"lr": 0.1, "wd": 0}, {"lr": 1.0, "wd": 0}, {"lr": 0.1, "wd": 1}, {"lr": 1.0, "wd": 1},
             {"lr": 3.0, "wd": 1}]
    measure = [1.0, 2.0, 1.0, 3.0, np.nan]  # the last model is left out
    error = [0.1, 0.2, 0.3, 0.1, 0.5]
    result = granulated_kendall(measure, error, hyper)
    # lr: group wd=0 -> +1, group wd=1 -> -1; wd: group lr=0.1 -> 0 (measure tied), group lr=1.0 -> -1
    assert result.psi == {"lr": 0.0, "wd": -0.5} and result.groups == {"lr": 2, "wd": 2}
    assert result.overall == -0.25
    only = granulated_kendall(measure, error, hyper, varied=["lr"])
    assert set(only.psi) == {"lr"}
    single = granulated_kendall([1.0, 2.0], [0.1, 0.2], [{"lr": 0.1, "wd": 0}, {"lr": 0.1, "wd": 1}], varied=["lr"])
    assert math.isnan(single.psi["lr"]) and single.groups["lr"] == 0 and math.isnan(single.overall)
    assert single.to_dict()["groups"] == {"lr": 0}
    assert result.to_dict() == {"psi": result.psi, "groups": result.groups, "Psi": result.overall}
    with pytest.raises(ValueError):
        granulated_kendall([1.0], [0.1, 0.2], [{}, {}])


def test_unsigned_integer_inputs_are_compared_as_numbers():
    """Differences of uint8 values wrap around (1 - 2 = 255): every statistic must compare the numbers."""
    x = np.array([1, 2, 3, 4, 5], dtype=np.uint8)
    y = np.array([10, 20, 30, 50, 40], dtype=np.uint8)
    assert kendall_tau(x, y) == pytest.approx(0.8) and kendall_tau_a(x, y) == pytest.approx(0.8)
    assert kendall_tau_ci(x, y, n_boot=20) == kendall_tau_ci(x.astype(float), y.astype(float), n_boot=20)
    hyper = [{"lr": lr} for lr in range(5)]
    assert granulated_kendall(x, y, hyper).psi["lr"] == pytest.approx(0.8)
    assert granulated_kendall(y, x, hyper).psi["lr"] == pytest.approx(0.8)


def test_bootstrap_defaults_three_models_and_no_resamples():
    x, y = np.arange(10.0), np.arange(10.0) ** 2 * np.where(np.arange(10) % 3, 1, -1)
    default = kendall_tau_ci(x, y)
    assert default == kendall_tau_ci(x, y, confidence=0.95, n_boot=2000, seed=0)
    assert (default.confidence, default.n_boot, default.seed) == (0.95, 2000, 0)  # no resample of 10 is constant
    three = kendall_tau_ci([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], n_boot=200, seed=1)
    assert math.isfinite(three.low) and math.isfinite(three.high) and three.n == 3
    none = kendall_tau_ci(x, y, n_boot=0)
    assert math.isnan(none.low) and math.isnan(none.high) and none.n_boot == 0 and none.tau == default.tau


def test_granulated_tau_leaves_out_missing_measures_and_warns_about_nothing():
    import warnings

    hyper = [{"lr": lr} for lr in (0.1, 0.2, 0.3, 0.4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty mean would warn: none is taken
        result = granulated_kendall([1.0, None, 2.0, 3.0], [0.3, 0.1, None, 0.2], hyper)
        assert result.psi == {"lr": -1.0} and result.groups == {"lr": 1}  # models 0 and 3 remain
        single = granulated_kendall([1.0, 2.0], [0.1, 0.2], [{"lr": 0.1, "wd": 0}, {"lr": 0.1, "wd": 1}],
                                    varied=["lr"])
        assert math.isnan(single.psi["lr"]) and math.isnan(single.overall)
