"""Random streams for the SGLD noise: torch's generators, or MKL's Philox4x32-10 on the CPU.

Every Langevin step of Entropy-SGD draws one standard normal per parameter (Alg. 1,
line 6). On a CPU torch's generator is mt19937, one scalar draw at a time, and for a
small network those draws cost a large fraction of a minibatch gradient: enough on their
own to put an Entropy-SGD step well above the L SGD steps it must do. Intel MKL's VSL
draws the same normals, vectorised, several times faster (benchmarks/README.md,
``optim_step_cost``, keeps the comparison).

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

import torch
from torch import Tensor

from landscape.platform.mkl import KIND_PHILOX, PhiloxGenerator, vsl

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


def mkl_available() -> bool:
    """Whether MKL's VSL can be loaded (``pip install mkl``, and the platform's ``mkl`` service on)."""
    return vsl() is not None


Generator = torch.Generator | PhiloxGenerator


def generator_kind(generator: Generator) -> str:
    """``"torch"`` or ``"mkl-philox4x32x10"``: what a checkpoint records beside the state."""
    return generator.kind if isinstance(generator, PhiloxGenerator) else KIND_TORCH


def make_generator(device: torch.device | str, seed: int, noise_rng: str = "auto") -> Generator:
    """A noise generator for tensors on ``device``, seeded with ``seed`` (see the module docstring for
    ``noise_rng``)."""
    device = torch.device(device)
    if noise_rng not in NOISE_RNG_CHOICES and noise_rng != KIND_PHILOX and noise_rng != KIND_TORCH:
        raise ValueError(f"Unknown noise generator {noise_rng!r}; choose one of: {', '.join(NOISE_RNG_CHOICES)}.")
    if noise_rng in ("mkl", KIND_PHILOX):
        if device.type != "cpu":
            raise ValueError(
                f"The MKL noise generator draws on the CPU; the parameters are on {device}: use --noise-rng torch."
            )
        if not mkl_available():
            raise ValueError(
                "The MKL noise generator needs MKL: pip install mkl (the project's 'fast' extra), or use --noise-rng "
                "torch."
            )
        return PhiloxGenerator(seed)
    if noise_rng == "auto" and device.type == "cpu" and mkl_available():
        return PhiloxGenerator(seed)
    return torch.Generator(device=device).manual_seed(int(seed) % (1 << 63))


def standard_normal_(out: Tensor, generator: Generator) -> Tensor:
    """Fill ``out`` with N(0, 1) draws from ``generator`` (either kind), in place."""
    if isinstance(generator, PhiloxGenerator):
        return generator.normal_(out)
    return out.normal_(generator=generator)
