"""Fast exact dense Hessian for piecewise-linear classifiers: GGN block + HVP columns.

For a network z(x; w) with softmax cross-entropy the Hessian of the mean loss splits as

    H = G + R,   G = (1/N) sum_i J_i^T Lambda_i J_i,   R = (1/N) sum_i sum_c r_ic grad^2 z_ic,

with Lambda_i = diag(p_i) - p_i p_i^T and r_i = p_i - onehot(y_i). Lambda_i = B_i B_i^T for
B_i = diag(sqrt p_i) - p_i sqrt(p_i)^T, so G = (1/N) sum_i A_i^T A_i with A_i = B_i^T J_i
(C x n): one symmetric rank-k update (BLAS syrk) over per-sample Jacobians.

If z is linear in the parameters of one layer while the others are held fixed (Linear,
Conv, eval-mode BatchNorm layers with ReLU / max-pool / average-pool between them), the
residual R vanishes on that layer's diagonal block. So for the LARGEST such layer L,
H[L, L] = G[L, L] exactly, and every other column of H comes from Hessian-vector products
(vmapped blocks). For small-mnistfc (784-64-10) L holds 98.7% of the parameters, for
small-lenet 86%: most of the matrix is built by one BLAS-3 call instead of n
double-backward passes.

Whether R[L, L] = 0 is not assumed from the module types: it is checked numerically on
the first batch (two random directions in L, Hessian vs GGN products must agree to
1e-8 relative in float64). If the check fails (tanh, softplus, LSTM, train-mode BN...)
the caller falls back to HVP columns for everything.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import jacrev, vmap

from landscape.curvature._blas import syrk_block_
from landscape.curvature.operators import HessianOperator
from landscape.losses import cross_entropy


def parameter_groups(op: HessianOperator) -> list[tuple[str, list[str], slice]]:
    """Parameters grouped by owning module, with their slice in the flat vector."""
    groups: list[tuple[str, list[str], slice]] = []
    offset = 0
    for name, size in zip(op.names, op.sizes):
        module = name.rsplit(".", 1)[0] if "." in name else ""
        if groups and groups[-1][0] == module:
            prefix, names, sl = groups[-1]
            groups[-1] = (prefix, names + [name], slice(sl.start, offset + size))
        else:
            groups.append((module, [name], slice(offset, offset + size)))
        offset += size
    return groups


def ggn_rows(op: HessianOperator, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """``A_i = B_i^T J_i`` for every sample of ``x``, restricted to ``names``: ``(B*C, m)``."""
    fixed = {n: p for n, p in op.params.items() if n not in names}
    sub = {n: op.params[n] for n in names}
    x = x.to(op.device)
    if x.is_floating_point():
        x = x.to(op.dtype)

    def logits_single(p, xi):
        return op.logits({**fixed, **p}, xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(logits_single), in_dims=(None, 0))(sub, x)
    batch = x.shape[0]
    J = torch.cat([jac[n].reshape(batch, jac[n].shape[1], -1) for n in names], dim=2)  # (B, C, m)
    with torch.no_grad():
        p = torch.softmax(op.logits(op.params, x), dim=-1)
    sqrt_p = p.sqrt()
    Bmat = torch.diag_embed(sqrt_p) - p.unsqueeze(2) * sqrt_p.unsqueeze(1)  # (B, C, C)
    rows = Bmat.transpose(1, 2) @ J
    return rows.reshape(batch * rows.shape[1], -1)


def residual_vanishes_on(op: HessianOperator, group: slice, names: list[str], *, seed: int = 0) -> bool:
    """Numerical check that (H - G) restricted to ``group`` x ``group`` is zero."""
    if op.loss_fn is not cross_entropy or op.dtype != torch.float64:
        return False
    x, y = op.batches[0]
    with torch.no_grad():
        if op.logits(op.params, x[:1]).dim() != 2:
            return False  # sequence models: per-token logits, not handled here
    g = torch.Generator().manual_seed(seed)
    m = group.stop - group.start
    V = torch.zeros(op.shape[0], 2, dtype=op.dtype, device=op.device)
    V[group] = torch.randn(m, 2, generator=g, dtype=torch.float64).to(op.device)
    hv = op._batch_matmat(0, x, y, V)[group]
    rows = ggn_rows(op, x, names)
    gv = rows.T @ (rows @ V[group]) / x.shape[0]
    scale = float(hv.abs().max())
    if scale == 0:
        return False
    return float((hv - gv).abs().max()) <= 1e-8 * scale


def plan(op) -> tuple[slice, list[str]] | None:
    """The block to take from the GGN, or None if the fast path does not apply."""
    if not isinstance(op, HessianOperator) or op.shape[0] < 2:
        return None
    groups = parameter_groups(op)
    _, names, largest = max(groups, key=lambda g: g[2].stop - g[2].start)
    if (largest.stop - largest.start) < 0.25 * op.shape[0]:
        return None
    if not residual_vanishes_on(op, largest, names):
        return None
    return largest, names


def build_ggn_block_(H: np.ndarray, op: HessianOperator, block: slice, names: list[str], *, chunk: int = 64,
                     start_chunk: int = 0, on_chunk=None) -> int:
    """Add G[block, block] into ``H`` (upper triangle of the block), chunk by chunk.

    Returns the number of chunks; ``on_chunk(i)`` is called after chunk ``i`` is added
    (the resumable builder flushes and records progress there).
    """
    scale = 1.0 / op.num_samples
    chunks = [(x[i : i + chunk]) for x, _ in op.batches for i in range(0, x.shape[0], chunk)]
    for index in range(start_chunk, len(chunks)):
        rows = ggn_rows(op, chunks[index], names).detach().cpu().double().numpy()
        syrk_block_(H, rows, block.start, alpha=scale)
        if on_chunk is not None:
            on_chunk(index)
    return len(chunks)


def num_chunks(op: HessianOperator, chunk: int) -> int:
    return sum(math.ceil(x.shape[0] / chunk) for x, _ in op.batches)
