"""Optional Intel MKL (``pip install mkl``, the ``fast`` extra): eigensolver and random streams.

Two services, both loaded with ctypes from ``libmkl_rt`` and both optional (every caller
has a fallback when :func:`load` returns None; ``LANDSCAPE_NO_MKL=1`` forces it):

* ``?syevd`` through LAPACKE, for exact spectra (:mod:`landscape.spectra.exact`);
* VSL's Philox4x32-10 stream with inverse-CDF Gaussians, for the SGLD noise of the
  Entropy optimizers (:mod:`landscape.optim.rng`).

MKL's ``?syevd`` is several times faster than the OpenBLAS that numpy/scipy wheels
bundle on x86 (measured here: 4.7x at n = 3,000, both in place, eigenvalues only; see
benchmarks/). The PyPI ``mkl`` wheel ships ``libmkl_rt`` but no Python binding, so we
load it with ctypes. Its threading layer is set to GNU OpenMP, the runtime PyTorch
already loaded, so the process does not host two OpenMP runtimes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np

_LIB = None
_SEARCHED = False
_LAPACK_COL_MAJOR = 102
_MKL_THREADING_GNU = 3


def load() -> ctypes.CDLL | None:
    """The MKL runtime library, or None if it is not installed."""
    global _LIB, _SEARCHED
    if _SEARCHED:
        return _LIB
    _SEARCHED = True
    if os.environ.get("LANDSCAPE_NO_MKL"):
        return None
    candidates = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")), reverse=True)
    found = ctypes.util.find_library("mkl_rt")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        try:
            lib.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_THREADING_GNU))
        except AttributeError:
            pass
        for name, ctype in (("LAPACKE_dsyevd", ctypes.c_double), ("LAPACKE_ssyevd", ctypes.c_float)):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                           ctypes.c_void_p]
        _LIB = lib
        break
    return _LIB


def syevd_values_(A: np.ndarray) -> np.ndarray:
    """All eigenvalues of the Fortran-ordered symmetric ``A`` (destroyed), ascending."""
    lib = load()
    if lib is None:
        raise RuntimeError("MKL is not installed (pip install mkl)")
    if not A.flags.f_contiguous or A.dtype not in (np.float32, np.float64):
        raise ValueError("syevd_values_ needs a Fortran-contiguous float32/float64 array")
    n = A.shape[0]
    w = np.empty(n, dtype=A.dtype)
    fn = lib.LAPACKE_dsyevd if A.dtype == np.float64 else lib.LAPACKE_ssyevd
    info = fn(_LAPACK_COL_MAJOR, b"N", b"L", n, A.ctypes.data, n, w.ctypes.data)
    if info != 0:
        raise RuntimeError(f"MKL ?syevd failed with info = {info}")
    return w


# -- VSL random streams (mkl_vsl_defines.h) ------------------------------------------------
VSL_BRNG_PHILOX4X32X10 = 16 << 20
VSL_RNG_METHOD_GAUSSIAN_ICDF = 2
VSL_RNG_METHOD_UNIFORMBITS32_STD = 0
_VSL_READY = False


def vsl() -> ctypes.CDLL | None:
    """The MKL library with the VSL entry points typed, or None if MKL is not installed."""
    global _VSL_READY
    lib = load()
    if lib is None or _VSL_READY:
        return lib
    vp, i32, u32p = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_uint)
    signatures = {
        "vslNewStreamEx": [ctypes.POINTER(vp), i32, i32, u32p],
        "vslDeleteStream": [ctypes.POINTER(vp)],
        "vslGetStreamSize": [vp],
        "vslSaveStreamM": [vp, ctypes.c_char_p],
        "vslLoadStreamM": [ctypes.POINTER(vp), ctypes.c_char_p],
        "vsRngGaussian": [i32, vp, i32, vp, ctypes.c_float, ctypes.c_float],
        "vdRngGaussian": [i32, vp, i32, vp, ctypes.c_double, ctypes.c_double],
        "viRngUniformBits32": [i32, vp, i32, vp],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = argtypes
    _VSL_READY = True
    return lib


def vsl_check(status: int, what: str) -> None:
    """Raise RuntimeError for a non-zero VSL status."""
    if status != 0:
        raise RuntimeError(f"MKL {what} failed with VSL status {status}")
