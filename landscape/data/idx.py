"""A reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al., 1998).

An IDX file is a 4-byte magic number, then one big-endian uint32 per dimension, then
the values in C order, big-endian::

    byte 0, 1   zero
    byte 2      type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte 3      number of dimensions

The file may be gzip-compressed (recognised by its gzip magic, not by its name). The
reader streams: it reads exactly the number of bytes the header declares and then
checks that nothing follows, so a truncated download or a file with trailing garbage is
reported, and a corrupt header cannot make it allocate more than the file holds.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from landscape.data.files import DataFormatError
from landscape.errors import DatasetNotFoundError

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NDIM = 16


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-byte-order numpy array.

    Raises :class:`DataFormatError` (a LandscapeError) with one sentence when the file
    is not IDX, is truncated, has trailing bytes, or is a broken gzip stream.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"IDX file {path} does not exist; check the path or --data-dir.")
    try:
        with _open(path) as fh:
            return _parse(fh, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(
            f"{path} could not be decompressed or read ({exc}); it is probably a partial "
            "download: delete it and fetch it again."
        ) from None


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    return open(path, "rb")


def _parse(fh: BinaryIO, path: Path) -> np.ndarray:
    magic = fh.read(4)
    if len(magic) < 4:
        raise DataFormatError(f"{path} is too short to be an IDX file (no 4-byte magic number).")
    zero0, zero1, type_code, ndim = magic
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or not 1 <= ndim <= _MAX_NDIM:
        raise DataFormatError(
            f"{path} is not an IDX file: its magic number is 0x{magic.hex()} "
            "(expected 0x0000 then a type code such as 08 and the number of dimensions)."
        )
    raw_dims = fh.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataFormatError(f"{path} is truncated inside its IDX header ({ndim} dimensions declared).")
    shape = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    dtype = IDX_DTYPES[type_code]
    nbytes = math.prod(shape) * dtype.itemsize
    payload = _read_exactly(fh, nbytes)
    if len(payload) < nbytes:
        raise DataFormatError(
            f"{path} is truncated: its header declares shape {shape} of {dtype.name} "
            f"({nbytes} bytes) but only {len(payload)} bytes follow; fetch the file again."
        )
    if fh.read(1):
        raise DataFormatError(
            f"{path} has bytes after the {nbytes} its IDX header declares; it is corrupt, fetch it again."
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _read_exactly(fh: BinaryIO, nbytes: int, chunk: int = 1 << 24) -> bytes:
    """Read up to ``nbytes`` in chunks (a lying header cannot force one huge allocation)."""
    parts: list[bytes] = []
    remaining = nbytes
    while remaining > 0:
        block = fh.read(min(chunk, remaining))
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)


def idx_spellings(stem: str) -> tuple[str, ...]:
    """Accepted file names for an IDX stem: gzipped, raw, and the dotted variant of some mirrors."""
    dotted = stem.replace("-idx", ".idx", 1)
    return (f"{stem}.gz", stem, f"{dotted}.gz", dotted)
