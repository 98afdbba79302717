"""Keep glibc's heap from holding freed workspace: a fixed mmap threshold for dense builds.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap``
and gives it back to the kernel on ``free``; smaller ones come from the heap, which keeps
freed memory for reuse. The threshold is dynamic by default: it starts at 128 KiB and
rises to the size of every mmapped block freed, up to 32 MiB. After a dense build's first
few freed temporaries, every tensor under 32 MiB comes from the heap, and mixed sizes
fragment it: the same build's peak resident set then varies from one process to the next,
most of it heap holding freed vmap temporaries. A threshold fixed at 4 MiB sends the large
temporaries back to the kernel on ``free`` at a small cost in time.

``mallopt(M_MMAP_THRESHOLD, n)`` fixes the threshold (the dynamic rule is off from then
on) for the whole process. :func:`bound_heap` does this once, where glibc is the
allocator.

The fixed threshold does not cover the many tensors under 4 MiB that vmapped products
allocate, some of them from the arenas of torch's worker threads. Freed, they stay
resident through the phases that follow. ``malloc_trim(0)`` hands every whole free page
of every arena back (glibc >= 2.8); :func:`trim_heap` calls it between a build's phases,
where it takes milliseconds, so each phase starts near the matrix's own size. Both calls
are no-ops unless the platform's ``heap`` service is on
(:func:`landscape.platform.configure`; the command line turns it on).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from landscape.platform import current

_M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 4 * 2**20
_LIBC: list = []  # [glibc's handle or None], looked up once (find_library may run ldconfig)


def bound_heap(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; True where it took effect.

    Cheap to call again; a no-op (False) off glibc or with the heap service off.
    """
    if not current().heap:
        return False
    libc = _glibc()
    return libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1


def trim_heap() -> bool:
    """Give the free pages of glibc's arenas back to the kernel (``malloc_trim(0)``).

    True where glibc released memory; False where it had none to release, off glibc, or
    with the heap service off. Call it after a phase that freed many small tensors.
    """
    if not current().heap:
        return False
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1


def resident_bytes() -> int | None:
    """This process's resident set in bytes (Linux ``/proc/self/statm``), or None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Trimmer:
    """Calls :func:`trim_heap` only once the heap holds ``slack`` bytes of freed memory.

    A trim is cheap, but the pages it gives back are faulted in again by the next
    temporaries, so trimming after every one of a rows pass's many small calls costs a
    large share of its time while never trimming lets the peak grow by the whole freed
    workspace. So each call reads the resident set (microseconds) and trims only when it
    has grown ``slack`` bytes past the level left by the last trim (which accepts what
    stayed live as the new level). Where /proc cannot say, it trims every call.
    """

    def __init__(self, slack: int):
        self.slack = int(slack)
        self.level = resident_bytes()
        self.trims = 0

    def __call__(self) -> bool:
        rss = resident_bytes()
        if rss is not None and self.level is not None and rss <= self.level + self.slack:
            return False
        trim_heap()
        self.trims += 1
        self.level = resident_bytes()
        return True


def _glibc():
    if not _LIBC:
        _LIBC.append(_find_glibc())
    return _LIBC[0]


def _find_glibc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc
