"""Atomic writes for every artifact (DESIGN.md sec. 3).

A result is written to a temporary file in the destination folder, flushed and
fsync'ed, then renamed over the destination: a killed run leaves either the old file or
the new one, never half of one. ``os.replace`` is atomic on POSIX when source and
destination are on the same file system, which is why the temporary file lives beside
the destination rather than in /tmp.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on clean exit rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open only writes ('w' or 'wb')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write arrays to an ``.npz`` atomically (uncompressed: spectra are read often)."""
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
