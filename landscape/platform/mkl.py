"""Optional Intel MKL (``pip install mkl``, the ``fast`` extra): eigensolver and random streams.

Two services, both loaded with ctypes from ``libmkl_rt`` and both optional (every caller
has a fallback when :func:`load` returns None, as it does with the platform's ``mkl``
service off):

* ``?syevd`` through LAPACKE, for exact spectra (:mod:`landscape.spectra.exact`);
* VSL's Philox4x32-10 stream with inverse-CDF Gaussians, for the SGLD noise of the
  Entropy optimizers (:mod:`landscape.optim.rng`).

MKL's ``?syevd`` is several times faster than the OpenBLAS that numpy/scipy wheels
bundle on x86, which is what makes exact spectra of large nets practical. The PyPI
``mkl`` wheel ships ``libmkl_rt`` but no Python binding, so we load it with ctypes. Its
threading layer is set to GNU OpenMP, the runtime PyTorch already loaded, so the process
does not host two OpenMP runtimes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np
import torch
from torch import Tensor

from landscape.platform import current

_LIB = None
_SEARCHED = False
_LAPACK_COL_MAJOR = 102
_MKL_THREADING_GNU = 3


def load() -> ctypes.CDLL | None:
    """The MKL runtime library, or None if it is not installed or the ``mkl`` service is off."""
    global _LIB, _SEARCHED
    if not current().mkl:
        return None
    if _SEARCHED:
        return _LIB
    _SEARCHED = True
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
        for name in ("LAPACKE_dsyevd", "LAPACKE_ssyevd"):
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


# -- the Philox4x32-10 noise stream (landscape.optim.rng chooses between it and torch's) ---
KIND_PHILOX = "mkl-philox4x32x10"
_CHUNK = 1 << 30  # MKL_INT is 32-bit in MKL's LP64 interface: draw long tensors in pieces


class PhiloxGenerator:
    """A Philox4x32-10 stream from MKL's VSL, usable where the optimizers take a ``torch.Generator``.

    CPU only. Draws fill contiguous float32/float64 CPU tensors in place
    (:meth:`normal_`); other floating dtypes are drawn in float32 and cast. The state is
    VSL's own serialisation of the stream (key and counter), as a uint8 tensor.
    """

    kind = KIND_PHILOX

    def __init__(self, seed: int = 0) -> None:
        lib = vsl()
        if lib is None:
            raise RuntimeError(
                "MKL is not installed: pip install mkl (the project's 'fast' extra), or use the torch generator."
            )
        self._lib = lib
        self._stream = ctypes.c_void_p()
        self.device = torch.device("cpu")
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> PhiloxGenerator:
        """Restart the stream with Philox key ``seed`` (taken mod 2**64) and counter 0."""
        seed = int(seed) % (1 << 64)
        key = (ctypes.c_uint * 2)(seed & 0xFFFFFFFF, seed >> 32)
        fresh = ctypes.c_void_p()
        vsl_check(self._lib.vslNewStreamEx(ctypes.byref(fresh), VSL_BRNG_PHILOX4X32X10, 2, key), "vslNewStreamEx")
        self._replace(fresh)
        return self

    def _replace(self, fresh: ctypes.c_void_p) -> None:
        if self._stream.value:
            self._lib.vslDeleteStream(ctypes.byref(self._stream))
        self._stream = fresh

    def get_state(self) -> Tensor:
        """The stream's state (key and position) as a uint8 CPU tensor."""
        size = self._lib.vslGetStreamSize(self._stream)
        if size <= 0:
            raise RuntimeError(f"MKL vslGetStreamSize failed with VSL status {size}")
        buffer = ctypes.create_string_buffer(size)
        vsl_check(self._lib.vslSaveStreamM(self._stream, buffer), "vslSaveStreamM")
        return torch.frombuffer(bytearray(buffer.raw), dtype=torch.uint8).clone()

    def set_state(self, state: Tensor) -> None:
        """Continue from a state :meth:`get_state` returned."""
        raw = bytes(state.detach().to(device="cpu", dtype=torch.uint8).contiguous().numpy().tobytes())
        fresh = ctypes.c_void_p()
        status = self._lib.vslLoadStreamM(ctypes.byref(fresh), raw)
        if status != 0 or not fresh.value:
            raise ValueError(
                "This generator state is not a saved MKL Philox stream (was it written by a torch generator?)."
            )
        self._replace(fresh)

    def normal_(self, out: Tensor) -> Tensor:
        """Fill ``out`` (a CPU tensor) with N(0, 1) draws in place; returns ``out``."""
        if out.device.type != "cpu":
            raise ValueError(f"PhiloxGenerator draws on the CPU only, not into a tensor on {out.device}.")
        if out.dtype not in (torch.float32, torch.float64) or not out.is_contiguous():
            out.copy_(self.normal_(torch.empty(out.shape, dtype=torch.float32)))
            return out
        fn = self._lib.vsRngGaussian if out.dtype == torch.float32 else self._lib.vdRngGaussian
        flat = out.view(-1)
        for start in range(0, flat.numel(), _CHUNK):
            piece = flat[start : start + _CHUNK]
            vsl_check(fn(VSL_RNG_METHOD_GAUSSIAN_ICDF, self._stream, piece.numel(), piece.data_ptr(), 0.0, 1.0),
                           "v?RngGaussian")
        return out

    def uniform_bits32(self, n: int) -> Tensor:
        """The next ``n`` raw 32-bit outputs of the stream (int64 tensor), for checking the generator itself."""
        out = torch.empty(n, dtype=torch.int32)
        vsl_check(self._lib.viRngUniformBits32(VSL_RNG_METHOD_UNIFORMBITS32_STD, self._stream, n, out.data_ptr()),
                       "viRngUniformBits32")
        return out.to(torch.int64) & 0xFFFFFFFF

    # a copy owns its own stream, because a copied pointer would be freed twice
    def __deepcopy__(self, memo: dict) -> PhiloxGenerator:
        twin = PhiloxGenerator()
        twin.set_state(self.get_state())
        return twin

    def __reduce__(self):
        return (_philox_from_state, (self.get_state(),))

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and stream.value:
            self._lib.vslDeleteStream(ctypes.byref(stream))

    def __repr__(self) -> str:
        return f"PhiloxGenerator(device='cpu', kind='{self.kind}')"


def _philox_from_state(state: Tensor) -> PhiloxGenerator:
    generator = PhiloxGenerator()
    generator.set_state(state)
    return generator
