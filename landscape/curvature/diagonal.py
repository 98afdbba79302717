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
import torch.nn.functional as F
from torch import nn

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
    fast = _layerwise_diagonal(op)
    if fast is not None:
        return fast
    _check_gradient_memory(op)
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


def _check_gradient_memory(op: FisherOperator) -> None:
    """The per-sample gradient path holds a (batch, n) matrix a few times over: refuse, before any
    work, a batch that does not fit in host memory (the layer-wise path never builds it)."""
    from landscape import resources

    if op.device.type != "cpu" or not op.batches:
        return
    batch = max(int(x.shape[0]) for x, _ in op.batches)
    need = resources.per_sample_gradient_bytes(batch, op.shape[0], torch.empty(0, dtype=op.dtype).element_size())
    resources.check_in_memory(f"The diagonal Fisher of {op.shape[0]:,} parameters in batches of {batch}", need,
                              resources.available_memory(), "pass a smaller --batch-size")


_FAST_LAYERS = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
CONV_SAMPLE_CHUNK = 128
GGN_CHUNK_BYTES = 32 * 2**20


def _layer_of(op: FisherOperator) -> dict[str, tuple[str, nn.Module]] | None:
    """parameter name -> (module name, module) when every selected parameter sits in a supported layer."""
    modules = dict(op.module.named_modules())
    owner = {}
    for name in op.names:
        module_name, _, leaf = name.rpartition(".")
        module = modules.get(module_name)
        if not isinstance(module, _FAST_LAYERS) or leaf not in ("weight", "bias"):
            return None
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"
                                              or isinstance(module.padding, str)):
            return None
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and (module.training or not module.track_running_stats):
            return None
        owner[name] = (module_name, module)
    return owner


def _layerwise_diagonal(op: FisherOperator, *, exact_expectation: bool = False) -> torch.Tensor | None:
    """sum_i g_i^2 layer by layer from one backward pass per batch (no per-sample gradient matrix).

    For a layer y = W a + b the per-sample gradient is g_i a_i^T (Linear) or sum_p g_ip
    u_ip^T over the unfolded patches u (Conv2d), so its square needs only the layer's
    input and the per-sample output gradient, which one backward pass of the SUMMED loss
    gives (in eval mode no sample influences another's output). BatchNorm in eval mode is
    an affine map per channel: weight gradient sum_p g_ip xhat_ip, bias sum_p g_ip.
    Returns None (the caller falls back to vmapped per-sample gradients) for other
    layers, train mode, sequence inputs or a layer called more than once per forward.
    ``exact_expectation``: sum over every label c with per-sample weights p_c(x_i) (the
    GGN diagonal; one backward pass per class).
    """
    if op.mode != "eval":
        return None
    owner = _layer_of(op)
    if owner is None:
        return None
    layers = {module_name: module for module_name, module in owner.values()}
    total = {name: torch.zeros_like(op.params[name]) for name in op.names}

    def accumulate(x: torch.Tensor, y: torch.Tensor, weight: float, sample_weights: torch.Tensor | None = None) -> bool:
        logits, inputs, outputs = _traced_forward(op, layers, x)
        if logits is None or logits.dim() != 2:
            return False
        with torch.enable_grad():
            loss = op.loss_fn(logits, y) * x.shape[0]  # the SUM of per-sample losses
        names = list(layers)
        found = torch.autograd.grad(loss, [outputs[n] for n in names], allow_unused=True)
        if any(g is None for g in found):
            return False
        grads = {n: g.detach() for n, g in zip(names, found)}
        scale = weight / x.shape[0]
        if sample_weights is not None:  # sqrt: the squares below then carry sample_weights[i]
            root = sample_weights.sqrt()
            grads.update({k: v * root.view(-1, *([1] * (v.dim() - 1))) for k, v in grads.items()})
        return _add_squares(op, owner, inputs, {k: v.unsqueeze(0) for k, v in grads.items()}, scale, total)

    for index, ((x, y), w) in enumerate(zip(op.batches, op.weights)):
        if exact_expectation:
            # the batched backward holds C cotangents of every layer output: a chunk of samples
            # at a time keeps that under GGN_CHUNK_BYTES
            batched, chunk = True, _ggn_chunk(op, layers, x)
            for start in range(0, x.shape[0], chunk):
                part = x[start : start + chunk]
                batched = _ggn_batch(op, owner, layers, part, w * part.shape[0] / x.shape[0], total)
                # None: not a classifier; False after a first chunk: partial sums are in total
                if batched is None or (batched is False and start > 0):
                    return None
                if not batched:
                    break
            if batched:
                continue
            with torch.no_grad():
                probs = torch.softmax(op.logits(op.params, x), dim=-1)
            for c in range(probs.shape[1]):
                if not accumulate(x, torch.full_like(y, c), w, probs[:, c]):
                    return None
        elif op.fisher_kind == "empirical":
            if not accumulate(x, y, w):
                return None
        else:
            labels = op._sampled_labels()[index]
            for m in range(op.mc_samples):
                if not accumulate(x, labels[m], w / op.mc_samples):
                    return None
    return torch.cat([total[name].reshape(-1) for name in op.names])


def _add_squares(op, owner, inputs: dict, grads: dict, scale: float, total: dict) -> bool:
    """``total[name] += scale * sum_k sum_i (per-sample gradient of output cotangent k)^2``.

    ``grads[module]``: the gradients of the layer's OUTPUT, with a leading axis k of
    cotangents (one per class for the GGN diagonal, a single one otherwise); ``inputs``
    the layer inputs (shared by every k). False where a layer's shapes are not handled.
    """
    for name in op.names:
        module_name, module = owner[name]
        a, g = inputs[module_name], grads[module_name]
        leaf = name.rpartition(".")[2]
        if isinstance(module, nn.Linear):
            if a.dim() != 2:
                return False
            # sum_k sum_i (g_ki a_i^T)^2 = (sum_k g_k^2)^T (a^2): a does not depend on k
            g2 = (g * g).sum(0)
            piece = g2.T @ (a * a) if leaf == "weight" else g2.sum(0)
        elif isinstance(module, nn.Conv2d):
            if leaf == "weight":
                piece = torch.zeros_like(module.weight).view(module.weight.shape[0], -1)
                # the unfolded patches are k*k times the layer input: built CONV_SAMPLE_CHUNK
                # samples at a time, so they never dominate the peak memory
                for start in range(0, a.shape[0], CONV_SAMPLE_CHUNK):
                    patches = F.unfold(a[start : start + CONV_SAMPLE_CHUNK], module.kernel_size,
                                       dilation=module.dilation, padding=module.padding,
                                       stride=module.stride)  # (b, C_in k k, P)
                    for gk in g:
                        per_sample = torch.bmm(gk[start : start + CONV_SAMPLE_CHUNK].flatten(2),
                                               patches.transpose(1, 2))  # (b, C_out, C_in k k)
                        piece += (per_sample * per_sample).sum(0)
                    del patches
                piece = piece.view_as(module.weight)
            else:
                piece = g.flatten(3).sum(3).square().sum((0, 1))
        else:  # BatchNorm in eval mode
            shape = (1, -1) + (1,) * (a.dim() - 2)
            xhat = (a - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
            reduce_dims = tuple(range(3, g.dim()))
            per_sample = (g * xhat.unsqueeze(0)) if leaf == "weight" else g
            if reduce_dims:
                per_sample = per_sample.sum(reduce_dims)
            piece = per_sample.square().sum((0, 1))
        total[name] += scale * piece
    return True


def _traced_forward(op, layers: dict, x: torch.Tensor):
    """``(logits, inputs, outputs)`` of one forward pass with a graph, per supported layer;
    logits None if some layer ran other than exactly once (shared layers: per-call hooks
    would double count)."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    calls = {name: 0 for name in layers}

    def forward_hook(module_name):
        def hook(module, args, output):
            calls[module_name] += 1
            inputs[module_name] = args[0].detach()
            outputs[module_name] = output
        return hook

    handles = [module.register_forward_hook(forward_hook(name)) for name, module in layers.items()]
    try:
        with torch.enable_grad():
            params = {n: p.detach().requires_grad_(True) for n, p in op.params.items()}
            logits = op.logits(params, x)
    finally:
        for handle in handles:
            handle.remove()
    if any(count != 1 for count in calls.values()) or set(outputs) != set(layers):
        return None, inputs, outputs
    return logits, inputs, outputs


def _ggn_chunk(op, layers: dict, x: torch.Tensor) -> int:
    """Samples per batched GGN backward: C cotangents of every traced layer output, per
    sample, within GGN_CHUNK_BYTES (the whole batch for an MLP, fewer samples for a conv net)."""
    with torch.no_grad():
        logits, _, outputs = _traced_forward(op, layers, x[:1])
    if logits is None or logits.dim() != 2:
        return x.shape[0]
    per_sample = logits.shape[-1] * sum(o.numel() for o in outputs.values()) * logits.element_size()
    return max(1, min(x.shape[0], GGN_CHUNK_BYTES // max(1, per_sample)))


def _ggn_batch(op, owner, layers: dict, x: torch.Tensor, weight: float, total: dict) -> bool | None:
    """The GGN diagonal's share of one batch from ONE forward pass and one batched backward pass.

    diag G = (1/N) sum_i sum_c (J_i^T B_i[:, c])^2 with B_i B_i^T = diag(p_i) - p_i p_i^T
    (B_i[:, c] = sqrt(p_ic) (e_c - p_i): the cross-entropy gradient at label c, weighted):
    the C columns are pushed back together (``is_grads_batched``) to every layer's output,
    instead of one forward and backward pass per class. Returns None if the model is not
    a classifier, False if this path is unavailable (the caller loops over the classes).
    """
    logits, inputs, outputs = _traced_forward(op, layers, x)
    if logits is None:
        return False
    if logits.dim() != 2:
        return None
    with torch.no_grad():
        p = torch.softmax(logits, dim=-1)
        sqrt_p = p.sqrt()
        eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
        # V[c] = B[:, c] per sample: sqrt(p_c) (e_c - p)
        V = sqrt_p.T.unsqueeze(2) * (eye.unsqueeze(1) - p.unsqueeze(0))  # (C, B, C)
    names = list(layers)
    try:
        grads = torch.autograd.grad(logits, [outputs[n] for n in names], V, is_grads_batched=True, allow_unused=True)
    except RuntimeError:  # a backward formula without a batching rule
        return False
    if any(g is None for g in grads):
        return False
    return _add_squares(op, owner, inputs, dict(zip(names, (g.detach() for g in grads))), weight / x.shape[0], total)


def exact_fisher_diagonal(op: FisherOperator) -> torch.Tensor:
    """(1/N) sum_i sum_c p_c(x_i) g_ic^2: the true Fisher's (= the GGN's) diagonal, exactly.

    One backward pass per class c (layer-wise, see :func:`_layerwise_diagonal`) or one
    vmapped per-sample gradient pass per class, at label c for every sample, weighted by
    the (detached) predicted probability p_c(x_i).
    """
    fast = _layerwise_diagonal(op, exact_expectation=True)
    if fast is not None:
        return fast
    _check_gradient_memory(op)
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
