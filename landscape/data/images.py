"""Turning raw image arrays into a :class:`Dataset`: validation carve-out, then preprocessing.

Shared by digits, MNIST, Fashion-MNIST and CIFAR-10. The order matters and is the same
for all of them:

1. the validation examples are carved out of the training pool with the fixed-seed
   stratified split of :mod:`landscape.data.splits` (never from the test set);
2. preprocessing statistics (per-channel mean/std, or the GCN+ZCA whitening matrix)
   are fit on what remains, the training split, and applied unchanged to the split
   that was asked for.

Loaders hand in the training pool and the test set as callables so that, for example,
``split="test", normalize=False`` never reads the 47 MB of MNIST training images.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from landscape.data.dataset import Dataset
from landscape.data.files import DatasetArgumentError
from landscape.data.preprocess import (
    GCN_MIN_DIVISOR,
    GCN_SCALE,
    GCN_SQRT_BIAS,
    ZCA_EPSILON,
    channel_stats,
    fit_zca,
    global_contrast_normalize,
    standardize,
)
from landscape.data.splits import SPLIT_SEED, indices_fingerprint, stratified_holdout

PREPROCESS_CHOICES = (None, "gcn-zca")


@dataclass
class ImageArrays:
    """Images float32 (N, C, H, W) already scaled to [0, 1], labels int64 (N,), files read."""

    images: np.ndarray
    labels: np.ndarray
    files: list[dict]


def check_preprocess(preprocess: str | None) -> str | None:
    """Normalise the ``preprocess`` option ("none" means None)."""
    if preprocess is not None and not isinstance(preprocess, str):
        raise DatasetArgumentError(f"preprocess must be a string such as 'gcn-zca', got {preprocess!r}.")
    if preprocess is None or preprocess.strip().lower() in ("", "none"):
        return None
    key = preprocess.strip().lower()
    if key not in PREPROCESS_CHOICES:
        raise DatasetArgumentError(
            f"Unknown preprocess '{preprocess}': use 'gcn-zca' or leave it unset."
        )
    return key


def build_image_splits(
    *,
    name: str,
    splits: tuple[str, ...],
    pool: Callable[[], ImageArrays],
    test: Callable[[], ImageArrays],
    num_classes: int,
    val_fraction: float,
    normalize: bool,
    preprocess: str | None,
    meta: dict,
) -> dict[str, Dataset]:
    """Assemble the requested splits; ``pool`` is the training pool (train + val), ``test``
    the test set. Files are read and statistics fit once, however many splits are asked for."""
    meta = dict(meta)
    scaling = meta.pop("scaling")
    loader_split_meta = meta.pop("split", {})
    needs_pool = any(s in ("train", "val") for s in splits) or normalize or preprocess is not None
    pool_arrays = keep = held = None
    if needs_pool:
        pool_arrays = pool()
        keep, held = stratified_holdout(pool_arrays.labels, val_fraction, SPLIT_SEED)
        if keep.size == 0:
            raise DatasetArgumentError(
                f"val_fraction={val_fraction} leaves no training examples in {name}; use a smaller value."
            )
        if "val" in splits and held.size == 0:
            raise DatasetArgumentError(
                f"The val split of {name} is empty with val_fraction={val_fraction}; pass a value above 0."
            )
    test_arrays = test() if "test" in splits else None

    fit = pool_arrays.images[keep] if (normalize or preprocess is not None) else None
    transform, preprocessing = _fit_preprocessing(fit, normalize, preprocess)
    preprocessing = {"scale_to_unit_interval": scaling, **preprocessing}

    out: dict[str, Dataset] = {}
    for split in splits:
        # The test split names the training files only when its preprocessing was fit on them.
        files = list(pool_arrays.files) if split != "test" or fit is not None else []
        if split == "test":
            files += [record for record in test_arrays.files if record not in files]
            images, labels, chosen = test_arrays.images, test_arrays.labels, None
        else:
            chosen = keep if split == "train" else held
            images = fit if split == "train" and fit is not None else pool_arrays.images[chosen]
            labels = pool_arrays.labels[chosen]
        images = transform(images)
        split_meta = {
            **loader_split_meta,
            "val_rule": "stratified random hold-out from the training pool (never from test)",
            "seed": SPLIT_SEED,
            "rng": "numpy.random.Generator(PCG64(seed))",
            "val_fraction": val_fraction,
        }
        if split == "test":
            split_meta["sizes"] = {"test": int(images.shape[0])}
        else:
            split_meta["sizes"] = {"train": int(keep.size), "val": int(held.size)}
        if chosen is not None:
            split_meta["indices_sha256"] = indices_fingerprint(chosen)
        out[split] = Dataset(
            name=name,
            split=split,
            inputs=torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
            targets=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            num_classes=num_classes,
            task="classification",
            meta={**meta, "files": files, "split": split_meta,
                  "preprocessing": copy.deepcopy(preprocessing), "num_examples": int(images.shape[0])},
        )
    return out


def _fit_preprocessing(
    fit: np.ndarray | None, normalize: bool, preprocess: str | None
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """Fit the preprocessing on the training split; return the transform and its record."""
    if preprocess == "gcn-zca":
        flat_fit = global_contrast_normalize(fit.reshape(fit.shape[0], -1))
        zca = fit_zca(flat_fit, ZCA_EPSILON)

        def whiten(images: np.ndarray) -> np.ndarray:
            if images is fit:  # the training split: its GCN is already computed
                flat = flat_fit
            else:
                flat = global_contrast_normalize(images.reshape(images.shape[0], -1))
            return zca.apply(flat).reshape(images.shape)

        info = {
            "gcn": {"scale": GCN_SCALE, "sqrt_bias": GCN_SQRT_BIAS, "min_divisor": GCN_MIN_DIVISOR,
                    "per": "image (over all pixels and channels)"},
            "zca": {"epsilon": ZCA_EPSILON, "fit_on": "train split", "n_fit": int(fit.shape[0]),
                    "covariance": "(X - m)^T (X - m) / N",
                    "matrix": "U diag((s + epsilon)^-1/2) U^T",
                    "matrix_sha256": _sha256(zca.matrix)},
            "reference": "Goodfellow et al. 2013 (maxout); Chaudhari et al. 2017 Sec. 5.3",
        }
        return whiten, {"gcn_zca": info, "normalize": None,
                        "note": "gcn-zca replaces per-channel standardisation"}
    if normalize:
        mean, std = channel_stats(fit)
        record = {
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "fit_on": "train split",
            "formula": "(x - mean_c) / std_c per channel c",
        }
        return (lambda images: standardize(images, mean, std)), {"normalize": record}
    return (lambda images: images), {"normalize": None}


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f8").tobytes()).hexdigest()
