"""Exact dense Hessian of a piecewise-linear classifier, split at its largest Linear layer.

For a conv net whose largest Linear layer holds most of the parameters (small-lenet's
fc1) the GGN fast path of :mod:`landscape.curvature.dense_ggn` still needs one
Hessian-vector product per parameter outside that layer, thousands of columns, and on a
CPU one float64 product over thousands of images costs seconds, because PyTorch runs
float64 convolutions through its slow reference kernels. Those columns are sums of
per-sample terms with a closed form, so this module builds them from per-sample
Jacobians and GEMMs instead.

Notation. The network is a trunk, the layer L (``nn.Linear``, weight W, bias b) and a
head::

    f_i = trunk(x_i; t),   u_i = W f_i + b,   z_i = head(u_i; h),

with p_i = softmax(z_i), r_i = p_i - e_{y_i} and Lambda_i = diag(p_i) - p_i p_i^T. The
Hessian of the mean cross-entropy is H = G + R (see dense_ggn) with R the Hessian of
phi = (1/N) sum_i r_i^T z_i at fixed r. For a piecewise-linear head (ReLU, max-pool)
M_i = dz_i/du_i does not depend on u_i, hence not on (t, W, b), and with

    K_i = df_i/dt (in x |t|),   g_i = M_i^T r_i (out),   T_i = dg_i/dh (out x |h|),

the blocks of R are (f^ = (f, 1); k runs over L's inputs, j over its outputs)::

    R[t, (j, k)]  = (1/N) sum_i g_ij K_i[k, :]           (0 on b)
    R[h, (j, k)]  = (1/N) sum_i T_i[j, :] f^_ik
    R[t, h]       = (1/N) sum_i K_i^T W^T T_i
    R[h, h]       = Hessian in h of (1/N) sum_i r_i^T head(u_i; h)   (u_i fixed: cheap)
    R[t, t]       = Hessian in t of psi(t) = (1/N) sum_i (W^T g_i)^T f_i(t)   (g fixed)
    R[L, L]       = 0.

R[t, t] is the only part that needs products through the trunk: Hessian-vector
products of psi for the trunk parameters outside its own largest layer (whose diagonal
block of psi vanishes by the same piecewise-linear argument; checked numerically). For
small-lenet that is conv1's 260 columns instead of 6,570. G[S, :] for S = trunk + head
comes from per-sample Jacobian rows A_i = B_i^T J_i (B_i B_i^T = Lambda_i) with
J_i[:, t] = M_i W K_i, J_i[:, h] from the head alone and J_i[:, L] = M_i (x) f^_i, and
G[L, L] from the Kronecker form (dense_ggn.build_kron_block_).

Nothing here is trusted blindly: the caller checks the finished matrix against two
Hessian-vector products of the full network (``dense.check_against_products``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import grad, jacfwd, jacrev, vmap

from landscape.curvature.dense_ggn import sqrt_lambda_t
from landscape.curvature.operators import HessianOperator
from landscape.losses import cross_entropy
from landscape.platform.heap import Trimmer


@dataclass
class Split:
    module: nn.Linear
    L: slice  # the layer's slice of the flat parameter vector
    trunk: list[str]  # parameter names before L (L's input depends on them)
    head: list[str]  # parameter names after L
    trunk_index: np.ndarray  # their positions in the flat vector
    head_index: np.ndarray
    trunk_largest: list[str]  # the trunk layer whose psi-block vanishes (no product columns)
    prefix: str  # L's module name

    @property
    def trunk_rows(self) -> slice:
        return slice(int(self.trunk_index[0]), int(self.trunk_index[-1]) + 1)

    @property
    def head_rows(self) -> slice:
        if len(self.head_index) == 0:
            return slice(0, 0)
        return slice(int(self.head_index[0]), int(self.head_index[-1]) + 1)


class _Hooks:
    """Capture L's input, and optionally replace L's output, inside functional calls."""

    def __init__(self):
        self.captured: torch.Tensor | None = None
        self.replacement: torch.Tensor | None = None

    def __call__(self, mod, inputs, output):
        self.captured = inputs[0]
        return output if self.replacement is None else self.replacement


def plan_split(op: HessianOperator, group: slice, names: list[str], module: nn.Linear) -> Split | None:
    """The trunk / L / head partition, or None where this form does not apply."""
    if op.loss_fn is not cross_entropy or op.dtype != torch.float64:
        return None
    hooks = _Hooks()
    handle = module.register_forward_hook(hooks)
    x, _ = op.batches[0]
    x = x[:2]
    try:
        leaves = {n: p.detach().requires_grad_(True) for n, p in op.params.items()}
        with torch.enable_grad():
            op.logits(leaves, x)
            f = hooks.captured
            others = [n for n in op.names if n not in names]
            if not others or not f.requires_grad:
                return None  # L is the first layer: no trunk
            reach = torch.autograd.grad(f.sum(), [leaves[n] for n in others], allow_unused=True)
            trunk = [n for n, g in zip(others, reach) if g is not None]
            head = [n for n in others if n not in trunk]
            # the head must see the trunk only through L: with L's output replaced by a
            # constant, no trunk parameter may reach the logits
            hooks.replacement = torch.zeros(x.shape[0], module.out_features, dtype=op.dtype, device=op.device,
                                            requires_grad=True)
            z = op.logits(leaves, x)
            if trunk and any(g is not None for g in torch.autograd.grad(z.sum(), [leaves[n] for n in trunk],
                                                                        allow_unused=True)):
                return None
    finally:
        handle.remove()
    if not trunk:
        return None  # nothing to gain over the plain GGN path (its columns are cheap)
    offsets = op.offsets
    sizes = dict(zip(op.names, op.sizes))

    def index(ns):
        return np.concatenate([np.arange(offsets[n], offsets[n] + sizes[n]) for n in ns]) if ns else np.zeros(0, int)

    trunk_index, head_index = index(trunk), index(head)
    for ix in (trunk_index, head_index):
        if len(ix) and len(_runs(ix)) != 1:
            return None  # trunk or head parameters interleaved with others: not handled
    modules: dict[str, list[str]] = {}
    for n in trunk:
        modules.setdefault(n.rsplit(".", 1)[0], []).append(n)
    largest = max(modules.values(), key=lambda ns: sum(sizes[n] for n in ns))
    prefix = next(name for name, mod in op.module.named_modules() if mod is module)
    return Split(module=module, L=group, trunk=trunk, head=head, trunk_index=trunk_index, head_index=head_index,
                 trunk_largest=largest, prefix=prefix)


class _TrunkOutput(nn.Module):
    """The model cut at L's input: ``forward(x) = f`` (the head is computed and ignored)."""

    def __init__(self, model: nn.Module, module: nn.Linear):
        super().__init__()
        self.model = model
        self.hooks = _Hooks()
        module.register_forward_hook(self.hooks)

    def forward(self, x):
        self.model(x)
        return self.hooks.captured


def _linear_in_f(f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Batch mean of <w_i, f_i>: with |b|/N batch weights, psi = (1/N) sum_i w_i^T f_i."""
    return (f * w).sum(dim=1).mean()


def trunk_operator(op: HessianOperator, split: Split, w_batches: list[torch.Tensor], params: list[str], *,
                   workspace: int | None = None):
    """Hessian operator of psi(t) over the trunk parameters ``params`` (others fixed).

    With ``workspace`` (bytes) its vmapped block products are bounded by that instead of
    ``HessianOperator.BLOCK_BYTES`` (:meth:`HessianOperator.within`: batches cut into
    sub-batches small enough for one column; psi is a per-sample mean and the trunk
    runs in eval mode, so the products are the same).
    """
    model = copy.deepcopy(op.module)
    module = model.get_submodule(split.prefix)
    wrapper = _TrunkOutput(model, module)
    batches = [(x, w) for (x, _), w in zip(op.batches, w_batches)]
    top = HessianOperator(wrapper, _linear_in_f, batches, dtype=op.dtype, params=[f"model.{n}" for n in params],
                          device=op.device, check_determinism=False)
    return top if workspace is None else top.within(workspace)


def _residual_vector(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """r_i = p_i - e_{y_i}: the cross-entropy gradient in the logits."""
    r = torch.softmax(z, dim=-1)
    r[torch.arange(len(y)), y] -= 1.0
    return r


class _Functions:
    """Per-sample functions of one part of the parameters, the rest fixed at their values."""

    def __init__(self, op: HessianOperator, split: Split):
        self.op, self.split = op, split
        self.hooks = _Hooks()
        self.fixed = dict(op.params)
        self.W = self.fixed[f"{split.prefix}.weight"]
        self.b = self.fixed.get(f"{split.prefix}.bias")

    def __enter__(self):
        self.handle = self.split.module.register_forward_hook(self.hooks)
        return self

    def __exit__(self, *exc):
        self.hooks.replacement = None
        self.handle.remove()

    def forward(self, x):
        """(z, f) for a batch, no graph."""
        with torch.no_grad():
            z = self.op.logits(self.fixed, x)
            return z, self.hooks.captured.detach()

    def head(self, hp, u, dummy):
        """Logits from L's output u (any leading batch), the trunk run on one dummy input only."""
        self.hooks.replacement = u
        try:
            return self.op.logits({**self.fixed, **hp}, dummy)
        finally:
            self.hooks.replacement = None

    def trunk_rows(self, tp, xi, rows: slice):
        """f_i[rows] as a function of the trunk parameters, for one sample."""
        self.op.logits({**self.fixed, **tp}, xi.unsqueeze(0))
        return self.hooks.captured.squeeze(0)[rows]

    def trunk_output(self, tp, xi):
        """u_i = W f_i + b as a function of the trunk parameters, for one sample."""
        return torch.nn.functional.linear(self.trunk_rows(tp, xi, slice(None)), self.W, self.b)

    def logits_single(self, tp, xi):
        return self.op.logits({**self.fixed, **tp}, xi.unsqueeze(0)).squeeze(0)


def _head_factors(fn: _Functions, u: torch.Tensor, r: torch.Tensor, dummy: torch.Tensor, *, only_t: bool = False):
    """M_i = dz/du (B, C, out), J_head (B, C, |h|), T_i = d(M_i^T r_i)/dh (B, out, |h|)
    (``only_t``: just T)."""
    split = fn.split
    hp = {n: fn.fixed[n] for n in split.head}
    B, out = u.shape

    def z_single(hp_, ui):
        return fn.head(hp_, ui.unsqueeze(0), dummy).squeeze(0)

    def g_single(hp_, ui, ri):
        return grad(lambda uu: (z_single(hp_, uu) * ri).sum())(ui)

    if split.head:
        th = vmap(jacrev(g_single, argnums=0), in_dims=(None, 0, 0))(hp, u, r)
        T = torch.cat([th[n].reshape(B, out, -1) for n in split.head], dim=2)
    else:
        T = torch.zeros(B, out, 0, dtype=u.dtype, device=u.device)
    if only_t:
        return None, None, T
    M = vmap(jacrev(z_single, argnums=1), in_dims=(None, 0))(hp, u)
    C = M.shape[1]
    if split.head:
        jh = vmap(jacrev(z_single, argnums=0), in_dims=(None, 0))(hp, u)
        J_head = torch.cat([jh[n].reshape(B, C, -1) for n in split.head], dim=2)
    else:
        J_head = torch.zeros(B, C, 0, dtype=u.dtype, device=u.device)
    return M, J_head, T


def _sample_chunks(op: HessianOperator, size: int):
    return [(x[i : i + size], y[i : i + size]) for x, y in op.batches for i in range(0, x.shape[0], size)]


# under a workspace budget, glibc's arenas are trimmed once the rows pass's freed temporaries
# hold this fraction of the workspace (landscape.platform.heap.Trimmer): untrimmed, the pass
# grows by its freed temporaries with every call; trimmed after every call, it runs far slower
TRIM_SLACK = 0.5


def rows_chunks(op: HessianOperator, split: Split, workspace: int | None, *, sample_chunk: int = 128,
                jac_chunk: int = 64, k_block: int = 16, direct: bool = False) -> tuple[int, int]:
    """(samples, Jacobian rows) per vmapped call of :func:`build_rows_`, within ``workspace`` bytes.

    Estimated per sample: the trunk's graph g (measured on 8 samples), a cotangent pair
    (2 g) and a parameter-gradient row (8 |t| bytes) per Jacobian row of the chunk, and
    the pass's per-sample products (P, A_S, E; K in the second pass). The sums over
    samples (the |S| x |S| accumulator, 8 |S|^2 bytes unless ``direct``, and the K
    accumulator) are fixed costs.
    ``workspace=None`` keeps the caps ``sample_chunk`` and ``jac_chunk``.
    """
    if workspace is None:
        return sample_chunk, jac_chunk
    nt, nh = len(split.trunk_index), len(split.head_index)
    ns = nt + nh
    out = split.module.out_features
    g = op.graph_bytes_per_sample()
    C = int(op.logits(op.params, op.batches[0][0][:1]).shape[-1])
    fixed = 8 * ((0 if direct else ns * ns) + k_block * nt * out + nt * nh)
    room = max(float(workspace) - fixed, float(workspace) / 4)

    def per_sample(jc: int) -> float:
        first = g + min(jc, out) * (2 * g + 8 * nt) + 8 * (2 * out * nt + 2 * C * ns + ns * out)
        second = g + min(jc, k_block) * (2 * g + 8 * nt) + 8 * 2 * k_block * nt
        return max(first, second)

    jc = jac_chunk
    while jc > 1 and per_sample(jc) > room:
        jc //= 2
    return int(max(1, min(sample_chunk, room // per_sample(jc)))), jc


def build_rows_(H: np.ndarray, op: HessianOperator, split: Split, *, sample_chunk: int = 128, k_block: int = 16,
                jac_chunk: int = 64, row_block: int = 1024, progress=None, before_adding=None,
                workspace: int | None = None, direct: bool = False) -> None:
    """Add G[S, :] + R[S, :] - R[t, t] into the rows S = trunk + head of ``H``.

    On entry rows S hold R[t, t] in their trunk columns and zeros elsewhere. Two passes
    over the samples: (1) P_i = du_i/dt (one VJP per output of L and sample), with it the
    Jacobian rows A_S (J_i[:, t] = M_i P_i), G[S, :], R[h, L] and R[t, h] = mean P^T T;
    (2) per block of L's inputs, K_i[block] = df_i[block]/dt (one VJP per input and
    sample, the dominant cost) for R[t, L]. ``progress(done, total)`` is called as
    work units finish. ``workspace`` (bytes) bounds the samples and Jacobian rows per
    vmapped call (:func:`rows_chunks`; ``sample_chunk`` and ``jac_chunk`` stay the caps).

    ``direct`` (CPU only): G[S, S] and the head terms go straight into H[S, S] instead
    of an |S| x |S| accumulator added at the end, saving that accumulator's memory. Only
    for builds that cannot resume: a kill then leaves H[S, S] half-updated, with no
    "adding" stage to detect it.
    """
    direct = direct and op.device.type == "cpu"
    sample_chunk, jac_chunk = rows_chunks(op, split, workspace, sample_chunk=sample_chunk, jac_chunk=jac_chunk,
                                          k_block=k_block, direct=direct)
    S = np.concatenate([split.trunk_index, split.head_index])
    nt, nh = len(split.trunk_index), len(split.head_index)
    lo, hi = split.L.start, split.L.stop
    module = split.module
    fan_in, out = module.in_features, module.out_features
    nw = out * fan_in  # weight columns of L (then the bias columns, if any)
    scale = 1.0 / op.num_samples
    Ht = torch.from_numpy(H)
    runs = _runs(S)  # the trunk rows, then the head rows
    chunks = _sample_chunks(op, sample_chunk)
    k_blocks = [slice(k, min(k + k_block, fan_in)) for k in range(0, fan_in, k_block)]
    total = len(chunks) * (1 + len(k_blocks))  # progress units
    done = 0
    dev = op.device
    if direct:  # the four blocks of H[S, S] (trunk and head are contiguous runs)
        tr, hr = split.trunk_rows, split.head_rows
        SS = None
        blocks = [(Ht[tr, tr], slice(0, nt), slice(0, nt)), (Ht[tr, hr], slice(0, nt), slice(nt, nt + nh)),
                  (Ht[hr, tr], slice(nt, nt + nh), slice(0, nt)), (Ht[hr, hr], slice(nt, nt + nh), slice(nt, nt + nh))]
    else:
        SS = torch.zeros(len(S), len(S), dtype=torch.float64, device=dev)
    if dev.type == "cpu":  # H[S, L] is accumulated in place (|S| x n_L: too big to copy)
        SL_t, SL_h = Ht[split.trunk_rows, lo:hi], Ht[split.head_rows, lo:hi]
    else:  # on an accelerator: accumulated there, copied once
        SL_t = torch.zeros(nt, hi - lo, dtype=torch.float64, device=dev)
        SL_h = torch.zeros(nh, hi - lo, dtype=torch.float64, device=dev)
    RTH = torch.zeros(nt, nh, dtype=torch.float64, device=dev)
    # G[S, L]'s staging product holds row_block x |L| doubles: where that passes a quarter of
    # the workspace, the rows are added in place by batched GEMMs instead, which is also the
    # faster choice for the few samples per call that a small workspace allows
    in_place = workspace is not None and 8 * min(row_block, len(S)) * nw > workspace // 4
    us, rs, gs = [], [], []
    trimmer = None if workspace is None else Trimmer(int(TRIM_SLACK * workspace))
    with _Functions(op, split) as fn:
        tp = {n: fn.fixed[n] for n in split.trunk}
        # pass 1: per-sample P_i = du_i/dt (one VJP per output of L), the GGN rows and the head terms
        for x, y in chunks:
            z, f = fn.forward(x)
            r = _residual_vector(z, y)
            u = torch.nn.functional.linear(f, fn.W, fn.b)
            M, J_head, T = _head_factors(fn, u, r, x[:1])
            pt = vmap(jacrev(fn.trunk_output, chunk_size=jac_chunk), in_dims=(None, 0))(tp, x)
            B, C = M.shape[0], M.shape[1]
            P = torch.cat([pt[n].reshape(B, out, -1) for n in split.trunk], dim=2)  # (B, out, |t|)
            del pt
            Bt = sqrt_lambda_t(torch.softmax(z, dim=-1))
            A_S = Bt @ torch.cat([M @ P, J_head], dim=2)  # (B, C, |S|): B_i^T J_i[:, S]
            Q = Bt @ M  # (B, C, out): A_i[:, L] = Q_i (x) f^_i
            a_s = A_S.reshape(B * C, -1)
            if direct:
                for view, ra, rb in blocks:
                    if view.numel():
                        view.addmm_(a_s[:, ra].T, a_s[:, rb], alpha=scale)
            else:
                SS.addmm_(a_s.T, a_s, alpha=scale)
            # G[S, (j, k)] = sum_i E_i[s, j] f^_ik with E_i = A_S,i^T Q_i: C times fewer flops than A_S^T A_L
            E = torch.einsum("bcs,bcj->bsj", A_S, Q)  # (B, |S|, out)
            for rows, target, s0 in ((slice(0, nt), SL_t, 0), (slice(nt, nt + nh), SL_h, nt)):
                for r0 in range(rows.start, rows.stop, row_block):
                    r1 = min(rows.stop, r0 + row_block)
                    e = E[:, r0:r1, :]
                    view = target[r0 - s0 : r1 - s0]
                    if in_place:  # one small GEMM per row, into H
                        view[:, :nw].view(r1 - r0, out, fan_in).baddbmm_(
                            e.permute(1, 2, 0), f.expand(r1 - r0, B, fan_in), alpha=scale)
                    else:  # one GEMM per row block, through a staging product
                        view[:, :nw].view(r1 - r0, out, fan_in).add_(
                            (e.reshape(B, -1).T @ f).view(r1 - r0, out, fan_in), alpha=scale)
                    if module.bias is not None:
                        view[:, nw:].add_(e.sum(0), alpha=scale)
            del E, A_S, a_s
            if nh:
                # R[h, L][p, (j, k)] = sum_i T_i[j, p] f^_ik
                SL_h[:, :nw].view(nh, out, fan_in).add_(torch.einsum("bjp,bk->pjk", T, f), alpha=scale)
                if module.bias is not None:
                    SL_h[:, nw:].add_(T.sum(0).T, alpha=scale)
                # R[t, h] = sum_i K_i^T W^T T_i = sum_i P_i^T T_i
                RTH.addmm_(P.permute(2, 0, 1).reshape(nt, -1),
                           T.reshape(-1, nh), alpha=scale)
            us.append(u)
            rs.append(r)
            gs.append(torch.einsum("bcj,bc->bj", M, r))
            del P, T, M, J_head
            done += 1
            if progress is not None:
                progress(done, total)
            if trimmer is not None:
                trimmer()
        # pass 2: per block of L's inputs, K_i[block] = d f_i[block] / dt, for R[t, L]
        for kb in k_blocks:
            acc = torch.zeros(kb.stop - kb.start, nt, out, dtype=torch.float64, device=dev)
            for (x, _), g in zip(chunks, gs):
                kt = vmap(jacrev(lambda p, xi: fn.trunk_rows(p, xi, kb), chunk_size=jac_chunk),  # noqa: B023 (called here)
                          in_dims=(None, 0))(tp, x)
                B = x.shape[0]
                K = torch.cat([kt[n].reshape(B, kb.stop - kb.start, -1) for n in split.trunk], dim=2)  # (B, kb, nt)
                del kt
                # R[t, (j, k)] = sum_i g_ij K_i[k, :]
                acc.add_(torch.einsum("bkp,bj->kpj", K, g), alpha=scale)
                done += 1
                if progress is not None:
                    progress(done, total)
                if trimmer is not None:
                    trimmer()
            SL_t[:, :nw].view(nt, out, fan_in)[:, :, kb] += acc.permute(1, 2, 0)
            del acc
        if nh:
            hh = head_residual(fn, torch.cat(us), torch.cat(rs), chunks[0][0][:1], workspace=workspace)
            if direct:
                Ht[tr, hr] += RTH
                Ht[hr, tr] += RTH.T
                Ht[hr, hr] += hh
            else:
                SS[:nt, nt:] += RTH
                SS[nt:, :nt] += RTH.T
                SS[nt:, nt:] += hh
    if direct:
        return
    if dev.type != "cpu":
        Ht[split.trunk_rows, lo:hi] += SL_t.cpu()
        Ht[split.head_rows, lo:hi] += SL_h.cpu()
    SS = SS.cpu()
    if before_adding is not None:
        before_adding()
    for a0, a1, s0 in runs:
        for b0, b1, c0 in runs:
            Ht[a0:a1, b0:b1] += SS[s0 : s0 + a1 - a0, c0 : c0 + b1 - b0]


def head_residual(fn: _Functions, u: torch.Tensor, r: torch.Tensor, dummy: torch.Tensor,
                  workspace: int | None = None) -> torch.Tensor:
    """R[h, h]: the Hessian in h of (1/N) sum_i r_i^T head(u_i; h), u and r fixed (cheap).

    The sum over samples is taken in chunks whose forward-over-reverse pass (|h|
    tangents of each sample's C logits, about 4 copies) stays within a quarter of
    ``workspace`` (None: all at once).
    """
    names = fn.split.head
    shapes = [fn.fixed[n].shape for n in names]
    sizes = [fn.fixed[n].numel() for n in names]
    h0 = torch.cat([fn.fixed[n].reshape(-1) for n in names])
    count = u.shape[0]
    if workspace is not None:
        count = int(max(1, min(count, workspace // 4 // (32 * h0.numel() * r.shape[-1]))))
    total = None
    for i in range(0, u.shape[0], count):
        ui, ri = u[i : i + count], r[i : i + count]

        def phi(hflat, ui=ui, ri=ri):
            hp = {n: t.view(s) for n, t, s in zip(names, torch.split(hflat, sizes), shapes)}
            return (fn.head(hp, ui, dummy) * ri).sum() / fn.op.num_samples

        part = jacfwd(grad(phi))(h0)
        total = part.clone() if total is None else total.add_(part)  # (part may be an expanded view)
    return total


def _runs(index: np.ndarray) -> list[tuple[int, int, int]]:
    """Contiguous runs of a sorted index array: (start, stop, position in the array)."""
    out = []
    start = 0
    for k in range(1, len(index) + 1):
        if k == len(index) or index[k] != index[k - 1] + 1:
            out.append((int(index[start]), int(index[k - 1]) + 1, start))
            start = k
    return out


def trunk_columns(split: Split) -> list[str]:
    """Trunk parameters whose psi-Hessian columns are computed by products."""
    return [n for n in split.trunk if n not in split.trunk_largest]


def psi_weights(op: HessianOperator, split: Split, sample_chunk: int = 256,
                workspace: int | None = None) -> list[torch.Tensor]:
    """w_i = W^T g_i per batch (the fixed linear form of psi).

    ``workspace`` (bytes) bounds the samples per forward pass at about two first-backward
    graphs per sample (``sample_chunk`` stays the cap), so this pass stays small beside the
    matrix.
    """
    if workspace is not None:
        sample_chunk = int(max(1, min(sample_chunk, workspace // (2 * op.graph_bytes_per_sample()))))
    module = split.module
    hooks = _Hooks()
    handle = module.register_forward_hook(hooks)
    fixed = dict(op.params)
    name = split.prefix
    W = fixed[f"{name}.weight"]
    out = []
    try:
        for x, y in op.batches:
            parts = []
            for i in range(0, x.shape[0], sample_chunk):
                xs, ys = x[i : i + sample_chunk], y[i : i + sample_chunk]
                with torch.no_grad():
                    z = op.logits(fixed, xs)
                    f = hooks.captured.detach()
                r = _residual_vector(z, ys)
                u = torch.nn.functional.linear(f, W, fixed.get(f"{name}.bias"))
                dummy = xs[:1]

                def head_of_u(uu):
                    hooks.replacement = uu
                    zz = op.logits(fixed, dummy)  # noqa: B023 (called within this iteration)
                    hooks.replacement = None
                    return zz

                # g_i = M_i^T r_i = d(r_i . z_i)/du_i, batched: one VJP
                _, pull = torch.func.vjp(head_of_u, u)
                (g,) = pull(r)
                parts.append(g @ W)
            out.append(torch.cat(parts))
    finally:
        hooks.replacement = None
        handle.remove()
    return out


def psi_block_vanishes(top: HessianOperator, split: Split, seed: int = 0) -> bool:
    """Numerical check that psi's Hessian vanishes on the trunk's largest layer's own block."""
    offsets = top.offsets
    sizes = dict(zip(top.names, top.sizes))
    idx = np.concatenate([np.arange(offsets[f"model.{n}"], offsets[f"model.{n}"] + sizes[f"model.{n}"])
                          for n in split.trunk_largest])
    g = torch.Generator().manual_seed(seed)
    V = torch.zeros(top.shape[0], 2, dtype=torch.float64)
    V[torch.from_numpy(idx), 0] = torch.randn(len(idx), generator=g, dtype=torch.float64)
    V[:, 1] = torch.randn(top.shape[0], generator=g, dtype=torch.float64)  # scale reference
    x, w = top.batches[0]
    hv = top._batch_matmat(0, x, w, V.to(top.device, top.dtype)).cpu()
    scale = max(float(hv.abs().max()), 1e-300)
    return float(hv[torch.from_numpy(idx), 0].abs().max()) <= 1e-9 * scale
