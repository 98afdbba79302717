"""Will a long job fit? Disk and memory checks made before any work starts.

The checks are pure functions of the numbers (bytes needed, bytes free), so they can be
tested for a terabyte matrix without allocating one; :func:`free_disk` and
:func:`available_memory` read the machine. A refusal is one :class:`LandscapeError`
sentence with the numbers and what to do instead.

What the exact spectrum needs (:mod:`landscape.curvature.dense`, :mod:`landscape.spectra.exact`):

* disk: the n x n matrix in the output folder (``hessian.bin``, n^2 x 8 bytes, or 4 for
  float32 storage), less what a resumable build there has already allocated;
* memory: the dense build's workspace, and then the solve: LAPACK overwrites a private
  copy-on-write mapping of the matrix (or a float64 copy of a float32 file), so n^2 x the
  solve dtype's size becomes resident; its own workspace for eigenvalues only is O(n).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from landscape.errors import LandscapeError

__all__ = ["ExactNeeds", "allocated_bytes", "available_memory", "check_exact", "check_exact_spectrum",
           "check_in_memory", "exact_needs", "format_bytes", "free_disk", "per_sample_gradient_bytes"]

#: Headroom kept free on top of an estimate (page tables, the interpreter, other processes).
MARGIN = 1.05
EXACT_ALTERNATIVES = ("use --method lanczos (extreme eigenvalues) or --method slq (the spectral density), "
                      "or restrict the parameters with --params")


def format_bytes(size: float) -> str:
    """``1.02e13`` -> ``'10.2 TB'`` (decimal units, as df prints with -H)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ExactNeeds:
    """Bytes an exact spectrum of n parameters needs: on disk (the matrix) and in memory."""

    n: int
    matrix_bytes: int  # the whole n x n file
    disk_bytes: int  # still to be allocated on disk (a resumed build has part of it)
    memory_bytes: int  # resident at the peak (the solve, or the build's workspace)


def exact_needs(n: int, *, storage_itemsize: int = 8, solve_itemsize: int = 8, allocated_bytes: int = 0,
                build_workspace: int = 0, solve: bool = True, solve_on_gpu: bool = False) -> ExactNeeds:
    """The disk and memory an exact spectrum of ``n`` parameters needs.

    ``allocated_bytes``: disk a resumable build in the output folder already holds;
    ``solve=False`` for a build that stops before the eigensolve; ``solve_on_gpu``: the
    solve copies the matrix to a GPU instead of host memory (checked by the solver itself).
    """
    if n < 0 or storage_itemsize not in (4, 8) or solve_itemsize not in (4, 8):
        raise ValueError(f"bad sizes: n={n}, storage {storage_itemsize} B, solve {solve_itemsize} B")
    matrix = n * n * storage_itemsize
    solve_bytes = n * n * solve_itemsize if solve and not solve_on_gpu else 0
    return ExactNeeds(n=n, matrix_bytes=matrix, disk_bytes=max(0, matrix - allocated_bytes),
                      memory_bytes=max(int(build_workspace), solve_bytes))


def check_exact(needs: ExactNeeds, *, free_disk_bytes: int | None, memory_bytes: int | None, where: Path) -> None:
    """Refuse (one sentence) when ``needs`` exceeds the free disk at ``where`` or the available memory.

    ``None`` for a quantity this machine cannot report skips that comparison.
    """
    if free_disk_bytes is not None and needs.disk_bytes * MARGIN > free_disk_bytes:
        left = "" if needs.disk_bytes == needs.matrix_bytes else f" ({format_bytes(needs.disk_bytes)} still to write)"
        raise LandscapeError(
            f"The exact spectrum of {needs.n:,} parameters needs a {format_bytes(needs.matrix_bytes)} matrix file in "
            f"'{where}'{left} but only {format_bytes(free_disk_bytes)} is free there: {EXACT_ALTERNATIVES}, or pass "
            "an --out on a larger disk."
        )
    if memory_bytes is not None and needs.memory_bytes * MARGIN > memory_bytes:
        raise LandscapeError(
            f"The exact spectrum of {needs.n:,} parameters needs about {format_bytes(needs.memory_bytes)} of memory "
            f"for its eigensolve but only {format_bytes(memory_bytes)} is available: {EXACT_ALTERNATIVES}, or build "
            "the matrix with --build-only and solve it on a machine with more memory."
        )


def per_sample_gradient_bytes(batch: int, n: int, itemsize: int) -> int:
    """Peak of a per-sample gradient pass: the (batch, n) rows, their concatenation and one squared copy."""
    return 3 * batch * n * itemsize


def check_in_memory(what: str, need_bytes: int, memory_bytes: int | None, advice: str) -> None:
    """Refuse an in-memory array of ``need_bytes`` that does not fit in ``memory_bytes`` (None: unknown)."""
    if memory_bytes is not None and need_bytes * MARGIN > memory_bytes:
        raise LandscapeError(f"{what} needs about {format_bytes(need_bytes)} of memory but only "
                             f"{format_bytes(memory_bytes)} is available: {advice}.")


def free_disk(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here).free
    except OSError:
        return None


def available_memory() -> int | None:
    """Memory a new allocation can get without swapping: Linux's MemAvailable, else free pages; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def allocated_bytes(path: str | os.PathLike) -> int:
    """Disk blocks a (possibly sparse) file already occupies; 0 when it does not exist."""
    try:
        return Path(path).stat().st_blocks * 512
    except (OSError, AttributeError):
        return 0


def check_exact_spectrum(n: int, matrix_path: str | os.PathLike, *, storage_dtype: str = "float64",
                         solve_dtype: str = "float64", solve: bool = True, eigensolver: str = "auto",
                         device="cpu", workspace: int | str | None = "auto") -> ExactNeeds:
    """The call site of :func:`check_exact`: reads this machine's free disk and memory for an exact
    spectrum of ``n`` parameters whose matrix will live at ``matrix_path``; raises before anything is built."""
    import numpy as np

    from landscape.curvature.dense import AUTO_WORKSPACE_DIVISOR, AUTO_WORKSPACE_FLOOR
    from landscape.spectra.exact import gpu_fits

    storage = np.dtype(storage_dtype).itemsize
    if workspace == "auto":
        workspace = max(AUTO_WORKSPACE_FLOOR, n * n * storage // AUTO_WORKSPACE_DIVISOR)
    on_gpu = eigensolver == "torch" or (eigensolver == "auto" and solve and gpu_fits(n, solve_dtype, device))
    needs = exact_needs(n, storage_itemsize=storage, solve_itemsize=np.dtype(solve_dtype).itemsize,
                        allocated_bytes=allocated_bytes(matrix_path), build_workspace=int(workspace or 0),
                        solve=solve, solve_on_gpu=on_gpu)
    check_exact(needs, free_disk_bytes=free_disk(Path(matrix_path).parent), memory_bytes=available_memory(),
                where=Path(matrix_path).parent)
    return needs
