"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (UCI, 1,797 images).

It ships inside scikit-learn, so it needs no network and no files, which makes it the
dataset of every quick run and test. There is no official split, so one is fixed here
with :data:`~landscape.data.splits.SPLIT_SEED`: 20% of the images (stratified) are the
test set, then ``val_fraction`` of the rest is the validation set, and the remainder is
the training set. Pixels (0-16) are divided by 16 and then standardised with the
training split's mean and std.
"""

from __future__ import annotations

import numpy as np

from landscape.data.dataset import Dataset
from landscape.data.images import ImageArrays, build_image_splits
from landscape.data.splits import SPLIT_SEED, indices_fingerprint, stratified_holdout

TEST_FRACTION = 0.2
NUM_CLASSES = 10


def load_digits_dataset(
    name: str, splits: tuple[str, ...], *, normalize: bool, preprocess: str | None, val_fraction: float
) -> dict[str, Dataset]:
    """Load the requested splits of the digits dataset (see the module docstring for the rule)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    pool_idx, test_idx = _test_holdout(labels)
    source = {"file": "sklearn.datasets.load_digits", "sklearn_version": _sklearn_version()}
    meta = {
        "dataset": "digits",
        "source": "UCI optical recognition of handwritten digits, as shipped by scikit-learn",
        "scaling": "x / 16",
        "split": {
            "test": f"stratified {TEST_FRACTION:.0%} of all 1797 images, seed {SPLIT_SEED + 1}",
            "train_pool": "the remaining images",
            "test_indices_sha256": indices_fingerprint(test_idx),
        },
    }
    return build_image_splits(
        name=name,
        splits=splits,
        pool=lambda: ImageArrays(images[pool_idx], labels[pool_idx], [source]),
        test=lambda: ImageArrays(images[test_idx], labels[test_idx], [source]),
        num_classes=NUM_CLASSES,
        val_fraction=val_fraction,
        normalize=normalize,
        preprocess=preprocess,
        meta=meta,
    )


def _test_holdout(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # A different seed from the val split so the two hold-outs are independent draws.
    return stratified_holdout(labels, TEST_FRACTION, SPLIT_SEED + 1)


def digits_split_indices(labels: np.ndarray, val_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Indices into scikit-learn's digit order of the train, val and test splits.

    The same rule :func:`load_digits_dataset` applies (through
    :func:`~landscape.data.images.build_image_splits`), exposed for inspection.
    """
    labels = np.asarray(labels)
    pool_idx, test_idx = _test_holdout(labels)
    keep, held = stratified_holdout(labels[pool_idx], val_fraction, SPLIT_SEED)
    return {"train": pool_idx[keep], "val": pool_idx[held], "test": test_idx}


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__
