"""Hessian, Gauss-Newton and Fisher operators of a network's mean loss, from ``torch.func``.

The loss whose curvature we measure is the MEAN over the N chosen samples (DESIGN.md
sec. 4)::

    L(w) = (1/N) sum_i l_i(w) = sum_b (|b| / N) * mean_{i in b} l_i(w),

so each batch contributes with weight |b|/N, a short last batch included. Products are
forward-over-reverse (``jvp`` of ``grad``: Pearlmutter 1994), a block ``V (n, k)`` is
handled by ``vmap`` over its columns.

* Hessian: ``H v = d/dt grad L(w + t v)``.
* Generalized Gauss-Newton: ``G = sum_b (|b|/N) J_b^T H_z J_b`` with J the Jacobian of
  the logits z and H_z the Hessian of the (batch-mean) loss in z. For cross-entropy it
  equals the true Fisher (Martens 2020, Sec. 9.2).
* Fisher: empirical ``F = (1/N) sum_i g_i g_i^T`` with g_i the per-sample gradient at the
  observed label, or Monte-Carlo ``(1/(N M)) sum_i sum_m g_im g_im^T`` at labels drawn
  from the model's own predictive distribution (M draws per sample). No factor of C.

Operators work on a private copy of the model (in ``dtype`` and ``mode``): the caller's
model is never modified. ``mode="eval"`` is the default; in ``"train"`` mode dropout
or batch statistics can make products random, which is detected (two products of the
same vector must agree) and refused.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from landscape.curvature.base import LinearOperator
from landscape.errors import LandscapeError
from landscape.losses import cross_entropy

Batch = tuple[torch.Tensor, torch.Tensor]


class NondeterministicOperatorError(LandscapeError):
    """Two evaluations of the same product differ (dropout / train-mode BatchNorm)."""


def select_parameters(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    """Names of the trainable parameters to differentiate: all, or those named/prefixed."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        return names
    chosen = [n for n in names if any(n == s or n.startswith(s + ".") for s in params)]
    if not chosen:
        raise LandscapeError(
            f"No parameter matches {list(params)}: the model's parameters are {', '.join(names)}."
        )
    return chosen


class ModelOperator(LinearOperator):
    """Common machinery: a private model copy, flat <-> dict parameters, weighted batches."""

    kind = "model"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        batches: Iterable[Batch],
        *,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        params: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        chunk_size: int | None = 16,
        check_determinism: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("eval", "train"):
            raise LandscapeError(f"mode must be 'eval' or 'train', got '{mode}'.")
        first = next(iter(model.parameters()))
        self.dtype = dtype or first.dtype
        self.device = torch.device(device) if device is not None else first.device
        self.mode = mode
        self.loss_fn = loss_fn or cross_entropy
        self.chunk_size = chunk_size
        self.module = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        self.module.train(mode == "train")
        self.names = select_parameters(self.module, params)
        named = dict(self.module.named_parameters())
        self.params = {n: named[n].detach() for n in self.names}
        self.frozen = {n: p.detach() for n, p in named.items() if n not in self.params}
        self.frozen.update({n: b for n, b in self.module.named_buffers()})
        self.sizes = [p.numel() for p in self.params.values()]
        self.shapes = [p.shape for p in self.params.values()]
        n = sum(self.sizes)
        self.shape = (n, n)
        self.batches: list[Batch] = []
        for x, y in batches:
            x = x.to(self.device)
            if x.is_floating_point():
                x = x.to(self.dtype)
            self.batches.append((x, y.to(self.device)))
        if not self.batches:
            raise LandscapeError("No samples were given to the curvature operator: pass at least one batch.")
        self.num_samples = sum(int(x.shape[0]) for x, _ in self.batches)
        self.weights = [x.shape[0] / self.num_samples for x, _ in self.batches]
        if check_determinism:
            self._check_determinism()

    # -- parameter vectors ---------------------------------------------------------
    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(v, self.sizes), self.shapes)}

    def flatten(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([d[n].reshape(-1) for n in self.names])

    def parameter_vector(self) -> torch.Tensor:
        return self.flatten(self.params)

    # -- model evaluation ------------------------------------------------------------
    def logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, {**self.frozen, **params}, (x,))

    def batch_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.logits(params, x), y)

    def loss(self) -> float:
        """The mean loss over all N samples at the current parameters."""
        with torch.no_grad():
            return float(sum(w * self.batch_loss(self.params, x, y) for (x, y), w in zip(self.batches, self.weights)))

    def gradient(self) -> torch.Tensor:
        """The gradient of the mean loss, flat."""
        total = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        for (x, y), w in zip(self.batches, self.weights):
            g = grad(self.batch_loss)(self.params, x, y)
            total += w * self.flatten(g)
        return total

    # -- products --------------------------------------------------------------------
    def _batch_matmat(self, index: int, x: torch.Tensor, y: torch.Tensor, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(V)
        for index, ((x, y), w) in enumerate(zip(self.batches, self.weights)):
            out += w * self._batch_matmat(index, x, y, V)
        return out

    def _vmap_columns(self, fn: Callable[[torch.Tensor], torch.Tensor], V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 1:
            return fn(V[:, 0]).unsqueeze(1)
        return vmap(fn, in_dims=1, out_dims=1, chunk_size=self.chunk_size, randomness="different")(V)

    def _check_determinism(self) -> None:
        x, y = self.batches[0]
        g = torch.Generator().manual_seed(12345)
        v = torch.randn(self.shape[0], 1, generator=g, dtype=torch.float64).to(self.device, self.dtype)
        state = torch.random.get_rng_state()
        first = self._batch_matmat(0, x, y, v)
        second = self._batch_matmat(0, x, y, v)
        torch.random.set_rng_state(state)
        scale = float(first.abs().max()) or 1.0
        eps = torch.finfo(self.dtype).eps
        if float((first - second).abs().max()) > 1e3 * eps * scale:
            raise NondeterministicOperatorError(
                f"Two evaluations of the same {self.kind} product differ (mode='{self.mode}': dropout or batch "
                "statistics make it random); use mode='eval' (--mode eval) for a well-defined curvature."
            )


class HessianOperator(ModelOperator):
    """The Hessian of the mean loss over the given batches (DESIGN.md sec. 4).

    ``HessianOperator(model, loss_fn, batches, mode="eval", dtype=None, params=None)``:
    ``batches`` is an iterable of ``(inputs, targets)``; ``loss_fn(logits, targets)``
    returns the batch MEAN (default: cross-entropy); ``params`` restricts to the named
    parameter tensors (or module prefixes) for per-layer spectra.
    """

    kind = "Hessian"

    def _batch_matmat(self, index, x, y, V):
        def loss_of(p):
            return self.batch_loss(p, x, y)

        def hvp(v_flat):
            _, hv = jvp(grad(loss_of), (self.params,), (self.unflatten(v_flat),))
            return self.flatten(hv)

        return self._vmap_columns(hvp, V)


class GGNOperator(ModelOperator):
    """The generalized Gauss-Newton matrix ``sum_b (|b|/N) J_b^T H_z J_b`` (logits z)."""

    kind = "GGN"

    def _batch_matmat(self, index, x, y, V):
        def out_of(p):
            return self.logits(p, x)

        z, pullback = vjp(out_of, self.params)

        def loss_of_logits(zz):
            return self.loss_fn(zz, y)

        def ggn_vp(v_flat):
            _, jv = jvp(out_of, (self.params,), (self.unflatten(v_flat),))
            _, hjv = jvp(grad(loss_of_logits), (z,), (jv,))
            (jt,) = pullback(hjv)
            return self.flatten(jt)

        return self._vmap_columns(ggn_vp, V)


class FisherOperator(ModelOperator):
    """Fisher information of the mean loss: ``kind="empirical"`` or ``"mc"``.

    Empirical: ``(1/N) sum_i g_i g_i^T`` with ``g_i = grad l_i`` at the observed labels.
    Monte-Carlo ("true") Fisher: labels drawn from the model's softmax, ``mc_samples``
    draws per input, seeded by ``seed``; its expectation is the GGN for cross-entropy.
    Per-sample gradients are computed with ``vmap`` in chunks of ``sample_chunk``.
    """

    kind = "Fisher"

    def __init__(self, model, loss_fn, batches, *, kind: str = "empirical", mc_samples: int = 1, seed: int = 0,
                 sample_chunk: int = 256, **kwargs) -> None:
        if kind not in ("empirical", "mc"):
            raise LandscapeError(f"Fisher kind must be 'empirical' or 'mc', got '{kind}'.")
        self.fisher_kind = kind
        self.mc_samples = int(mc_samples)
        self.sample_chunk = sample_chunk
        self._labels: list[torch.Tensor] | None = None
        self.seed = seed
        self._vmap_samples = True
        super().__init__(model, loss_fn, batches, **kwargs)

    def _sampled_labels(self) -> list[torch.Tensor]:
        """Labels per batch, shape (M, B, ...) (drawn once, so the operator is fixed)."""
        if self._labels is None:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            labels = []
            for x, y in self.batches:
                with torch.no_grad():
                    probs = torch.softmax(self.logits(self.params, x).double(), dim=-1).cpu()
                flat = probs.reshape(-1, probs.shape[-1])
                draws = torch.multinomial(flat, self.mc_samples, replacement=True, generator=g)  # (B*T, M)
                labels.append(draws.T.reshape(self.mc_samples, *y.shape).to(self.device))
            self._labels = labels
        return self._labels

    def per_sample_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` gradients of each sample's own loss."""

        def single(p, xi, yi):
            return self.batch_loss(p, xi.unsqueeze(0), yi.unsqueeze(0))

        rows = []
        for start in range(0, x.shape[0], self.sample_chunk):
            xs, ys = x[start : start + self.sample_chunk], y[start : start + self.sample_chunk]
            if self._vmap_samples:
                try:
                    g = vmap(grad(single), in_dims=(None, 0, 0))(self.params, xs, ys)
                    rows.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in self.names], dim=1))
                    continue
                except RuntimeError:
                    # Some layers (e.g. one_hot, which checks its input's values) have no
                    # batching rule: fall back to one gradient per sample.
                    self._vmap_samples = False
            grad_single = grad(single)
            rows.append(torch.stack([self.flatten(grad_single(self.params, xi, yi)) for xi, yi in zip(xs, ys)]))
        return torch.cat(rows)

    def _batch_matmat(self, index, x, y, V):
        if self.fisher_kind == "empirical":
            G = self.per_sample_gradients(x, y)
            return G.T @ (G @ V) / x.shape[0]
        labels = self._sampled_labels()[index]  # (M, B, ...)
        x_rep = x.expand(self.mc_samples, *x.shape).reshape(-1, *x.shape[1:])
        G = self.per_sample_gradients(x_rep, labels.reshape(-1, *labels.shape[2:]))
        return G.T @ (G @ V) / (x.shape[0] * self.mc_samples)


def make_batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> list[Batch]:
    """Split N samples into consecutive batches of ``batch_size`` (the last may be short)."""
    if batch_size < 1:
        raise LandscapeError(f"batch size must be >= 1, got {batch_size}.")
    n = inputs.shape[0]
    return [(inputs[i : i + batch_size], targets[i : i + batch_size]) for i in range(0, n, batch_size)]


def num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
