"""Random streams for the SGLD noise: torch's generators, or MKL's Philox4x32-10 on the CPU.

Every Langevin step of Entropy-SGD draws one standard normal per parameter (Alg. 1,
line 6). On a CPU torch's generator is mt19937, one scalar draw at a time: about 4-7 ns
per normal here, i.e. 0.2-0.35 ms for small-mnistfc's 50,890 parameters beside a
0.55-0.75 ms minibatch gradient, which alone put an Entropy-SGD step 20% above the
L SGD steps it must do (benchmarks/README.md, ``optim_step_cost``). Intel MKL's VSL
draws the same normals, vectorised, in about 50-60 us (``benchmarks/optim_step_cost.py``
keeps the comparison).

:class:`PhiloxGenerator` wraps a VSL Philox4x32-10 stream (the counter-based generator of
Salmon et al. 2011, also behind torch's CUDA generator) with inverse-CDF Gaussians, and
duck-types the parts of ``torch.Generator`` the optimizers use: ``device``,
``manual_seed``, ``get_state``/``set_state`` (a uint8 tensor, so checkpoints stay
``weights_only``-loadable) and :func:`standard_normal_`. A 64-bit seed is Philox's key;
the counter starts at 0, so the stream is the published Philox4x32-10 sequence (the test
suite checks it against a reference implementation of the round function).

Choosing (``noise_rng`` in :func:`make_generator`, ``landscape train --noise-rng``):

* ``"auto"`` (default): Philox when the tensors live on the CPU and MKL loads, else torch;
* ``"torch"``: a ``torch.Generator`` on the device (mt19937 on CPU, Philox on CUDA);
* ``"mkl"``: Philox through MKL, an error if MKL is missing or the device is not the CPU.

The two kinds give different (equally valid) noise for the same seed; a run records the
kind it used and a resumed run keeps it, so resuming stays bit-identical. MKL's
inverse-CDF may round differently on CPUs with other vector instruction sets, so the
draws are reproducible on one machine, not guaranteed bit-equal across machines
(torch's CPU stream is).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from landscape import _mkl

__all__ = [
    "NOISE_RNG_CHOICES",
    "PhiloxGenerator",
    "generator_kind",
    "make_generator",
    "mkl_available",
    "standard_normal_",
]

NOISE_RNG_CHOICES = ("auto", "torch", "mkl")
KIND_TORCH = "torch"
KIND_PHILOX = "mkl-philox4x32x10"
_CHUNK = 1 << 30  # MKL_INT is 32-bit in MKL's LP64 interface: draw long tensors in pieces


def mkl_available() -> bool:
    """Whether MKL's VSL can be loaded (``pip install mkl``; ``LANDSCAPE_NO_MKL`` unset)."""
    return _mkl.vsl() is not None


class PhiloxGenerator:
    """A Philox4x32-10 stream from MKL's VSL, usable where the optimizers take a ``torch.Generator``.

    CPU only. Draws fill contiguous float32/float64 CPU tensors in place
    (:meth:`normal_`); other floating dtypes are drawn in float32 and cast. The state is
    VSL's own serialisation of the stream (key and counter), as a uint8 tensor.
    """

    kind = KIND_PHILOX

    def __init__(self, seed: int = 0) -> None:
        lib = _mkl.vsl()
        if lib is None:
            raise RuntimeError("MKL is not installed: pip install mkl (the project's 'fast' extra), or use the torch generator.")
        self._lib = lib
        self._stream = ctypes.c_void_p()
        self.device = torch.device("cpu")
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> PhiloxGenerator:
        """Restart the stream with Philox key ``seed`` (taken mod 2**64) and counter 0."""
        seed = int(seed) % (1 << 64)
        key = (ctypes.c_uint * 2)(seed & 0xFFFFFFFF, seed >> 32)
        fresh = ctypes.c_void_p()
        _mkl.vsl_check(self._lib.vslNewStreamEx(ctypes.byref(fresh), _mkl.VSL_BRNG_PHILOX4X32X10, 2, key), "vslNewStreamEx")
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
        _mkl.vsl_check(self._lib.vslSaveStreamM(self._stream, buffer), "vslSaveStreamM")
        return torch.frombuffer(bytearray(buffer.raw), dtype=torch.uint8).clone()

    def set_state(self, state: Tensor) -> None:
        """Continue from a state :meth:`get_state` returned."""
        raw = bytes(state.detach().to(device="cpu", dtype=torch.uint8).contiguous().numpy().tobytes())
        fresh = ctypes.c_void_p()
        status = self._lib.vslLoadStreamM(ctypes.byref(fresh), raw)
        if status != 0 or not fresh.value:
            raise ValueError("This generator state is not a saved MKL Philox stream (was it written by a torch generator?).")
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
            _mkl.vsl_check(fn(_mkl.VSL_RNG_METHOD_GAUSSIAN_ICDF, self._stream, piece.numel(), piece.data_ptr(), 0.0, 1.0),
                           "v?RngGaussian")
        return out

    def uniform_bits32(self, n: int) -> Tensor:
        """The next ``n`` raw 32-bit outputs of the stream (int64 tensor), for checking the generator itself."""
        out = torch.empty(n, dtype=torch.int32)
        _mkl.vsl_check(self._lib.viRngUniformBits32(_mkl.VSL_RNG_METHOD_UNIFORMBITS32_STD, self._stream, n, out.data_ptr()),
                       "viRngUniformBits32")
        return out.to(torch.int64) & 0xFFFFFFFF

    # copies own their own stream (a copied pointer would be freed twice)
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


Generator = torch.Generator | PhiloxGenerator


def generator_kind(generator: Generator) -> str:
    """``"torch"`` or ``"mkl-philox4x32x10"``: what a checkpoint records beside the state."""
    return generator.kind if isinstance(generator, PhiloxGenerator) else KIND_TORCH


def make_generator(device: torch.device | str, seed: int, noise_rng: str = "auto") -> Generator:
    """A noise generator for tensors on ``device``, seeded with ``seed`` (see the module docstring for ``noise_rng``)."""
    device = torch.device(device)
    if noise_rng not in NOISE_RNG_CHOICES and noise_rng != KIND_PHILOX and noise_rng != KIND_TORCH:
        raise ValueError(f"Unknown noise generator {noise_rng!r}; choose one of: {', '.join(NOISE_RNG_CHOICES)}.")
    if noise_rng in ("mkl", KIND_PHILOX):
        if device.type != "cpu":
            raise ValueError(f"The MKL noise generator draws on the CPU; the parameters are on {device}: use --noise-rng torch.")
        if not mkl_available():
            raise ValueError("The MKL noise generator needs MKL: pip install mkl (the project's 'fast' extra), or use --noise-rng torch.")
        return PhiloxGenerator(seed)
    if noise_rng == "auto" and device.type == "cpu" and mkl_available():
        return PhiloxGenerator(seed)
    return torch.Generator(device=device).manual_seed(int(seed) % (1 << 63))


def standard_normal_(out: Tensor, generator: Generator) -> Tensor:
    """Fill ``out`` with N(0, 1) draws from ``generator`` (either kind), in place."""
    if isinstance(generator, PhiloxGenerator):
        return generator.normal_(out)
    return out.normal_(generator=generator)
