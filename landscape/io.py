"""Atomic writes for every artifact.

A result is written to a temporary file in the destination folder, flushed and
fsync'ed, then renamed over the destination: a killed run leaves either the old file or
the new one, never half of one. ``os.replace`` is atomic on POSIX when source and
destination are on the same file system, which is why the temporary file lives beside
the destination rather than in /tmp. The temporary file's name carries the writer's
process id and a tag of its host (``.NAME.PID@HOST-XXXX.tmp``); the next write into that
folder removes the ones left by killed writers (a process of this host that is gone, or
any file older than :data:`STALE_TMP_S`: a folder shared by several machines).

Results made of two files (``spectrum.npz`` + ``spectrum.json``, ``fig2.npz`` +
``fig2.json``) are one unit by content hash rather than by a shared rename: the arrays
are written first, then the JSON, which records the SHA-256 of the ``.npz`` bytes under
:data:`ARRAYS_HASH_KEY` (:func:`write_arrays_and_summary`). A kill between the two
leaves new arrays beside an old JSON whose hash no longer matches, and every reader
(:func:`read_verified_npz`) refuses that pair. A rename of a whole temporary folder
would need the pair to own its folder, which the spectrum's folder does not (it also
holds the resumable matrix of an exact build). JSON written before the hash existed
carries none and is read unverified.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from landscape.errors import LandscapeError

#: A temporary file older than this is a killed writer's even if its process id was reused.
STALE_TMP_S = 24 * 3600.0
#: The JSON key holding the SHA-256 (hex) of the bytes of the ``.npz`` written with it.
ARRAYS_HASH_KEY = "arrays_sha256"


class MismatchedPairError(LandscapeError):
    """An ``.npz`` whose bytes are not the ones its JSON's hash vouches for (a writer killed between them)."""


_TMP_NAME = re.compile(r"^\..+\.(\d+)@([0-9a-f]{8})-[^.]+\.tmp$")
#: Names this machine in temporary-file names: a process id says nothing about another host's processes.
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_prefix(name: str) -> str:
    """``.NAME.PID@HOST-``: the prefix of a temporary file or folder whose staleness can be judged later."""
    return f".{name}.{os.getpid()}@{HOST_TAG}-"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on clean exit rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open only writes ('w' or 'wb')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its file
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, now: float | None = None,
                             directories: bool = False) -> list[Path]:
    """Delete the temporary files killed writers left in ``folder``; returns what was removed.

    ``directories``: also staging folders of the same shape (removed with their contents).
    A file counts as stale when its name has the shape :func:`atomic_open` gives and
    either its writer ran on this host and its process no longer exists, or it is older
    than :data:`STALE_TMP_S` (the process id may have been reused; another machine sharing
    the folder cannot be asked). A live writer's file, including this process's, is never
    touched.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        if match is None:
            continue
        try:
            folder_entry = directories and entry.is_dir(follow_symlinks=False)
            if not (entry.is_file(follow_symlinks=False) or folder_entry):
                continue
            pid, here = int(match.group(1)), match.group(2) == HOST_TAG
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_S
            if not (here and pid == os.getpid()) and (old or (here and not _process_alive(pid))):
                shutil.rmtree(entry.path) if folder_entry else os.unlink(entry.path)
                removed.append(Path(entry.path))
        except (OSError, ValueError):
            continue  # gone already, or not ours to remove
    return removed


def ensure_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create ``path`` as a folder and check it is writable, before any long work.

    Raises one sentence naming ``path`` when it is an existing file, cannot be created
    (e.g. under /proc, or a parent is a file) or cannot be written to.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LandscapeError(f"The output location '{path}' is an existing file, not a folder: pass a folder to "
                             f"{option}.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=temporary_prefix("write-test"), suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise LandscapeError(f"Cannot write to the output folder '{path}' ({reason}): pass a writable folder to "
                             f"{option}.") from None
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def json_safe(obj: Any) -> Any:
    """Replace NaN / infinity by None so strict JSON parsers (jq, browsers) accept the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_plain(value: Any) -> Any:
    """Nested dicts/lists of numpy arrays, tensors and numpy scalars -> plain Python values (for ``to_dict``)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.floating, np.integer)):
        return value.tolist()
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # torch tensors
        return value.detach().cpu().tolist()
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any) -> str:
    """Strict JSON text: numpy/torch scalars converted, NaN and infinities written as null."""
    return json.dumps(json_safe(json.loads(json.dumps(obj, default=_json_default))), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(dumps_json(obj))


def write_npz(path: str | os.PathLike, **arrays: Any) -> str:
    """Write arrays to an ``.npz`` atomically (uncompressed: spectra are read often); returns the
    SHA-256 (hex) of the bytes written."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return hashlib.sha256(data).hexdigest()


def write_arrays_and_summary(npz_path: str | os.PathLike, json_path: str | os.PathLike, arrays: dict,
                             summary: dict) -> None:
    """Write a two-file result: the arrays, then the JSON recording their hash (see the module docstring).

    ``summary`` gains the :data:`ARRAYS_HASH_KEY` entry.
    """
    summary[ARRAYS_HASH_KEY] = write_npz(npz_path, **arrays)
    write_json(json_path, summary)


def read_verified_npz(npz_path: str | os.PathLike, summary: dict, json_path: str | os.PathLike) -> dict:
    """The arrays of ``npz_path`` (``allow_pickle=False``), refused unless their bytes match the hash
    ``summary`` (read from ``json_path``) records; one sentence naming the file for an unreadable one."""
    npz_path = Path(npz_path)
    try:
        data = npz_path.read_bytes()
    except OSError as err:
        raise LandscapeError(f"Cannot read {npz_path}: {err.strerror or type(err).__name__}.") from None
    want = summary.get(ARRAYS_HASH_KEY)
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise MismatchedPairError(
            f"{npz_path} does not belong to {json_path} (its SHA-256 differs from the one the JSON "
            "records: the run that wrote them was stopped between the two files); re-run the "
            "stage that wrote them."
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            return {k: loaded[k] for k in loaded.files}
    except Exception as err:  # BadZipFile, EOFError, ValueError, zlib.error: all mean a damaged file
        raise LandscapeError(f"{npz_path} is not a readable .npz file ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:120] if str(err) else 'damaged'}); re-run the stage that "
                             "wrote it.") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
