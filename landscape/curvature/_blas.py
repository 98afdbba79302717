"""In-place symmetric rank-k update on any sub-block of a matrix (BLAS ``dsyrk``).

scipy's Python wrapper copies a non-contiguous output, which would defeat building an
18 GB Hessian in place. We call the same BLAS routine scipy ships (through
``scipy.linalg.cython_blas``'s exported function pointer) with an explicit leading
dimension, so ``C[off:off+m, off:off+m] += alpha * A^T A`` updates a block of a large
(memory-mapped) matrix directly. Fortran conventions: a C-order square array is the
Fortran-order transpose, and for the symmetric matrices we build the two coincide.
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


def syrk_block_(C: np.ndarray, A: np.ndarray, offset: int, alpha: float = 1.0) -> None:
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
    dsyrk = _load()
    # Fortran view: A^T is (m x k) with lda = m; C's block starts at (offset, offset), ldc = n.
    block = ctypes.cast(C.ctypes.data + (offset * n + offset) * 8, _P(ctypes.c_double))

    def ci(v):
        return ctypes.byref(ctypes.c_int(v))

    def cd(v):
        return ctypes.byref(ctypes.c_double(v))

    dsyrk(b"L", b"N", ci(m), ci(k), cd(alpha), A.ctypes.data_as(_P(ctypes.c_double)), ci(m), cd(1.0), block, ci(n))
