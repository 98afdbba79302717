"""A trained network as a function of its parameters, for the perturbation-based measures.

Local energy, epsilon-sharpness, the PAC-Bayes sigma' and the Fisher-Rao norm all ask
the same thing: the mean loss and error of the network at parameters w' near the trained
w, on fixed data. :class:`NetworkFunction` holds a private copy of the model in
evaluation mode (BatchNorm running statistics used as they are, never updated; dropout
off), the data as batches, and the names of the parameter tensors that are perturbed
(all trainable ones unless told); everything else (other parameters, buffers) stays
fixed and is listed in the results.

Noise models (DESIGN.md sec. 4, Dinh et al. 2017):

* ``multiplicative``: w' = w * (1 + sigma z). Invariant to the layer-rescaling symmetry
  of ReLU networks (scaling one layer by a > 0 and the next by 1/a scales w and its
  perturbation alike), so measures built on it cannot be gamed by reparametrisation.
* ``additive``: w' = w + sigma z. Not invariant; kept because older papers use it.

z is standard normal, drawn in float64 on the CPU from an explicit generator in the order
of the parameter names, then cast, so the same seed gives the same z on every device and
in every precision.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.curvature.operators import check_parameter_names, select_parameters
from landscape.device import analysis_context
from landscape.errors import LandscapeError
from landscape.losses import cross_entropy

__all__ = ["NOISES", "NetworkFunction", "as_batches", "as_splits", "check_parameter_names"]

NOISES = ("multiplicative", "additive")
Batch = tuple[Tensor, Tensor]


def as_batches(data, batch_size: int = 1024) -> list[Batch]:
    """Normalise data to a list of ``(inputs, targets)`` batches.

    Accepts a :class:`landscape.data.Dataset` (or anything with ``.inputs`` and
    ``.targets``), a pair of tensors ``(inputs, targets)``, or an iterable of batches.
    """
    if batch_size < 1:
        raise LandscapeError(f"batch size must be >= 1, got {batch_size}.")
    if hasattr(data, "inputs") and hasattr(data, "targets"):
        data = (data.inputs, data.targets)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        inputs, targets = data
        if inputs.shape[0] != targets.shape[0]:
            raise LandscapeError(f"inputs and targets differ in length ({inputs.shape[0]} vs {targets.shape[0]}).")
        return [
            (inputs[i : i + batch_size], targets[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size)
        ]
    try:
        batches = [(x, y) for x, y in data]
    except (TypeError, ValueError):
        raise LandscapeError("data must be a Dataset, a pair (inputs, targets) of tensors, or an iterable of "
                             "(inputs, targets) batches.") from None
    if not batches:
        raise LandscapeError("No samples were given: pass at least one batch.")
    return batches


def as_splits(data, batch_size: int = 1024) -> dict[str, list[Batch]]:
    """``{"train": batches, "test": batches}`` from a mapping, or ``{"train": ...}`` from one data set."""
    if isinstance(data, Mapping):
        if not data:
            raise LandscapeError("data is an empty mapping: give at least one split, e.g. {'train': dataset}.")
        return {str(name): as_batches(value, batch_size) for name, value in data.items()}
    return {"train": as_batches(data, batch_size)}


class NetworkFunction:
    """Mean loss and error of a private, evaluation-mode copy of ``model`` at given parameters.

    ``params`` selects the perturbed parameter tensors (names or module prefixes, as in
    the curvature operators); ``dtype``/``device`` default to the model's.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        params: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        loss_fn: Callable[..., Tensor] | None = None,
    ) -> None:
        first = next(iter(model.parameters()), None)
        if first is None:
            raise LandscapeError("The model has no parameters to perturb.")
        self.dtype = dtype or first.dtype
        self.device = torch.device(device) if device is not None else first.device
        self.loss_fn = loss_fn or cross_entropy
        self.module = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        self.module.eval()
        self._exact = analysis_context(self.module, self.device)  # TF32 / cuDNN-RNN off on CUDA
        self.names = select_parameters(self.module, params)
        named = dict(self.module.named_parameters())
        self.base = {n: named[n].detach() for n in self.names}
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.base}
        self.buffers = {n: b for n, b in self.module.named_buffers()}
        self.evaluations = 0

    @property
    def num_perturbed(self) -> int:
        return sum(p.numel() for p in self.base.values())

    def description(self) -> dict:
        """Which tensors are perturbed and which are held fixed (for the result files)."""
        return {
            "perturbed": list(self.names),
            "num_perturbed": self.num_perturbed,
            "fixed_parameters": list(self.fixed),
            "fixed_buffers": list(self.buffers),
            "mode": "eval",
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def prepare(self, batches: Iterable[Batch]) -> list[Batch]:
        out = []
        for x, y in batches:
            x = x.to(self.device)
            if x.is_floating_point():
                x = x.to(self.dtype)
            out.append((x, y.to(self.device)))
        return out

    def logits(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        with self._exact():
            return functional_call(self.module, {**self.fixed, **self.buffers, **params}, (x,))

    @torch.no_grad()
    def evaluate(self, params: Mapping[str, Tensor], batches: Sequence[Batch]) -> tuple[float, float]:
        """(mean loss, mean error) over every predicted position of ``batches``.

        ``loss_fn(outputs, targets)`` is any callable returning the MEAN over the batch's
        targets (as the curvature operators assume), so batch means are weighted by their
        target counts. The error is the argmax mismatch for class targets and NaN for real
        ones (regression has no error rate).
        """
        self.evaluations += 1
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        wrong = 0
        count = 0
        for x, y in batches:
            logits = self.logits(params, x)
            total += self.loss_fn(logits, y).double() * y.numel()
            if not y.is_floating_point():
                wrong += int((logits.argmax(dim=-1) != y).sum())
            count += y.numel()
        classes = not batches or not batches[0][1].is_floating_point()
        return float(total) / count, wrong / count if classes else math.nan

    def draw(self, generator: torch.Generator) -> dict[str, Tensor]:
        """One standard-normal z per perturbed tensor (CPU generator, then moved to the device)."""
        return {
            n: torch.randn(p.shape, generator=generator, dtype=torch.float64).to(device=self.device, dtype=self.dtype)
            for n, p in self.base.items()
        }

    def perturb(self, z: Mapping[str, Tensor], sigma: float, noise: str) -> dict[str, Tensor]:
        """w * (1 + sigma z) (multiplicative) or w + sigma z (additive)."""
        if noise == "multiplicative":
            return {n: w * (1.0 + sigma * z[n]) for n, w in self.base.items()}
        if noise == "additive":
            return {n: w + sigma * z[n] for n, w in self.base.items()}
        raise LandscapeError(f"noise must be one of {', '.join(NOISES)}, got '{noise}'.")
