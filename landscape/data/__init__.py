"""Datasets: a registry of names, file readers, verified downloads, deterministic splits.

Usage::

    from landscape.data import load_dataset, load_splits
    train = load_dataset("digits")                      # embedded, no files needed
    val = load_dataset("mnist", "val", root="~/data")   # IDX files in ~/data or ~/data/mnist
    text = load_dataset("text:war-and-peace.txt", "test", seq_len=50)
    cifar = load_splits("cifar10", preprocess="gcn-zca")  # ZCA fit once for all three

Names: ``digits`` (scikit-learn's 8x8 digits, the embedded default), ``mnist``,
``fashion-mnist``, ``cifar10``, ``ptb`` (word level) and ``text:PATH`` (character level
from any UTF-8 file). Files are looked for in :func:`data_search_dirs` order and, for
the four public datasets, downloaded (checksum verified) when missing, into ``root``,
else ``$LANDSCAPE_DATA``, else ``~/.cache/landscape/data``. Every split is
deterministic: the same call returns identical tensors, and the validation examples do
not depend on any training seed. Each :class:`Dataset` records in ``meta`` the files it
read (with SHA-256), the split rule and the preprocessing with its fitted parameters.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from landscape.data import files as _files
from landscape.data.cifar import load_cifar10
from landscape.data.dataset import SPLITS, Dataset
from landscape.data.digits import load_digits_dataset
from landscape.data.files import DataFormatError, DatasetArgumentError
from landscape.data.images import check_preprocess
from landscape.data.mnist import load_mnist_family
from landscape.data.ptb import load_ptb
from landscape.data.splits import check_fraction
from landscape.data.text import VOCAB_CHOICES, load_text

__all__ = [
    "Dataset",
    "DataFormatError",
    "DatasetArgumentError",
    "data_search_dirs",
    "dataset_names",
    "load_dataset",
    "load_splits",
]

TEXT_PREFIX = "text:"
IMAGE_DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "penn-treebank": "ptb",
}


def dataset_names() -> list[str]:
    """The registry names; ``text:PATH`` stands for any UTF-8 text file."""
    return [*IMAGE_DATASETS, "ptb", f"{TEXT_PREFIX}PATH"]


def canonical_name(name: str) -> str:
    """The registry key of a user-given name ("Fashion_MNIST" -> "fashion-mnist");
    ``text:PATH`` names are returned unchanged."""
    if not isinstance(name, str) or not name.strip():
        raise DatasetArgumentError(f"A dataset name must be a non-empty string; choose one of {_choices()}.")
    if name.startswith(TEXT_PREFIX):
        if not name[len(TEXT_PREFIX):].strip():
            raise DatasetArgumentError("text: needs a file path after the colon, e.g. text:book.txt.")
        return name
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in (*IMAGE_DATASETS, "ptb"):
        raise DatasetArgumentError(f"Unknown dataset '{name}': choose one of {_choices()}.")
    return key


def data_search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for ``name``'s files, in order (empty for embedded ``digits``).

    For each base folder (``root``, then ``$LANDSCAPE_DATA``, then a system folder such
    as Debian's ``/usr/share/datasets/fashion-mnist``, then the download cache
    ``~/.cache/landscape/data``) the folder itself and its usual sub-folders are listed.
    For ``text:PATH``: the working directory, ``root`` and ``$LANDSCAPE_DATA``.
    """
    key = canonical_name(name)
    if key.startswith(TEXT_PREFIX):
        bases = [Path.cwd(), root, os.environ.get(_files.DATA_ENV)]
        return [Path(b).expanduser() for b in bases if b]
    return _files.data_search_dirs(key, root)


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    normalize: bool = True,
    preprocess: str | None = None,
    val_fraction: float = 0.1,
    seq_len: int | None = None,
    download: bool = True,
    vocab: str = "file",
) -> Dataset:
    """Load one split of a registered dataset.

    Args:
        name: a name from :func:`dataset_names`, or ``text:PATH``.
        split: "train", "val" or "test".
        root: a folder to search first (the CLI's ``--data-dir``) and to download into.
        normalize: images only: standardise each channel with the training split's
            mean and std (recorded in ``meta``).
        preprocess: images only: ``"gcn-zca"`` for global contrast normalisation and
            ZCA whitening fit on the training split (Sec. 5.3); replaces ``normalize``.
        val_fraction: images only: fraction of the training pool held out (with a
            fixed seed) as the validation split. Text uses a fixed 80/10/10 split and
            PTB its own validation file.
        seq_len: sequences only: window length (default 32 for text, 35 for PTB).
        download: fetch missing public files (never for user files); the environment
            variable ``$LANDSCAPE_OFFLINE=1`` (or ``$LANDSCAPE_NO_DOWNLOAD=1``) forbids it.
        vocab: ``text:`` only: "file" (distinct characters of the file) or "ascii96"
            (printable ASCII + newline; other characters become spaces).

    Raises:
        LandscapeError subclasses with one sentence: DatasetArgumentError for a bad
        name or option, DatasetNotFoundError for missing files, DataFormatError for a
        corrupt or unsafe file, ChecksumError for a download with the wrong digest.
    """
    return load_splits(
        name, (split,), root, normalize=normalize, preprocess=preprocess,
        val_fraction=val_fraction, seq_len=seq_len, download=download, vocab=vocab,
    )[split]


def load_splits(
    name: str,
    splits: Sequence[str] = SPLITS,
    root: str | os.PathLike | None = None,
    *,
    normalize: bool = True,
    preprocess: str | None = None,
    val_fraction: float = 0.1,
    seq_len: int | None = None,
    download: bool = True,
    vocab: str = "file",
) -> dict[str, Dataset]:
    """Several splits of one dataset at once: ``{split: Dataset}``, each identical to what
    :func:`load_dataset` returns for it (same options, same meaning).

    Image files are read, and normalisation statistics or the ZCA matrix fit, once for
    all the splits, which matters for ``cifar10`` with ``preprocess="gcn-zca"``.
    """
    key = canonical_name(name)
    splits = tuple(dict.fromkeys(splits))
    for split in splits:
        if split not in SPLITS:
            raise DatasetArgumentError(f"Unknown split '{split}': use one of {', '.join(SPLITS)}.")
    if not splits:
        raise DatasetArgumentError(f"No split was asked for: use some of {', '.join(SPLITS)}.")
    val_fraction = check_fraction(val_fraction)
    if key.startswith(TEXT_PREFIX) or key == "ptb":
        # normalize (default True) is irrelevant for token ids; preprocess is an error.
        if check_preprocess(preprocess) is not None:
            raise DatasetArgumentError(f"preprocess applies to image datasets only, not to {key}.")
        if key == "ptb":
            if vocab != "file":
                raise DatasetArgumentError("vocab applies to text:PATH datasets only; ptb uses its training words.")
            return {s: load_ptb(name, s, root, seq_len=seq_len, download=download) for s in splits}
        if vocab not in VOCAB_CHOICES:
            raise DatasetArgumentError(f"Unknown vocab '{vocab}': use one of {', '.join(VOCAB_CHOICES)}.")
        path = key[len(TEXT_PREFIX):]
        return {s: load_text(name, path, s, root, seq_len=seq_len, vocab=vocab) for s in splits}

    if seq_len is not None:
        raise DatasetArgumentError(f"seq_len applies to sequence datasets only, not to {key}; leave it unset.")
    if vocab != "file":
        raise DatasetArgumentError(f"vocab applies to text:PATH datasets only, not to {key}.")
    preprocess = check_preprocess(preprocess)
    options = dict(normalize=bool(normalize), preprocess=preprocess, val_fraction=val_fraction)
    if key == "digits":
        return load_digits_dataset(name, splits, **options)
    if key == "cifar10":
        return load_cifar10(name, splits, root, download=download, **options)
    return load_mnist_family(name, key, splits, root, download=download, **options)


def _choices() -> str:
    return ", ".join(dataset_names())
