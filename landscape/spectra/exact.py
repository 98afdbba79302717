"""All eigenvalues of a dense symmetric matrix, in place, with an error bound.

LAPACK's divide-and-conquer ``?syevd`` (eigenvalues only) through scipy, called with
``overwrite_a=True`` on a Fortran-contiguous array so no n x n copy is made (a float64
copy of a 50,000-parameter Hessian is 20 GB; ``torch.linalg.eigvalsh`` always copies). A
symmetric matrix in C order is its own transpose, so ``H.T`` is the Fortran view.

Error bound. The solver is backward stable: the computed eigenvalues are exact for
H + E with ||E||_2 <= p(n) eps ||H||_2 (Anderson et al., LAPACK Users' Guide, Sec. 4.7),
so by Weyl each eigenvalue errs by at most that much. p(n) is a modest function of n;
we report ``max(10, sqrt(n)) * eps * ||H||_2``, which covers the errors the tests
measure against known spectra with margin. If the matrix was STORED in float32 and
solved in float64, the rounding of the stored entries is a second perturbation with
||E||_2 <= ||E||_F <= (eps32 / 2) ||H||_F, reported separately (rigorous).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ExactSpectrum:
    eigenvalues: np.ndarray  # all of them, ascending, float64
    solve_dtype: str
    abs_error_bound: float  # solver error bound (see module docstring)
    storage_error_bound: float  # from rounding the stored matrix (0 if stored in the solve dtype)
    norm: float  # ||H||_2 = max |lambda|
    wall_s: float
    in_place: bool
    extra: dict = field(default_factory=dict)

    @property
    def eigenvalue_abs_error_bound(self) -> float:
        return self.abs_error_bound + self.storage_error_bound


def _row_block(n: int) -> int:
    """Rows per ~128 MB block of an n x n float64 matrix (copies that never hold two matrices)."""
    return max(1, (1 << 27) // max(1, n * 8))


def _as_fortran_symmetric(H, dtype: np.dtype, overwrite: bool):
    """A Fortran-ordered array of ``dtype`` holding H; in place when possible."""
    if isinstance(H, torch.Tensor):
        H = H.detach().cpu().numpy()
    H = np.asarray(H) if not isinstance(H, np.memmap) else H
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"a square matrix is needed, got shape {H.shape}")
    if H.dtype == dtype and overwrite:
        if H.flags.f_contiguous:
            return H, True
        if H.flags.c_contiguous:
            return H.T, True  # symmetric: the transpose is the same matrix, Fortran-ordered
    out = np.empty(H.shape, dtype=dtype, order="F")
    step = _row_block(H.shape[0])
    for i in range(0, H.shape[0], step):
        # rows of H are columns of H^T = H: fill Fortran columns from C rows
        out[:, i : i + step] = np.asarray(H[i : i + step, :], dtype=dtype).T
    return out, False


def frobenius_norm(H, block: int = 2048) -> float:
    total = 0.0
    for i in range(0, H.shape[0], block):
        chunk = np.asarray(H[i : i + block], dtype=np.float64)
        total += float(np.sum(chunk * chunk))
    return math.sqrt(total)


# torch.linalg.eigvalsh copies its input and needs a workspace: ask for this many
# matrices' worth of free device memory before choosing the GPU
GPU_MEMORY_FACTOR = 2.5


def gpu_fits(n: int, dtype: np.dtype | str, device: torch.device | str) -> bool:
    """Whether an n x n solve in ``dtype`` fits in ``device``'s free memory (CUDA only)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return GPU_MEMORY_FACTOR * n * n * np.dtype(dtype).itemsize <= free


def _torch_eigvalsh(H, dtype: np.dtype, device: torch.device) -> np.ndarray:
    """Eigenvalues by torch.linalg.eigvalsh on ``device`` (cuSOLVER's syevd on CUDA); H is
    moved there in ~128 MB row blocks, so no second host copy is made."""
    n = H.shape[0]
    if isinstance(H, torch.Tensor):
        A = H.detach().to(device=device, dtype=getattr(torch, dtype.name))
    else:
        A = torch.empty((n, n), dtype=getattr(torch, dtype.name), device=device)
        step = _row_block(n)
        for i in range(0, n, step):
            A[i : i + step] = torch.from_numpy(np.ascontiguousarray(H[i : i + step], dtype=dtype))
    values = torch.linalg.eigvalsh(A)
    del A
    return values.cpu().numpy()


def exact_spectrum(
    H, *, solve_dtype: str = "float64", overwrite: bool = False, driver: str = "evd", backend: str = "auto",
    device: torch.device | str = "cpu",
) -> ExactSpectrum:
    """All eigenvalues of symmetric ``H`` (tensor, array or memmap), ascending, float64.

    ``overwrite=True`` lets LAPACK destroy H (in place: no second n x n array) when H
    is already in ``solve_dtype``; otherwise one converted copy is made. ``backend``:
    ``"mkl"`` (Intel MKL's syevd via LAPACKE, when ``pip install mkl`` is present),
    ``"scipy"`` (the LAPACK scipy bundles), ``"torch"`` (``torch.linalg.eigvalsh`` on
    ``device``: cuSOLVER's divide and conquer on a GPU, the same backward-stable
    algorithm, so the same error bound), ``"auto"`` (torch when ``device`` is a CUDA GPU
    with room for the solve, see :func:`gpu_fits`; else MKL if available, else scipy).
    """
    from scipy.linalg import eigh

    from landscape.platform import mkl

    if backend not in ("auto", "mkl", "scipy", "torch"):
        raise ValueError(f"backend must be auto, mkl, scipy or torch, got {backend!r}")
    device = torch.device(device)
    dtype = np.dtype(solve_dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"solve_dtype must be float32 or float64, got {solve_dtype}")
    n = H.shape[0]
    use_torch = backend == "torch" or (backend == "auto" and gpu_fits(n, dtype, device))
    use_mkl = not use_torch and (backend == "mkl" or (backend == "auto" and driver == "evd"
                                                     and mkl.load() is not None))
    if backend == "mkl" and mkl.load() is None:
        raise ValueError("backend='mkl' needs Intel MKL: pip install mkl")

    start = time.perf_counter()
    stored = H.dtype if hasattr(H, "dtype") else None
    stored = np.dtype(str(stored).replace("torch.", "")) if stored is not None else dtype
    storage_bound = 0.0
    if stored.itemsize < dtype.itemsize:
        storage_bound = 0.5 * float(np.finfo(stored).eps) * frobenius_norm(H)
    if use_torch:
        eigenvalues, in_place = _torch_eigvalsh(H, dtype, device), False
    else:
        A, in_place = _as_fortran_symmetric(H, dtype, overwrite)
        if use_mkl:
            eigenvalues = mkl.syevd_values_(A)
        else:
            eigenvalues = eigh(A, eigvals_only=True, overwrite_a=True, check_finite=False, driver=driver)
    eigenvalues = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    norm = float(np.max(np.abs(eigenvalues))) if n else 0.0
    bound = max(10.0, math.sqrt(n)) * float(np.finfo(dtype).eps) * norm
    return ExactSpectrum(eigenvalues=eigenvalues, solve_dtype=dtype.name, abs_error_bound=bound,
                         storage_error_bound=storage_bound, norm=norm, wall_s=time.perf_counter() - start,
                         in_place=in_place,
                         extra={"backend": f"torch-{device.type}" if use_torch else ("mkl" if use_mkl else "scipy")})


def spectrum_statistics(eigenvalues: np.ndarray, thresholds=(1e-5, 1e-4, 1e-3, 1e-2)) -> dict:
    """The statistics the paper's Figs. 1 and 3 quote: extremes and near-zero fractions."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return {
        "lambda_max": float(lam.max()),
        "lambda_min": float(lam.min()),
        "fraction_abs_below": {f"{t:.0e}".replace("e-0", "e-"): float(np.mean(np.abs(lam) < t)) for t in thresholds},
        "fraction_negative": float(np.mean(lam < 0)),
        "trace": float(lam.sum()),
    }
