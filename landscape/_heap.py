"""Keep glibc's heap from holding freed workspace: a fixed mmap threshold for dense builds.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap``
and gives it back to the kernel on ``free``; smaller ones come from the heap, which keeps
freed memory for reuse. The threshold is dynamic by default: it starts at 128 KiB and
rises to the size of every mmapped block freed, up to 32 MiB. After a dense build's first
few freed temporaries, every tensor under 32 MiB comes from the heap, and mixed sizes
fragment it. Measured on the 5,226-parameter conv net of ``benchmarks/dense.py``
(N = 256, 208 MB matrix): the same build added 0.59 GB and 1.65 GB to peak RSS in two
fresh processes, most of it heap that held freed vmap temporaries. With the threshold
fixed at 4 MiB it added 0.42 GB, and its time changed by +8% under the same load.

``mallopt(M_MMAP_THRESHOLD, n)`` fixes the threshold (the dynamic rule is off from then
on) for the whole process. :func:`bound_heap` does this once, where glibc is the
allocator. ``LANDSCAPE_HEAP=default`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 4 * 2**20
_MALLOPT: list = []  # [glibc's mallopt or None], looked up once (find_library may run ldconfig)


def bound_heap(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; True where it took effect.

    Cheap to call again; a no-op (False) off glibc or with ``LANDSCAPE_HEAP=default``.
    """
    if os.environ.get("LANDSCAPE_HEAP", "").lower() == "default":
        return False
    if not _MALLOPT:
        _MALLOPT.append(_find_mallopt())
    mallopt = _MALLOPT[0]
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1


def _find_mallopt():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
