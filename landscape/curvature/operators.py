"""Hessian, Gauss-Newton and Fisher operators of a network's mean loss, from ``torch.func``.

The loss whose curvature we measure is the MEAN over the N chosen samples
(docs/design.md sec. 4)::

    L(w) = (1/N) sum_i l_i(w) = sum_b (|b| / N) * mean_{i in b} l_i(w),

so each batch contributes with weight |b|/N, a short last batch included. Products are
forward-over-reverse (``jvp`` of ``grad``: Pearlmutter 1994), a block ``V (n, k)`` is
handled by ``vmap`` over its columns.

* Hessian: ``H v = d/dt grad L(w + t v)``. :class:`HessianOperator` computes the same
  matrix by whichever of three equivalent schemes is fastest for the model at hand
  (picked once by timing, see its docstring): besides the ``vmap``-ed ``jvp`` of ``grad``
  above, reverse-over-forward ``H v = grad_w <grad_z l, J v>`` and reverse-over-reverse
  ``H v = grad_w <grad_w L_b, v>``.
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
import time
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap
from torch.overrides import TorchFunctionMode

from landscape.curvature.base import LinearOperator
from landscape.device import analysis_context
from landscape.errors import LandscapeError
from landscape.losses import cross_entropy
from landscape.platform.heap import Trimmer

Batch = tuple[torch.Tensor, torch.Tensor]


class NondeterministicOperatorError(LandscapeError):
    """Two evaluations of the same product differ (dropout / train-mode BatchNorm)."""


def _named_by(name: str, spec: str) -> bool:
    """A parameter tensor is named by its full name or by a prefix of whole module names."""
    return name == spec or name.startswith(spec + ".")


def check_parameter_names(model: nn.Module, params: Sequence[str] | None) -> None:
    """Refuse a ``params`` entry that names no parameter tensor or module (a typo must not pass silently)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for spec in params or ():
        if not any(_named_by(n, spec) for n in names):
            raise LandscapeError(
                f"--param '{spec}' matches no parameter; the model's parameters are {', '.join(names)}."
            )


def select_parameters(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    """Names of the trainable parameters to differentiate: all, or those named/prefixed."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        return names
    check_parameter_names(model, params)
    return [n for n in names if any(_named_by(n, spec) for spec in params)]


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
        # exact products on CUDA: TF32 off, cuDNN off for recurrent layers (no double backward)
        self._exact = analysis_context(self.module, self.device)
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

    @property
    def offsets(self) -> dict[str, int]:
        """Where each parameter tensor starts in the flat vector."""
        starts = [0]
        for size in self.sizes[:-1]:
            starts.append(starts[-1] + size)
        return dict(zip(self.names, starts))

    def flatten(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([d[n].reshape(-1) for n in self.names])

    def parameter_vector(self) -> torch.Tensor:
        return self.flatten(self.params)

    # -- model evaluation ------------------------------------------------------------
    def logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        with self._exact():
            return functional_call(self.module, {**self.frozen, **params}, (x,))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        with self._exact():  # the backward passes of a product too
            return super().matmat(V)

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

    def _clock(self) -> float:
        """Wall time for the timing-based choices, with the device's queued work finished."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # -- products --------------------------------------------------------------------
    def _batch_matmat(
        self, index: int, x: torch.Tensor, y: torch.Tensor, V: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(V)
        for index, ((x, y), w) in enumerate(zip(self.batches, self.weights)):
            out += w * self._batch_matmat(index, x, y, V)
        return out

    # columns one vmapped call handles at most; None: chunk_size (a subclass may bound it by memory)
    _vmap_chunk: int | None = None

    def _vmap_columns(self, fn: Callable[[torch.Tensor], torch.Tensor], V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 1:
            return fn(V[:, 0]).unsqueeze(1)
        chunk = self._vmap_chunk or self.chunk_size
        return vmap(fn, in_dims=1, out_dims=1, chunk_size=chunk, randomness="different")(V)

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


_LINEAR_IN_WEIGHT = (F.linear, F.conv1d, F.conv2d, F.conv3d)


class _DataLayerTangents(TorchFunctionMode):
    """Forward mode without the zero tangent of the data.

    For ``z = layer(x, W)`` with a constant input x (the data) and a dual weight, torch's
    forward rules compute ``layer(0, W) + layer(x, W_dot)``: the zero tangent of x is
    materialized and pushed through a full matmul/convolution, and its reverse pass
    costs another. Linear and convolution layers are linear in (W, b), so the tangent is
    exactly ``layer(x, W_dot, b_dot)``; this mode computes it that way. That first layer
    dominates an MLP on pixels (one of its three large matmuls instead of five).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func not in _LINEAR_IN_WEIGHT:
            return func(*args, **kwargs)
        rest = list(args)
        x = rest.pop(0) if rest else kwargs.pop("input")
        weight = rest.pop(0) if rest else kwargs.pop("weight")
        bias = rest.pop(0) if rest else kwargs.pop("bias", None)
        w_primal, w_tangent = fwAD.unpack_dual(weight)
        if w_tangent is None or x.requires_grad or fwAD.unpack_dual(x).tangent is not None:
            return func(x, weight, bias, *rest, **kwargs)
        b_primal, b_tangent = fwAD.unpack_dual(bias) if bias is not None else (None, None)
        primal = func(x, w_primal, b_primal, *rest, **kwargs)
        return fwAD.make_dual(primal, func(x, w_tangent, b_tangent, *rest, **kwargs))


class HessianOperator(ModelOperator):
    """The Hessian of the mean loss over the given batches (docs/design.md sec. 4).

    ``HessianOperator(model, loss_fn, batches, mode="eval", dtype=None, params=None)``:
    ``batches`` is an iterable of ``(inputs, targets)``; ``loss_fn(logits, targets)``
    returns the batch MEAN (default: cross-entropy); ``params`` restricts to the named
    parameter tensors (or module prefixes) for per-layer spectra.

    Every product is exact (no finite differences); which scheme computes it only changes
    the cost, and the cheapest depends on the network:

    * one vector (Lanczos, CG): ``"reverse-over-forward"``, the gradient of the
      directional derivative ``<grad_z l, J v>`` with ``J v`` from forward-mode dual
      numbers, or ``"reverse-over-reverse"``, the gradient of ``<grad_w L_b, v>``
      (Pearlmutter 1994, Sec. 3). The first never computes the gradient's own value (whose
      matmuls and convolutions are wasted work in the second), so it is usually the
      cheaper; the second needs no forward-mode rules (recurrent layers, some losses).
      ``hvp_method`` is picked by timing both on the first batch at the first product, and
      can be set by hand (``"forward-over-reverse"``, the ``jvp`` of ``grad``, is the
      fallback for layers that have neither);
    * a block ``V (n, k)``: ``"vmap"`` (the ``jvp`` of ``grad`` under ``vmap`` in
      chunks of ``chunk_size`` columns, fewer where their estimated memory would pass
      ``BLOCK_BYTES``; best for matmul-bound nets) or ``"retain"`` (one
      forward and first backward pass per batch, kept for one second backward pass per
      column: batched convolutions are slow on CPU). ``block_method`` is picked by timing
      the first ``min(k, chunk_size)`` columns on the first block.

    ``cache_graph=True`` keeps the first-backward graph of the whole mean loss
    (``sum_b (|b|/N) grad_w L_b`` with ``create_graph``) for the operator's lifetime, so
    each product is one second backward pass. The graph has two forms: "per-batch" (one
    forward pass per batch, summed) and, in eval mode with batches of one shape,
    "concatenated" (one forward pass over all N samples: the same activations kept, larger
    matmuls; faster per product for MLPs, slower for conv nets, whose big convolutions run
    better in smaller pieces on a CPU, hence the timing). With ``True`` the per-batch
    graph is built at once, and at the first single-vector product the concatenated one is
    timed against it and the faster kept. ``cache_graph="auto"`` (the default) decides at
    the second single-vector product: if the graph would hold at most ``AUTO_CACHE_BYTES``
    (``estimate_graph_bytes()``), each form is built in turn and one product timed through
    it against the uncached product just made; the fastest of the three is kept. Blocks of
    vectors (dense builds) keep their own schemes under "auto"; only ``cache_graph=True``
    sends them through the graph. ``cache_decision`` records the outcome (form and
    speed-up); ``cached_graph_bytes`` what was kept.
    """

    kind = "Hessian"
    AUTO_CACHE_BYTES = 512 * 2**20
    # vmapped block products: estimated bytes per column = this x the batch's graph; kept under BLOCK_BYTES
    VMAP_BYTES_PER_GRAPH = 3
    BLOCK_BYTES = 256 * 2**20
    # trims glibc's arenas during "retain" blocks once their freed temporaries hold half of
    # BLOCK_BYTES (set by within(), because each second backward leaves small freed blocks
    # resident, see landscape.platform.heap.Trimmer); one per operator, not per block, because
    # a run of many small blocks would otherwise each leave its garbage to the next
    _trimmer: Trimmer | None = None
    # within(): a sub-batch's graph times this must fit the workspace, because a "retain"
    # column's second backward through float64 convolutions (CPU reference kernels, im2col
    # buffers) takes several times its batch's graph, more than a vmapped one.
    WITHIN_BYTES_PER_GRAPH = 8
    SINGLE_METHODS = ("reverse-over-forward", "reverse-over-reverse", "forward-over-reverse")
    BLOCK_METHODS = ("vmap", "retain")

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
        cache_graph: bool | str = "auto",
    ) -> None:
        if cache_graph not in (True, False, "auto"):
            raise LandscapeError(f"cache_graph must be True, False or 'auto', got {cache_graph!r}.")
        # None: picked by timing at the first product that needs it.
        self.hvp_method: str | None = "reverse-over-reverse" if cache_graph is True else None
        self.block_method: str | None = "retain" if cache_graph is True else None
        self.cache_graph = cache_graph is True
        # "auto": None until decided at the second single-vector product
        self.cache_decision: str | None = None if cache_graph == "auto" else ("on" if cache_graph else "off")
        self._single_products = 0
        self._graph_tuned = False
        self.graph_form: str | None = None
        self.cached_graph_bytes = 0
        self._graph: tuple | None = None  # (leaves, gradient of the whole mean loss with its graph)
        self._graph_call: tuple | None = None  # the same, listed as _graph_product passes it on
        super().__init__(model, loss_fn, batches, mode=mode, dtype=dtype, params=params, device=device,
                         chunk_size=chunk_size, check_determinism=check_determinism)
        if self.cache_graph:
            # built after the determinism check, which must see two independent passes
            self._build_graph()

    def within(self, workspace: int) -> HessianOperator:
        """This Hessian with its vmapped block products kept under ``workspace`` bytes.

        Lowers ``BLOCK_BYTES`` to ``workspace`` and, where one column of a batch would
        not fit (about ``WITHIN_BYTES_PER_GRAPH`` x the batch's graph, measured on 8
        samples), cuts the batches into sub-batches that do: the mean loss is the same
        sum of |b|/N-weighted batch means, so every product is too (to rounding). Only in
        eval mode (batch statistics tie a train-mode batch's samples together) and
        without a kept graph; otherwise, or where ``BLOCK_BYTES`` is already that small,
        it is returned unchanged. Its "retain" blocks give glibc's free pages back as they
        pile up (:class:`landscape.platform.heap.Trimmer`), since the freed temporaries of
        many second backward passes would otherwise stay resident.
        The new operator shares this one's model copy; its
        block scheme is picked afresh.
        """
        workspace = int(workspace)
        if self.mode != "eval" or self.cache_graph or self._graph is not None or self.BLOCK_BYTES <= workspace:
            return self
        rows = max(1, int(workspace // (self.WITHIN_BYTES_PER_GRAPH * self.graph_bytes_per_sample())))
        new = copy.copy(self)  # shares the model copy and parameters (products only read them)
        new.batches = [(x[i : i + rows], y[i : i + rows]) for x, y in self.batches
                       for i in range(0, x.shape[0], rows)]
        new.weights = [x.shape[0] / self.num_samples for x, _ in new.batches]
        new.BLOCK_BYTES = workspace
        # a vmapped column through a small sub-batch costs about what a retained one does,
        # more than VMAP_BYTES_PER_GRAPH on conv nets
        new.VMAP_BYTES_PER_GRAPH = self.WITHIN_BYTES_PER_GRAPH
        new._trimmer = Trimmer(workspace // 2)
        new.block_method, new._vmap_chunk = None, None  # picked afresh for the smaller batches
        return new

    def _graph_forms(self) -> list[str]:
        forms = ["per-batch"]
        if (self.mode == "eval" and len(self.batches) > 1
                and len({(x.shape[1:], y.shape[1:]) for x, y in self.batches}) == 1):
            forms.append("concatenated")
        return forms

    def _build_graph(self, form: str = "per-batch") -> None:
        self._graph = self._graph_call = None  # the old one (if any) is freed before the new one is built
        held: dict[int, int] = {}
        leaves, total = self._leaves(), None
        batches, weights = self.batches, self.weights
        if form == "concatenated":
            # In eval mode the samples are independent and the loss is a per-sample mean, so
            # sum_b (|b|/N) L_b is the mean over the concatenated batches: one forward pass.
            batches, weights = [(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))], [1.0]
        with self._count_saved(held), torch.enable_grad():
            # one graph for sum_b (|b|/N) grad L_b: a product is then a single second
            # backward pass (one engine call, the batch weighting done inside the graph)
            for (x, y), w in zip(batches, weights):
                _, grads = self._first_backward(x, y, leaves)
                grads = list(grads) if w == 1.0 else [w * g for g in grads]
                total = grads if total is None else [t + g for t, g in zip(total, grads)]
        self._graph = (leaves, total)
        self.graph_form = form
        self.cached_graph_bytes = self._graph_bytes(held, total)
        # products through it: one engine call; gradient entries without a graph give 0. What every
        # product passes to the engine is listed once, because on a small net the per-call Python
        # around a product is a visible share of its cost
        live = [i for i, g in enumerate(total) if g.requires_grad]
        self._graph_call = ([total[i] for i in live], list(leaves.values()), [(i, self.shapes[i]) for i in live])
        self._graph_reaches_all = False  # set by the first product: every leaf gets a gradient

    def _time_graph_forms(self, V: torch.Tensor, baseline: float | None) -> str:
        """Build each graph form, time one product through it, keep the fastest (or none, if
        ``baseline``, the uncached product's time, is faster). Returns the decision text."""
        times = {}
        for form in self._graph_forms():
            if not (self._graph is not None and self.graph_form == form):
                self._build_graph(form)
            start = self._clock()
            self._graph_product(V[:, 0])
            times[form] = self._clock() - start
        best = min(times, key=times.__getitem__)
        if baseline is not None and times[best] >= baseline:
            self._graph, self._graph_call, self.cached_graph_bytes = None, None, 0
            return f"off (not faster: {times[best] / baseline:.2f}x the time)"
        if self.graph_form != best:
            self._build_graph(best)
        against = f"{baseline / times[best]:.2f}x faster" if baseline is not None else "timed fastest"
        return f"on ({best}, {against})"

    # -- building blocks ---------------------------------------------------------------
    def _leaves(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().requires_grad_(True) for n, p in self.params.items()}

    def _grads(self, outputs, leaves: dict[str, torch.Tensor], grad_outputs=None, *,
               retain_graph: bool = False) -> list[torch.Tensor]:
        """``d/dw sum_i <outputs_i, grad_outputs_i>`` per parameter; those it does not reach give 0."""
        grad_outputs = [None] * len(outputs) if grad_outputs is None else grad_outputs
        pairs = [(o, t) for o, t in zip(outputs, grad_outputs) if o.requires_grad]
        if not pairs:
            return [torch.zeros_like(p) for p in leaves.values()]
        return list(torch.autograd.grad([o for o, _ in pairs], list(leaves.values()), [t for _, t in pairs],
                                        retain_graph=retain_graph, allow_unused=True, materialize_grads=True))

    def _flat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in parts])

    def _first_backward(self, x, y, leaves=None):
        """``(leaves, grad_w L_b)`` with the graph of the gradient kept (``create_graph``)."""
        leaves = self._leaves() if leaves is None else leaves
        with torch.enable_grad():
            loss = self.batch_loss(leaves, x, y)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True,
                                        materialize_grads=True)
        return leaves, grads

    def _second_backward(self, graph, tangents: dict[str, torch.Tensor], *, retain_graph: bool):
        leaves, grads = graph
        with torch.enable_grad():
            return self._grads(grads, leaves, [tangents[n] for n in self.names], retain_graph=retain_graph)

    # -- the three single-vector schemes (per-parameter parts of H_b v) -----------------------
    def _hvp_reverse_over_forward(self, x, y, tangents, leaves) -> list[torch.Tensor]:
        with torch.enable_grad():
            with fwAD.dual_level():
                duals = {n: fwAD.make_dual(p, tangents[n]) for n, p in leaves.items()}
                with _DataLayerTangents():
                    outputs = self.logits(duals, x)
                if not isinstance(outputs, torch.Tensor):  # a dict of outputs: the reverse schemes serve it
                    raise NotImplementedError("reverse-over-forward needs the model to return one tensor")
                z, z_dot = fwAD.unpack_dual(outputs)
            if z_dot is None or not z.requires_grad:
                return [torch.zeros_like(p) for p in leaves.values()]
            # the loss is differentiated in reverse mode: forward-mode formulas of some
            # losses (log_softmax) are not themselves differentiable in torch 2.13
            (g_z,) = torch.autograd.grad(self.loss_fn(z, y), z, create_graph=True)
            return self._grads([(g_z * z_dot).sum()], leaves)

    def _hvp_reverse_over_reverse(self, x, y, tangents, leaves) -> list[torch.Tensor]:
        return self._second_backward(self._first_backward(x, y, leaves), tangents, retain_graph=False)

    def _hvp_forward_over_reverse(self, x, y, tangents, leaves) -> list[torch.Tensor]:
        _, hv = jvp(grad(lambda p: self.batch_loss(p, x, y)), (self.params,), (tangents,))
        return [hv[n] for n in self.names]

    def _tangents(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        # own storage per parameter: make_dual copies a tangent that is a view into v,
        # once per batch otherwise
        return {n: t.clone() for n, t in self.unflatten(v).items()}

    def _parts(self, method: str, x, y, tangents, leaves=None) -> list[torch.Tensor]:
        leaves = self._leaves() if leaves is None else leaves
        return {
            "reverse-over-forward": self._hvp_reverse_over_forward,
            "reverse-over-reverse": self._hvp_reverse_over_reverse,
            "forward-over-reverse": self._hvp_forward_over_reverse,
        }[method](x, y, tangents, leaves)

    def _single(self, method: str, x, y, v: torch.Tensor) -> torch.Tensor:
        return self._flat(self._parts(method, x, y, self._tangents(v)))

    def _graph_product(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` through the kept graph: one second backward pass, no per-call bookkeeping."""
        outputs, leaves, live = self._graph_call
        if not outputs:  # the gradient does not depend on the parameters: H = 0
            return torch.zeros_like(v)
        split = torch.split(v, self.sizes)
        tangents = [split[i].view(shape) for i, shape in live]
        # no enable_grad: a backward pass without create_graph runs in any grad mode
        if self._graph_reaches_all:  # the plain engine call: allow_unused / materialize cost time
            parts = torch.autograd.grad(outputs, leaves, tangents, retain_graph=True)
        else:
            parts = torch.autograd.grad(outputs, leaves, tangents, retain_graph=True, allow_unused=True)
            self._graph_reaches_all = all(p is not None for p in parts)  # fixed by the graph: checked once
            parts = [torch.zeros_like(leaf) if p is None else p for p, leaf in zip(parts, leaves)]
        return torch.cat([t.reshape(-1) for t in parts])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        # one vector through a kept (and, if forced, already tuned) graph: straight to the engine,
        # without the block path's reshapes and checks (Lanczos and CG call this thousands of times)
        if (self._graph is not None and (self._graph_tuned or not self.cache_graph) and v.dim() == 1
                and v.shape[0] == self.shape[1] and v.dtype == self.dtype and v.device == self.device):
            with self._exact():
                out = self._graph_product(v)
            self.count += 1
            return out
        return super().matvec(v)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if self.cache_graph and V.shape[1] == 1 and not self._graph_tuned:
            self._graph_tuned = True  # cache_graph=True: pick the faster graph form once
            self.cache_decision = self._time_graph_forms(V, None)
        if self._graph is not None and V.shape[1] == 1:
            return self._graph_product(V[:, 0]).unsqueeze(1)
        if self._graph is not None and self.cache_graph:  # blocks through the graph only when asked
            return self._retain(None, None, V, graph=self._graph)
        if V.shape[1] != 1 or self.hvp_method is None:
            return super()._matmat(V)
        self._single_products += 1
        if self.cache_decision is None and self._single_products >= 2:
            return self._decide_cache(V)
        return self._uncached_single(V)

    def _decide_cache(self, V: torch.Tensor) -> torch.Tensor:
        """cache_graph="auto": time this product without and with the graph; keep the faster."""
        start = self._clock()
        out = self._uncached_single(V)
        uncached = self._clock() - start
        if self.estimate_graph_bytes() > self.AUTO_CACHE_BYTES:
            self.cache_decision = "off (graph too large)"
            return out
        self.cache_decision = self._time_graph_forms(V, uncached)
        return out

    def _uncached_single(self, V: torch.Tensor) -> torch.Tensor:
        # one vector: accumulate sum_b (|b|/N) H_b v parameter by parameter, in place
        out = torch.zeros_like(V)
        views = self.unflatten(out[:, 0])
        tangents, leaves = self._tangents(V[:, 0]), self._leaves()
        for (x, y), w in zip(self.batches, self.weights):
            for n, part in zip(self.names, self._parts(self.hvp_method, x, y, tangents, leaves)):
                views[n].add_(part, alpha=w)
        return out

    def _pick_single(self, x, y, v: torch.Tensor) -> torch.Tensor:
        """Time the two reverse schemes on this batch (twice each, interleaved), keep the faster."""
        order = list(self.SINGLE_METHODS[:2])
        results: dict[str, torch.Tensor] = {}
        times: dict[str, float] = {}
        failed: set[str] = set()
        for method in order + order[::-1]:
            if method in failed:
                continue
            start = self._clock()
            try:
                results[method] = self._single(method, x, y, v)
            except (RuntimeError, NotImplementedError):  # a layer without the needed AD rule
                failed.add(method)
                continue
            times[method] = min(times.get(method, math.inf), self._clock() - start)
        if not times:
            self.hvp_method = "forward-over-reverse"
            return self._single(self.hvp_method, x, y, v)
        self.hvp_method = min(times, key=times.__getitem__)
        return results[self.hvp_method]

    # -- blocks ----------------------------------------------------------------------------
    def _vmap_jvp_of_grad(self, x, y, V: torch.Tensor) -> torch.Tensor:
        def loss_of(p):
            return self.batch_loss(p, x, y)

        def hvp(v_flat):
            _, hv = jvp(grad(loss_of), (self.params,), (self.unflatten(v_flat),))
            return self.flatten(hv)

        return self._vmap_columns(hvp, V)

    def _retain(self, x, y, V: torch.Tensor, graph=None) -> torch.Tensor:
        k = V.shape[1]
        cached = graph is not None  # the operator's kept graph: never freed by a product
        graph = self._first_backward(x, y) if graph is None else graph
        cols = []
        for j in range(k):
            col = self._second_backward(graph, self.unflatten(V[:, j]), retain_graph=cached or j < k - 1)
            cols.append(self._flat(col))
            if self._trimmer is not None:
                self._trimmer()
        return torch.stack(cols, dim=1)

    def _block(self, method: str, x, y, V: torch.Tensor) -> torch.Tensor:
        return self._vmap_jvp_of_grad(x, y, V) if method == "vmap" else self._retain(x, y, V)

    def _pick_block(self, x, y, V: torch.Tensor) -> None:
        self._vmap_chunk = self._memory_bounded_chunk(x, y)
        c = min(V.shape[1], self._vmap_chunk)
        times = {}
        for method in ("retain", "vmap"):
            start = self._clock()
            try:
                self._block(method, x, y, V[:, :c])
            except (RuntimeError, NotImplementedError):
                continue
            times[method] = self._clock() - start
        self.block_method = min(times, key=times.__getitem__) if times else "vmap"

    def _batch_matmat(self, index, x, y, V):
        if V.shape[1] == 1:
            if self.hvp_method is None:
                return self._pick_single(x, y, V[:, 0]).unsqueeze(1)
            return self._single(self.hvp_method, x, y, V[:, 0]).unsqueeze(1)
        if self.block_method is None:
            self._pick_block(x, y, V)
        out = self._block(self.block_method, x, y, V)
        if self._trimmer is not None:  # after a vmapped block too (a retained one trims per column)
            self._trimmer()
        return out

    def _memory_bounded_chunk(self, x, y) -> int:
        """Columns per vmapped block product: ``chunk_size``, fewer where the estimate exceeds BLOCK_BYTES.

        A vmapped forward-over-reverse product carries, per column, a tangent of every
        activation the gradient's graph saves and of the backward pass: about
        VMAP_BYTES_PER_GRAPH times the graph of the batch. Unbounded, a conv net's block of
        columns can take several times the memory of the dense matrix it helps build.
        """
        chunk = self.chunk_size or 16
        per_column = self.VMAP_BYTES_PER_GRAPH * max(1, self._batch_graph_bytes(x, y))
        return int(max(1, min(chunk, self.BLOCK_BYTES // per_column)))

    # -- memory of cache_graph ---------------------------------------------------------------
    @staticmethod
    def _count_saved(held: dict[int, int]):
        """Record the storages autograd saves (address -> bytes) while the context is open."""

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            held[storage.data_ptr()] = storage.nbytes()
            return t

        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)

    def _graph_bytes(self, held: dict[int, int], grads) -> int:
        """Bytes saved for backward beyond what the operator holds anyway (parameters, inputs)."""
        own = {t.untyped_storage().data_ptr() for t in [*self.params.values(), *(x for x, _ in self.batches)]}
        return sum(b for ptr, b in held.items() if ptr not in own) + sum(g.numel() * g.element_size() for g in grads)

    def graph_bytes_per_sample(self, k: int = 8) -> float:
        """Bytes the first-backward graph saves per sample, measured once on the first ``k`` samples.

        A dense build sizes four things by it (rows pass, Kronecker factors, psi weights,
        within()): measured once per operator, and its within() copies inherit it (the
        same model and samples, cut differently).
        """
        cache = self.__dict__.setdefault("_graph_bytes_per_sample", {})
        if k not in cache:
            x, y = self.batches[0]
            size = min(k, int(x.shape[0]))
            cache[k] = max(1.0, self._batch_graph_bytes(x[:size], y[:size]) / size)
        return cache[k]

    def _batch_graph_bytes(self, x, y) -> int:
        """Bytes the first-backward graph of one batch saves (one forward and backward pass)."""
        held: dict[int, int] = {}
        with self._count_saved(held):
            _, grads = self._first_backward(x, y)
        return self._graph_bytes(held, grads)

    def estimate_graph_bytes(self) -> int:
        """Bytes that ``cache_graph=True`` would hold: the first batch's graph, scaled to N samples."""
        x, y = self.batches[0]
        return int(self._batch_graph_bytes(x, y) * self.num_samples / x.shape[0])


class GGNOperator(ModelOperator):
    """The generalized Gauss-Newton matrix ``sum_b (|b|/N) J_b^T H_z J_b`` (logits z).

    ``J v`` comes from forward mode (``jvp``) where every layer has a forward-mode rule.
    Where one has none (PyTorch's fused CUDA LSTM cell, used when cuDNN is off), it
    comes from reverse mode twice instead: ``u -> J^T u`` is linear, so its own
    vector-Jacobian product at any ``u`` with cotangent ``v`` is ``J v``. ``jv_method``
    records which was used ("forward" / "reverse"; None until the first product).
    """

    kind = "GGN"
    jv_method: str | None = None

    def _batch_matmat(self, index, x, y, V):
        def out_of(p):
            return self.logits(p, x)

        z, pullback = vjp(out_of, self.params)

        def loss_of_logits(zz):
            return self.loss_fn(zz, y)

        def jv_forward(v):
            return jvp(out_of, (self.params,), (v,))[1]

        def jv_reverse(v):
            _, transpose = vjp(lambda u: pullback(u)[0], torch.zeros_like(z))
            return transpose(v)[0]

        def product(jv_of):
            def ggn_vp(v_flat):
                jv = jv_of(self.unflatten(v_flat))
                _, hjv = jvp(grad(loss_of_logits), (z,), (jv,))
                (jt,) = pullback(hjv)
                return self.flatten(jt)

            return self._vmap_columns(ggn_vp, V)

        if self.jv_method is None:
            try:
                out = product(jv_forward)
                self.jv_method = "forward"
                return out
            except (RuntimeError, NotImplementedError):  # a layer without a forward-mode rule
                self.jv_method = "reverse"
        return product(jv_forward if self.jv_method == "forward" else jv_reverse)


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
