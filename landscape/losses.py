"""The training loss and the metrics every stage reports.

One definition of "the loss" for the whole toolkit: the mean cross-entropy over all
predicted positions (one per sample for classifiers, one per token for sequence models).
Curvature stages (docs/design.md sec. 4) take the mean of this over their N samples.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from landscape.data import Dataset


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for logits ``(B, C)`` with targets ``(B,)``, or ``(B, T, V)`` with ``(B, T)``."""
    if logits.dim() == targets.dim() + 1 and logits.dim() > 2:
        logits = logits.reshape(-1, logits.shape[-1])
        targets = targets.reshape(-1)
    return F.cross_entropy(logits, targets, reduction=reduction)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 1000,
    limit: int | None = None,
) -> dict[str, float]:
    """Mean loss and error (and perplexity for sequence tasks) in eval mode.

    ``limit`` evaluates the first ``limit`` samples only (deterministic subset). The
    model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    total_loss = 0.0
    wrong = 0
    count = 0
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            inputs = dataset.inputs[start:stop].to(device, non_blocking=True)
            targets = dataset.targets[start:stop].to(device, non_blocking=True)
            logits = model(inputs)
            total_loss += float(cross_entropy(logits, targets, reduction="sum"))
            wrong += int((logits.argmax(dim=-1) != targets).sum())
            count += targets.numel()
    finally:
        model.train(was_training)
    loss = total_loss / max(count, 1)
    result = {"loss": loss, "error": wrong / max(count, 1)}
    if dataset.task == "sequence":
        result["perplexity"] = math.exp(min(loss, 700.0))
    return result
