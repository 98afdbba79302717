"""CIFAR-10 from the python batches (``cifar-10-batches-py``), read WITHOUT running code.

The batches are Python pickles, and ``pickle.load`` on a file a user supplies would run
whatever callable the file names. :class:`RestrictedUnpickler` resolves a global only if
it is one of the few numpy functions that rebuild an array (``_reconstruct``,
``ndarray``, ``dtype``, and ``_frombuffer`` for protocol-5 pickles, under both the
``numpy.core`` and ``numpy._core`` module names); anything else, ``os.system`` say, is
refused with a :class:`UnsafePickleError` before it could be called. Everything else a
batch contains (dicts, lists, ints, str/bytes) needs no global at all.

The original batches were written by Python 2, so they are read with
``encoding="latin1"`` (numpy's documented way to load Python 2 arrays), and keys may be
str or bytes (``'data'`` or ``b'data'``). Each batch is a dict with ``data``: uint8
(N, 3072) holding the red, green and blue 32x32 planes in turn, and ``labels``: N ints
in 0-9. Training pool: ``data_batch_1`` ... ``data_batch_5`` (50,000 images); test set:
``test_batch`` (10,000).

Preprocessing follows Chaudhari et al. (2017, Sec. 5.3): either per-channel
standardisation, or ``preprocess="gcn-zca"`` (global contrast normalisation and ZCA
whitening fit on the training split, see :mod:`landscape.data.preprocess`). The whitening
matrix is recomputed on every load (about 30 s on 2 CPU cores for 45,000 x 3,072 images)
rather than cached on disk; ``meta`` records its SHA-256 so runs can be compared.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from landscape.data.dataset import Dataset
from landscape.data.download import require_files
from landscape.data.files import DataFormatError, file_record
from landscape.data.images import ImageArrays, build_image_splits

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)

#: The only globals a CIFAR batch may name: numpy's array reconstruction helpers.
ALLOWED_GLOBALS = frozenset(
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{prefix}.multiarray", "_reconstruct"),
        (f"{prefix}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype")}


class UnsafePickleError(DataFormatError):
    """A pickle asked for a global outside :data:`ALLOWED_GLOBALS`; nothing was executed."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What Python 3 writes for ``bytes`` under pickle protocol 2: ``_codecs.encode(str, 'latin1')``.

    Only that call is reproduced (a str to bytes, latin-1): any other codec is refused,
    so a pickle cannot reach the codec registry through this door.
    """
    if not isinstance(text, str) or encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise UnsafePickleError("The pickle calls _codecs.encode with something other than a latin-1 string; "
                                "it was refused unexecuted.")
    return text.encode("latin-1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts, lists, scalars and numpy arrays, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle written by Python 3
            return _latin1_encode
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"The pickle refers to {module}.{name}, which a CIFAR batch never contains; "
            "it was refused unexecuted, so use the original CIFAR-10 files."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("The pickle uses persistent ids, which a CIFAR batch never contains.")


def safe_unpickle(data: bytes, source: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; any failure is a DataFormatError."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except Exception as exc:  # a malformed pickle can raise almost anything
        raise DataFormatError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {exc}); fetch the file again."
        ) from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    path = Path(path)
    obj = safe_unpickle(path.read_bytes(), str(path))
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR batch.")
    entries = {_key(k): v for k, v in obj.items()}
    data, labels = entries.get("data"), entries.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise DataFormatError(f"{path} has no uint8 'data' array of shape (N, 3072).")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataFormatError(f"{path} has 'labels' that are not a list of integers.") from None
    if labels.shape != (data.shape[0],):
        raise DataFormatError(f"{path} has {data.shape[0]} images but labels of shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataFormatError(f"{path} has labels outside 0-9.")
    return data.reshape((-1, *IMAGE_SHAPE)), labels


def _key(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def load_cifar10(
    name: str,
    splits: tuple[str, ...],
    root: str | os.PathLike | None,
    *,
    normalize: bool,
    preprocess: str | None,
    val_fraction: float,
    download: bool,
) -> dict[str, Dataset]:
    """Load the requested splits of CIFAR-10 (see the module docstring)."""
    wanted = {batch: (batch,) for batch in (*TRAIN_BATCHES, TEST_BATCH)}
    paths = require_files("cifar10", wanted, root, download)
    meta = {
        "dataset": "cifar10",
        "format": "CIFAR-10 python batches, read with a restricted unpickler",
        "scaling": "x / 255",
        "split": {"test": "test_batch (10,000 images)", "train_pool": "data_batch_1..5 (50,000 images)"},
        "folder": str(paths[TEST_BATCH].parent),
    }
    return build_image_splits(
        name=name,
        splits=splits,
        pool=lambda: _read_batches([paths[b] for b in TRAIN_BATCHES]),
        test=lambda: _read_batches([paths[TEST_BATCH]]),
        num_classes=NUM_CLASSES,
        val_fraction=val_fraction,
        normalize=normalize,
        preprocess=preprocess,
        meta=meta,
    )


def _read_batches(paths: list[Path]) -> ImageArrays:
    images, labels = zip(*(read_batch(p) for p in paths))
    stacked = np.concatenate(images)
    scaled = stacked.astype(np.float32)
    scaled /= np.float32(255.0)
    return ImageArrays(scaled, np.concatenate(labels), [file_record(p) for p in paths])
