"""Device selection: ``--device auto`` picks CUDA when present, else the CPU."""

from __future__ import annotations

import torch

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
