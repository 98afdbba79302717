"""Diagonal Fisher information, three ways (paper Sec. 5.1 (iv), Fig. 3c).

* ``empirical``: diag F = (1/N) sum_i g_i^2, per-sample gradients at the observed labels
  (vmapped, in chunks of ``sample_chunk`` samples so memory stays bounded).
* ``mc``: the same at labels drawn from the model's predictive distribution (the "true"
  Fisher), ``mc_samples`` draws per input, averaged (no factor of the class count).
* ``exact``: the true Fisher with the expectation over labels taken exactly,
  (1/N) sum_i sum_c p_c(x_i) g_ic^2 with g_ic the gradient at label c: C gradients per
  sample. For cross-entropy this is the diagonal of the generalized Gauss-Newton matrix
  (what BackPACK calls DiagGGNExact) and the limit of ``mc`` as the draws grow.
* ``adam``: the paper's proxy from the moments Adam keeps, diag I = E[g^2] - (E g)^2,
  with E[g^2] ~ v_t / (1 - beta2^t) and E g ~ m_t / (1 - beta1^t) (bias-corrected
  exponential averages, Kingma & Ba 2015 Alg. 1). Needs a checkpoint of an Adam run.
  The two averages have different horizons (beta1 = 0.9, beta2 = 0.999), so the proxy
  can be negative: the paper's Fig. 3c shows exactly such negative entries. We keep
  them (no clipping) so the figure can be reproduced.
"""

from __future__ import annotations

import torch

from landscape.curvature.operators import FisherOperator
from landscape.errors import LandscapeError


def diagonal_fisher(op: FisherOperator, *, exact_expectation: bool = False) -> torch.Tensor:
    """``diag F`` of a :class:`FisherOperator` (empirical or Monte-Carlo), flat.

    ``exact_expectation=True`` ignores the operator's kind and returns the true Fisher's
    diagonal with the label expectation summed over all classes (= diag GGN for
    cross-entropy); classifiers only.
    """
    if exact_expectation:
        return exact_fisher_diagonal(op)
    total = torch.zeros(op.shape[0], dtype=op.dtype, device=op.device)
    for index, ((x, y), w) in enumerate(zip(op.batches, op.weights)):
        if op.fisher_kind == "empirical":
            G = op.per_sample_gradients(x, y)
            total += w * (G * G).mean(dim=0)
        else:
            labels = op._sampled_labels()[index]
            acc = torch.zeros_like(total)
            for m in range(op.mc_samples):
                G = op.per_sample_gradients(x, labels[m])
                acc += (G * G).mean(dim=0)
            total += w * acc / op.mc_samples
    return total


def exact_fisher_diagonal(op: FisherOperator) -> torch.Tensor:
    """(1/N) sum_i sum_c p_c(x_i) g_ic^2: the true Fisher's (= the GGN's) diagonal, exactly.

    One vmapped per-sample gradient pass per class c, at label c for every sample,
    weighted by the (detached) predicted probability p_c(x_i).
    """
    total = torch.zeros(op.shape[0], dtype=op.dtype, device=op.device)
    for (x, y), w in zip(op.batches, op.weights):
        with torch.no_grad():
            probs = torch.softmax(op.logits(op.params, x), dim=-1)
        if probs.dim() != 2:
            raise LandscapeError("The exact Fisher diagonal is for classifiers (one label per sample); "
                                 "for sequence models use --fisher mc.")
        acc = torch.zeros_like(total)
        for c in range(probs.shape[1]):
            labels = torch.full_like(y, c)
            G = op.per_sample_gradients(x, labels)
            acc += (probs[:, c : c + 1] * G * G).sum(dim=0)
        total += w * acc / x.shape[0]
    return total


def adam_fisher_diagonal(optimizer_state: dict, param_names: list[str], param_shapes: list[torch.Size]) -> torch.Tensor:
    """``E[g^2] - (E g)^2`` from a torch Adam ``state_dict`` (flat, parameter order).

    ``optimizer_state`` is ``checkpoint["optimizer"]["state_dict"]``; its per-parameter
    entries are keyed by position in the model's ``parameters()`` order.
    """
    state = optimizer_state.get("state", {})
    groups = optimizer_state.get("param_groups", [])
    if not groups or "betas" not in groups[0]:
        raise LandscapeError(
            "--fisher adam needs a checkpoint trained with Adam (its state holds the gradient moments): "
            "this one was not; use --fisher empirical or mc."
        )
    beta1, beta2 = groups[0]["betas"]
    pieces = []
    for index, shape in enumerate(param_shapes):
        entry = state.get(index, state.get(str(index)))
        if entry is None or "exp_avg" not in entry or "exp_avg_sq" not in entry:
            raise LandscapeError(
                f"The checkpoint's Adam state has no moments for parameter '{param_names[index]}' "
                "(was it trained for at least one step?)."
            )
        step = float(entry["step"]) if "step" in entry else 1.0
        mean = entry["exp_avg"].double() / (1 - beta1**step)
        second = entry["exp_avg_sq"].double() / (1 - beta2**step)
        if tuple(mean.shape) != tuple(shape):
            raise LandscapeError(f"The Adam state does not match parameter '{param_names[index]}' of the model.")
        pieces.append((second - mean * mean).reshape(-1))
    return torch.cat(pieces)
