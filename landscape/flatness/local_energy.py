"""Local energy: how much the training loss and error rise under random weight noise.

Pittorino et al. 2021 (Sec. 3) define the local energy of a minimum w as

    delta E(sigma) = E_z[ E_train(w * (1 + sigma z)) ] - E_train(w),     z ~ N(0, I),

the average increase of the training error (or loss) when every weight is multiplied by
independent noise of relative size sigma. It is cheap (forward passes only), it tracks
the local entropy, and it correlates with test error across optimizers. Flat minima have
small delta E over a wide range of sigma.

This implementation:

* evaluates loss AND error, on every split it is given (train and test by default in
  the CLI), in evaluation mode with BatchNorm statistics left untouched;
* uses common random numbers: the same M draws z_1..z_M for every sigma, so the curve is
  smooth in sigma and delta E(0) is exactly 0;
* reports the mean over the M draws with the Monte-Carlo standard deviation and the
  standard error of the mean (std / sqrt(M));
* ``noise="multiplicative"`` (default) is exactly invariant under the layer rescaling of
  ReLU networks (Dinh et al. 2017); ``"additive"`` (w + sigma z) is not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.flatness.network import NOISES, NetworkFunction, as_splits
from landscape.io import to_plain

__all__ = ["LocalEnergyResult", "local_energy"]

METRICS = ("loss", "error")


@dataclass
class LocalEnergyResult:
    """delta E(sigma) per split and metric: ``delta[split][metric]`` has one value per sigma.

    ``base[split][metric]`` is E(w) itself; ``std`` the Monte-Carlo standard deviation over
    the ``samples`` draws, ``stderr`` = std / sqrt(samples); ``values[split][metric]`` the
    raw E(w') per (sigma, draw).
    """

    sigmas: np.ndarray
    noise: str
    samples: int
    base: dict
    delta: dict
    std: dict
    stderr: dict
    values: dict
    perturbed: dict
    invariant_to_rescaling: bool
    data_samples: dict = field(default_factory=dict)
    seed: int = 0
    wall_s: float = 0.0
    evaluations: int = 0
    warnings: list[str] = field(default_factory=list)

    def flatter_than(self, other: LocalEnergyResult, *, split: str = "train", metric: str = "loss") -> float:
        """Fraction of the shared sigmas (> 0) where this delta E is below ``other``'s."""
        mine = dict(zip(self.sigmas.tolist(), np.asarray(self.delta[split][metric]).tolist()))
        theirs = dict(zip(other.sigmas.tolist(), np.asarray(other.delta[split][metric]).tolist()))
        shared = [s for s in mine if s in theirs and s > 0]
        if not shared:
            raise LandscapeError("The two local-energy curves share no sigma > 0.")
        return sum(mine[s] < theirs[s] for s in shared) / len(shared)

    def to_dict(self) -> dict:
        return to_plain(asdict(self))


def _check_sigmas(sigmas) -> np.ndarray:
    try:
        values = np.asarray([float(s) for s in np.atleast_1d(np.asarray(sigmas, dtype=object))], dtype=np.float64)
    except (TypeError, ValueError):
        raise LandscapeError(f"sigmas must be non-negative numbers, got {sigmas!r}.") from None
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise LandscapeError(f"sigmas must be a non-empty list of finite numbers >= 0, got {values.tolist()}.")
    return values


def local_energy(
    model: nn.Module,
    data,
    sigmas: Sequence[float],
    *,
    noise: str = "multiplicative",
    samples: int = 20,
    seed: int = 0,
    params: Sequence[str] | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    loss_fn: Callable | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LocalEnergyResult:
    """delta E(sigma) = E_z[E(w * (1 + sigma z))] - E(w) for loss and error (Pittorino et al. 2021).

    ``data``: one data set (a :class:`~landscape.data.Dataset`, a pair of tensors, or
    batches), reported as ``"train"``, or a mapping such as ``{"train": ..., "test": ...}``.
    ``samples`` is M, the number of noise draws per sigma (shared across sigmas).
    ``params`` restricts the noise to some parameter tensors (default: all trainable
    ones); which were perturbed is recorded. ``progress(done, total)`` is called after
    each draw. Common random numbers: draw m uses the same z at every sigma.
    """
    start = time.perf_counter()
    if noise not in NOISES:
        raise LandscapeError(f"noise must be one of {', '.join(NOISES)}, got '{noise}'.")
    if int(samples) < 1:
        raise LandscapeError(f"samples (noise draws per sigma) must be >= 1, got {samples}.")
    samples = int(samples)
    sigma_values = _check_sigmas(sigmas)
    net = NetworkFunction(model, params=params, dtype=dtype, device=device, loss_fn=loss_fn)
    splits = {name: net.prepare(batches) for name, batches in as_splits(data, batch_size).items()}

    base = {}
    for name, batches in splits.items():
        loss, error = net.evaluate(net.base, batches)
        base[name] = {"loss": loss, "error": error}
    warnings = []
    if any(not math.isfinite(b["loss"]) for b in base.values()):
        warnings.append("The loss at the unperturbed weights is not finite: the checkpoint may have diverged.")

    # values[split][metric][sigma index, draw]
    values = {name: {m: np.empty((sigma_values.size, samples)) for m in METRICS} for name in splits}
    generator = torch.Generator().manual_seed(int(seed))
    for draw in range(samples):
        z = net.draw(generator)
        for i, sigma in enumerate(sigma_values):
            params_now = net.perturb(z, float(sigma), noise)  # sigma = 0 reproduces w exactly: w (1 + 0 z) = w
            for name, batches in splits.items():
                loss, error = net.evaluate(params_now, batches)
                values[name]["loss"][i, draw] = loss
                values[name]["error"][i, draw] = error
        if progress is not None:
            progress(draw + 1, samples)

    delta, std, stderr = {}, {}, {}
    for name in splits:
        delta[name], std[name], stderr[name] = {}, {}, {}
        for metric in METRICS:
            raw = values[name][metric]
            # mean of the differences (not difference of means): exactly 0 at sigma = 0
            delta[name][metric] = (raw - base[name][metric]).mean(axis=1)
            spread = raw.std(axis=1, ddof=1) if samples > 1 else np.full(sigma_values.size, np.nan)
            std[name][metric] = spread
            stderr[name][metric] = spread / math.sqrt(samples)
    if samples < 2:
        warnings.append("With one noise draw per sigma there is no Monte-Carlo spread: std and stderr are NaN; "
                        "use samples >= 2 for error bars.")
    if np.any(~np.isfinite(np.concatenate([values[s]["loss"].ravel() for s in splits]))):
        warnings.append("Some perturbed losses are not finite (sigma too large for this network); "
                        "their means are inf/NaN.")
    return LocalEnergyResult(
        sigmas=sigma_values,
        noise=noise,
        samples=samples,
        base=base,
        delta=delta,
        std=std,
        stderr=stderr,
        values=values,
        perturbed=net.description(),
        invariant_to_rescaling=noise == "multiplicative",
        data_samples={name: sum(int(x.shape[0]) for x, _ in batches) for name, batches in splits.items()},
        seed=int(seed),
        wall_s=time.perf_counter() - start,
        evaluations=net.evaluations,
        warnings=warnings,
    )
