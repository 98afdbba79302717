"""Where dataset files are looked for, how they are recognised, and how they are fingerprinted.

Every reader in this package gets its paths from :func:`locate`, which walks the same
ordered list of folders that :func:`data_search_dirs` shows the user: the ``root`` the
caller passed (the CLI's ``--data-dir``), then ``$LANDSCAPE_DATA``, then a system
folder where a distribution package installs the data (only Debian's
``dataset-fashion-mnist`` so far), then the download cache. In each base folder the
dataset's usual sub-folders are tried too (``mnist/``, torchvision's ``MNIST/raw/``,
``cifar-10-batches-py/`` ...). All the files a dataset needs must sit in ONE folder:
mixing the MNIST training images of one folder with the test images of another is
almost always a mistake.

Every file that is read is recorded in the dataset's ``meta`` with its SHA-256, so a
result can say exactly which bytes it was computed from.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from landscape.errors import LandscapeError

#: Environment variable naming a folder that holds (or receives) dataset files.
DATA_ENV = "LANDSCAPE_DATA"
#: Environment variables that, set to a non-empty value other than "0", forbid downloads
#: (the test suite's conftest sets the second one).
OFFLINE_ENVS = ("LANDSCAPE_OFFLINE", "LANDSCAPE_NO_DOWNLOAD")

#: Folders a distribution package installs datasets into (searched after $LANDSCAPE_DATA).
SYSTEM_DIRS: Mapping[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

#: Sub-folders of each base folder that may hold a dataset; the first is where downloads go.
SUBFOLDERS: Mapping[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
    "cifar10": ("cifar10/cifar-10-batches-py", "cifar-10-batches-py", "cifar10"),
    "ptb": ("ptb",),
}


class DataFormatError(LandscapeError, ValueError):
    """A dataset file exists but is corrupt, truncated, or not in the expected format."""


class DatasetArgumentError(LandscapeError, ValueError):
    """An argument to :func:`landscape.data.load_dataset` that cannot be honoured."""


def cache_dir() -> Path:
    """The download cache: ``$XDG_CACHE_HOME/landscape/data`` or ``~/.cache/landscape/data``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "landscape" / "data"


def base_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Base folders for dataset ``name`` in search order (root, $LANDSCAPE_DATA, system, cache)."""
    bases: list[Path] = []
    if root is not None:
        bases.append(Path(root).expanduser())
    env = os.environ.get(DATA_ENV)
    if env:
        bases.append(Path(env).expanduser())
    bases.extend(SYSTEM_DIRS.get(name, ()))
    bases.append(cache_dir())
    return _unique(bases)


def data_search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Every folder searched for dataset ``name`` (canonical name), in order.

    ``digits`` is embedded (scikit-learn ships it) and searches nowhere.
    """
    subfolders = SUBFOLDERS.get(name)
    if subfolders is None:
        return []
    dirs: list[Path] = []
    for base in base_dirs(name, root):
        dirs.append(base)
        dirs.extend(base / sub for sub in subfolders)
    return _unique(dirs)


def download_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where missing files of ``name`` are downloaded: the first base folder's usual sub-folder.

    The first base folder is ``root`` if given, else ``$LANDSCAPE_DATA``, else the cache;
    a read-only system folder is never a download target.
    """
    if root is not None:
        base = Path(root).expanduser()
    elif os.environ.get(DATA_ENV):
        base = Path(os.environ[DATA_ENV]).expanduser()
    else:
        base = cache_dir()
    return base / SUBFOLDERS[name][0]


def locate(
    dirs: Sequence[Path], wanted: Mapping[str, Sequence[str]]
) -> dict[str, Path] | None:
    """Find the first folder in ``dirs`` holding every wanted file.

    ``wanted`` maps a logical file name to the spellings accepted for it (e.g. the
    gzipped and the raw IDX file). Returns ``{logical: path}`` or ``None``.
    """
    for folder in dirs:
        found: dict[str, Path] = {}
        for logical, spellings in wanted.items():
            for spelling in spellings:
                candidate = folder / spelling
                if candidate.is_file():
                    found[logical] = candidate
                    break
            else:
                break
        if len(found) == len(wanted):
            return found
    return None


def downloads_allowed(download: bool) -> bool:
    """``download`` unless ``$LANDSCAPE_OFFLINE`` or ``$LANDSCAPE_NO_DOWNLOAD`` forbids it."""
    flags = (os.environ.get(env, "").strip() for env in OFFLINE_ENVS)
    return bool(download) and all(flag in ("", "0") for flag in flags)


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks (CIFAR batches are 30 MB each)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict:
    """A JSON-ready provenance entry for a file that was read: path, size, SHA-256."""
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_digest(path)}


def _unique(paths: Sequence[Path]) -> list[Path]:
    seen: set[Path] = set()
    out: list[Path] = []
    for path in paths:
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out
