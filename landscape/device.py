"""Device selection: ``--device auto`` picks CUDA when present, else the CPU."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager

import torch
from torch import nn

from landscape.errors import LandscapeError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``spec`` ("auto", "cpu", "cuda", "cuda:1", "mps")."""
    if isinstance(spec, torch.device):
        return spec
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise LandscapeError(
            f"Unknown device '{spec}': use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(
            f"Device '{spec}' was asked for but this PyTorch build sees no CUDA GPU: "
            "use --device cpu (or auto)."
        )
    return device


@contextlib.contextmanager
def _exact_cuda(cudnn_off: bool) -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.enabled)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if cudnn_off:
        torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.enabled) = saved


def analysis_context(module: nn.Module, device: torch.device | str) -> Callable[[], ContextManager[None]]:
    """A factory of contexts for differentiating ``module`` on ``device`` to full precision.

    On the CPU it does nothing. On CUDA, inside the context:

    * TF32 is off for matmuls and cuDNN convolutions. cuDNN convolves float32 in TF32 by
      default (10-bit mantissa, relative error ~1e-3), too coarse for curvature whose
      statistics count eigenvalues below 1e-4 of the largest; float64 is never affected.
    * cuDNN is off entirely when ``module`` holds a recurrent layer: cuDNN's RNN kernels
      have no double backward (Hessian-vector products fail with "the derivative for
      '_cudnn_rnn_backward' is not implemented") and run no backward pass in eval mode.
      PyTorch's own LSTM kernels, used instead, support both.

    Training is not wrapped: it needs first derivatives in train mode only, where cuDNN's
    RNNs work and TF32 is the user's choice.
    """
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext
    has_rnn = any(isinstance(m, nn.RNNBase) for m in module.modules())
    return functools.partial(_exact_cuda, has_rnn)
