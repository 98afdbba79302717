"""In-place symmetric rank-k update on any sub-block of a matrix (BLAS ``dsyrk``).

scipy's Python wrapper copies a non-contiguous output, which would defeat building a
Hessian larger than memory in place, so we call BLAS with an explicit leading dimension:
``C[off:off+m, off:off+m] += alpha * A^T A`` updates a block of a large (memory-mapped)
matrix directly. Backends, in order of preference:

1. Intel MKL's ``cblas_dsyrk`` (when ``pip install mkl`` is present, see landscape.platform.mkl);
2. PyTorch's ``addmm_`` on a strided view of the same memory (torch's CPU wheels link
   MKL; a full GEMM, so twice the flops of syrk, but correct at any size);
3. scipy's bundled OpenBLAS ``dsyrk`` through ``scipy.linalg.cython_blas``, only for
   blocks under 2^31 bytes: scipy-openblas 0.3.30's dsyrk segfaults on larger outputs
   (through both scipy's f2py and Cython entry points).
"""

from __future__ import annotations

import ctypes

import numpy as np

_P = ctypes.POINTER
_dsyrk = None


def _load():
    global _dsyrk
    if _dsyrk is None:
        from scipy.linalg import cython_blas

        capsule = cython_blas.__pyx_capi__["dsyrk"]
        get_name = ctypes.pythonapi.PyCapsule_GetName
        get_name.restype = ctypes.c_char_p
        get_name.argtypes = [ctypes.py_object]
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype = ctypes.c_void_p
        get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        pointer = get_pointer(capsule, get_name(capsule))
        prototype = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, _P(ctypes.c_int), _P(ctypes.c_int),
                                     _P(ctypes.c_double), _P(ctypes.c_double), _P(ctypes.c_int), _P(ctypes.c_double),
                                     _P(ctypes.c_double), _P(ctypes.c_int))
        _dsyrk = prototype(pointer)
    return _dsyrk


def _mkl_syrk():
    from landscape.platform import mkl as _mkl

    lib = _mkl.load()
    if lib is None:
        return None
    fn = lib.cblas_dsyrk
    fn.restype = None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_double,
                   ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_void_p, ctypes.c_int]
    return fn


_CBLAS_ROW_MAJOR, _CBLAS_UPPER, _CBLAS_TRANS = 101, 121, 112


def syrk_block_(C: np.ndarray, A: np.ndarray, offset: int, alpha: float = 1.0, backend: str = "auto") -> None:
    """``C[o:o+m, o:o+m] (upper triangle in C order) += alpha * A^T A`` in place.

    ``C``: float64, C-contiguous square (n x n), e.g. a writable memmap. ``A``: float64
    ``(k, m)``. Only the block's upper triangle (C order; lower in Fortran terms) is
    written; mirror it before use.
    """
    if C.dtype != np.float64 or A.dtype != np.float64:
        raise TypeError("syrk_block_ needs float64 arrays")
    if not C.flags.c_contiguous or C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError("C must be a C-contiguous square matrix")
    A = np.ascontiguousarray(A)
    k, m = A.shape
    n = C.shape[0]
    if offset < 0 or offset + m > n:
        raise ValueError("block out of range")
    if k == 0 or m == 0:
        return
    mkl = _mkl_syrk() if backend in ("auto", "mkl") else None
    if mkl is not None:
        # row major: C_block(m x m, ldc n) += alpha * A^T A, A (k x m, lda m); upper triangle
        mkl(_CBLAS_ROW_MAJOR, _CBLAS_UPPER, _CBLAS_TRANS, m, k, alpha, A.ctypes.data, m, 1.0,
            C.ctypes.data + (offset * n + offset) * 8, n)
        return
    if backend == "torch" or (backend == "auto" and m * m * 8 >= 2**31):
        import torch

        block = torch.from_numpy(C)[offset : offset + m, offset : offset + m]
        At = torch.from_numpy(A)
        block.addmm_(At.T, At, alpha=alpha)  # full block (both triangles): correct, 2x the flops
        return
    dsyrk = _load()
    # Fortran view: A^T is (m x k) with lda = m; C's block starts at (offset, offset), ldc = n.
    block = ctypes.cast(C.ctypes.data + (offset * n + offset) * 8, _P(ctypes.c_double))

    def ci(v):
        return ctypes.byref(ctypes.c_int(v))

    def cd(v):
        return ctypes.byref(ctypes.c_double(v))

    dsyrk(b"L", b"N", ci(m), ci(k), cd(alpha), A.ctypes.data_as(_P(ctypes.c_double)), ci(m), cd(1.0), block, ci(n))
