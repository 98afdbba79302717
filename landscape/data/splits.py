"""Deterministic hold-out splits.

Splits use a FIXED seed (:data:`SPLIT_SEED`) that has nothing to do with any training
seed: two runs with different training seeds must be evaluated on the same validation
images, otherwise their validation errors are not comparable. The split is stratified:
each class gives up the same fraction of its examples (largest-remainder rounding makes
the total exactly ``round(fraction * n)``), so a small validation set keeps the class
balance of the training set.

Both returned index arrays are sorted, so the kept examples stay in file order.

:func:`select_samples` picks the N samples a curvature or flatness measurement averages
over (the first N, or a seeded subset): one rule shared by those stages.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from landscape.data.files import DatasetArgumentError
from landscape.errors import LandscapeError

#: The seed of every dataset split; changing it changes which examples are validation data.
SPLIT_SEED = 2017


def check_fraction(value: float, what: str = "val_fraction") -> float:
    """Validate a hold-out fraction in [0, 1)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DatasetArgumentError(f"{what} must be a number in [0, 1), got {value!r}.") from None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise DatasetArgumentError(f"{what} must be in [0, 1), got {value}.")
    return value


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into (kept, held_out) with ``round(fraction*n)`` held out.

    Class k contributes ``floor(q_k)`` or ``ceil(q_k)`` examples, ``q_k = fraction * n_k``;
    the leftover units go to the classes with the largest fractional parts (ties: lower
    class first). Within a class the held-out examples are a uniform random subset drawn
    with ``numpy.random.Generator(PCG64(seed))``.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    n_held = int(round(fraction * n))
    classes, counts = np.unique(labels, return_counts=True)
    quotas = fraction * counts.astype(np.float64)
    take = np.floor(quotas).astype(np.int64)
    shortfall = n_held - int(take.sum())
    if shortfall > 0:
        order = np.lexsort((np.arange(len(classes)), -(quotas - take)))
        take[order[:shortfall]] += 1
    rng = np.random.Generator(np.random.PCG64(seed))
    held: list[np.ndarray] = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        held.append(members[rng.permutation(members.size)[:k]])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx.astype(np.int64)


def indices_fingerprint(indices: np.ndarray) -> str:
    """SHA-256 of an index array (as little-endian int64), recorded so a changed split shows."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def select_samples(dataset, n: int, seed: int | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The first ``n`` samples in dataset order, or a seeded random subset."""
    total = len(dataset)
    if n > total:
        raise LandscapeError(f"--samples {n} exceeds the {total} samples of the '{dataset.split}' split.")
    if seed is None:
        index = torch.arange(n)
        rule = f"first {n} of the '{dataset.split}' split in dataset order"
    else:
        index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        rule = f"{n} of the '{dataset.split}' split drawn with seed {seed}"
    return dataset.inputs[index], dataset.targets[index], {"rule": rule, "indices_head": index[:10].tolist()}
