"""Rank correlation between a flatness measure and test error over a population of models.

Pittorino et al. 2021 and Jiang et al. 2019 ("Fantastic generalization measures and where
to find them", Sec. 4) judge a measure by Kendall's rank correlation with the
generalization of many trained networks:

* :func:`kendall_tau` is tau-b (ties in either variable handled as in scipy):
  ``tau = (C - D) / sqrt((P - T_x)(P - T_y))`` over all pairs, C/D concordant/discordant,
  ``T_x``/``T_y`` pairs tied in x/y, P the number of pairs.
* :func:`kendall_tau_ci` adds a percentile-bootstrap confidence interval over models
  (resampling models, not pairs, because pairs are not independent).
* :func:`granulated_kendall` is Jiang et al.'s Eq. (4)-(5): for each varied hyper-parameter
  i, psi_i = (1/m_i) sum over the m_i groups of models that agree on all the OTHER
  varied hyper-parameters (so only hyper-parameter i varies inside a group) of the
  group's tau; Psi is the mean of the psi_i. Inside a group tau is Jiang's Eq. (2),
  the sign-based tau-a (ties count 0, a group whose errors are all tied contributes 0
  and still counts in m_i), so psi is not inflated by dropping tied groups. Seeds are
  repeats, not hyper-parameters: models that differ only by seed fall in the same
  group. It asks "when I change only this knob, does the measure move with the
  error?", which a pooled tau can hide.

The pooled :func:`kendall_tau` is tau-b (scipy's default), the usual choice when
ties are rare; the granulated one follows the paper it comes from.

These are statistics over results already on disk; nothing here trains or measures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["KendallResult", "kendall_tau", "kendall_tau_a", "kendall_tau_ci", "granulated_kendall"]


def _tau_b_from_indices(x: np.ndarray, y: np.ndarray) -> float:
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(x.size, 1)
    sx, sy = dx[iu], dy[iu]
    num = float(np.sum(sx * sy))
    den = math.sqrt(float(np.count_nonzero(sx)) * float(np.count_nonzero(sy)))
    return num / den if den > 0 else float("nan")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equal-length sequences; NaN when either is constant or n < 2."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau needs two sequences of equal length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return float("nan")
    return _tau_b_from_indices(x, y)


def kendall_tau_a(x: Sequence[float], y: Sequence[float]) -> float:
    """Jiang et al. 2019 Eq. (2): (1/P) sum over pairs of sign(dx) sign(dy); ties count 0."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size < 2:
        return float("nan")
    iu = np.triu_indices(x.size, 1)
    return float(np.mean(np.sign(x[:, None] - x[None, :])[iu] * np.sign(y[:, None] - y[None, :])[iu]))


@dataclass(frozen=True)
class KendallResult:
    tau: float
    low: float
    high: float
    confidence: float
    n: int
    n_boot: int
    seed: int

    def to_dict(self) -> dict:
        return {"tau": self.tau, "ci_low": self.low, "ci_high": self.high, "confidence": self.confidence,
                "n": self.n, "n_boot": self.n_boot, "seed": self.seed, "ci_method": "percentile bootstrap over models"}


def kendall_tau_ci(x, y, *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> KendallResult:
    """Tau-b with a percentile-bootstrap interval (models resampled with replacement)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    tau = kendall_tau(x, y)
    if x.size < 3 or not math.isfinite(tau):
        return KendallResult(tau, float("nan"), float("nan"), confidence, int(x.size), 0, seed)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, x.size, x.size)
        value = _tau_b_from_indices(x[idx], y[idx])
        if math.isfinite(value):
            draws.append(value)
    alpha = (1 - confidence) / 2
    low, high = (np.quantile(draws, [alpha, 1 - alpha]) if draws else (float("nan"), float("nan")))
    return KendallResult(tau, float(low), float(high), confidence, int(x.size), len(draws), seed)


@dataclass
class GranulatedResult:
    psi: dict = field(default_factory=dict)  # hyper-parameter -> mean tau over its groups
    groups: dict = field(default_factory=dict)  # hyper-parameter -> number of groups used
    overall: float = float("nan")  # Psi: mean of the psi_i that are defined

    def to_dict(self) -> dict:
        return {"psi": self.psi, "groups": self.groups, "Psi": self.overall}


def granulated_kendall(measure: Sequence[float], error: Sequence[float],
                       hyperparameters: Sequence[Mapping[str, object]],
                       varied: Sequence[str] | None = None) -> GranulatedResult:
    """Jiang et al. 2019 Eq. (4)-(5): per hyper-parameter, tau-a averaged over the groups where only it varies.

    ``hyperparameters[j]`` holds model j's settings (leave the seed out: models that
    differ only by seed belong to the same group). ``varied`` defaults to every key that
    takes more than one value. A group agrees on every other key given; a group
    needs two models that differ in hyper-parameter i to say anything, so m_i counts the
    groups with at least two distinct values of i. Models with a non-finite measure or
    error are left out.
    """
    measure = np.asarray(measure, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    if not (len(measure) == len(error) == len(hyperparameters)):
        raise ValueError("granulated_kendall needs one measure value, one error and one settings dict per model")
    keep = [j for j in range(len(measure)) if np.isfinite(measure[j]) and np.isfinite(error[j])]
    keys = sorted({k for h in hyperparameters for k in h})
    if varied is None:
        varied = [k for k in keys if len({repr(hyperparameters[j].get(k)) for j in keep}) > 1]
    result = GranulatedResult()
    for name in varied:
        others = [k for k in keys if k != name]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for j in keep:
            groups[tuple(repr(hyperparameters[j].get(k)) for k in others)].append(j)
        taus = [kendall_tau_a(measure[members], error[members]) for members in groups.values()
                if len({repr(hyperparameters[j].get(name)) for j in members}) > 1]
        result.psi[name] = float(np.mean(taus)) if taus else float("nan")
        result.groups[name] = len(taus)
    defined = [v for v in result.psi.values() if math.isfinite(v)]
    result.overall = float(np.mean(defined)) if defined else float("nan")
    return result
