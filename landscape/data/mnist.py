"""MNIST and Fashion-MNIST from their four IDX files (gzipped or raw).

The paper's MNIST experiments (Chaudhari et al. 2017, Sec. 5.1-5.2) use the standard
60,000 / 10,000 split. Here the validation set is a fixed-seed stratified fraction of
the 60,000 training images (see :mod:`landscape.data.splits`), the test set is the
10,000 t10k images, and pixels are scaled to [0, 1] and then standardised with the
training split's mean and std.
"""

from __future__ import annotations

import os

import numpy as np

from landscape.data.dataset import Dataset
from landscape.data.download import require_files
from landscape.data.files import DataFormatError, file_record
from landscape.data.idx import idx_spellings, read_idx
from landscape.data.images import ImageArrays, build_image_splits

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NUM_CLASSES = 10


def load_mnist_family(
    name: str,
    canonical: str,
    splits: tuple[str, ...],
    root: str | os.PathLike | None,
    *,
    normalize: bool,
    preprocess: str | None,
    val_fraction: float,
    download: bool,
) -> dict[str, Dataset]:
    """Load ``canonical`` ("mnist" or "fashion-mnist"); ``name`` is what the user typed."""
    wanted = {logical: idx_spellings(stem) for logical, stem in IDX_STEMS.items()}
    paths = require_files(
        canonical, wanted, root, download,
        display=[f"{stem}[.gz]" for stem in IDX_STEMS.values()],
    )
    meta = {
        "dataset": canonical,
        "format": "IDX (LeCun et al. 1998)",
        "scaling": "x / 255",
        "split": {"test": "the 10,000 t10k images", "train_pool": "the 60,000 training images"},
        "folder": str(paths["train_images"].parent),
    }
    return build_image_splits(
        name=name,
        splits=splits,
        pool=lambda: _read_pair(paths["train_images"], paths["train_labels"]),
        test=lambda: _read_pair(paths["test_images"], paths["test_labels"]),
        num_classes=NUM_CLASSES,
        val_fraction=val_fraction,
        normalize=normalize,
        preprocess=preprocess,
        meta=meta,
    )


def _read_pair(images_path, labels_path) -> ImageArrays:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(
            f"{images_path} holds {images.dtype} values of shape {images.shape}, not uint8 images "
            "(N, rows, cols); is it the labels file?"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataFormatError(
            f"{labels_path} holds {labels.dtype} values of shape {labels.shape}, not uint8 labels (N,)."
        )
    if labels.shape[0] != images.shape[0]:
        raise DataFormatError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels; "
            "the two files do not belong together."
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataFormatError(f"{labels_path} has label {int(labels.max())}, outside 0-9.")
    scaled = images.astype(np.float32)[:, None, :, :]
    scaled /= np.float32(255.0)
    return ImageArrays(
        images=scaled,
        labels=labels.astype(np.int64),
        files=[file_record(images_path), file_record(labels_path)],
    )
