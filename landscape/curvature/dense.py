"""The full n x n curvature matrix, built in column blocks, resumable, on disk.

``dense_hessian(op, out_dir)`` fills ``out_dir/hessian.bin`` (a raw memory-mapped
n x n array, C order) block by block: block j is ``op @ E_j`` for the unit vectors of
columns ``[j*b, (j+1)*b)``, computed as one vmapped block product (far cheaper per
column than one double-backward per row, the naive floor). Because H is symmetric the
columns are also its rows, so the C-order file is H itself and its transpose view is
Fortran-contiguous: a LAPACK solver can work on it in place.

Resumability: after each block the map is flushed, then ``hessian.json`` records the
number of finished blocks (written atomically). A killed run restarts at the first
unrecorded block: no finished block is recomputed and none is lost (a block computed
but not yet recorded is simply computed again). The state also records a fingerprint of
the operator (parameter values, samples, kind, dtype) and refuses to resume onto a
different one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from landscape.curvature.base import LinearOperator, as_operator
from landscape.errors import LandscapeError
from landscape.io import write_json
from landscape.platform.heap import bound_heap, trim_heap
from landscape.progress import make_progress

MATRIX_FILE = "hessian.bin"
STATE_FILE = "hessian.json"
# workspace="auto" is max(AUTO_WORKSPACE_FLOOR, matrix / AUTO_WORKSPACE_DIVISOR): the budget
# bounds only the estimated temporaries, and the heap slack the trimmer allows (half the budget)
# comes on top, so a smaller divisor lets a conv net's build pass 1.2x the matrix's size and a
# larger one slows the rows pass with more, smaller vmapped calls.
AUTO_WORKSPACE_FLOOR = 16 * 2**20
AUTO_WORKSPACE_DIVISOR = 12


def operator_fingerprint(op: LinearOperator) -> str:
    """A hash that changes when the operator's matrix would change."""
    h = hashlib.sha256()
    h.update(repr((type(op).__name__, op.shape, str(op.dtype))).encode())
    if hasattr(op, "parameter_vector"):
        h.update(op.parameter_vector().detach().cpu().double().numpy().tobytes())
        for x, y in getattr(op, "batches", []):
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
            h.update(y.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr((getattr(op, "mode", None), getattr(op, "names", None))).encode())
    elif hasattr(op, "matrix"):
        h.update(op.matrix.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _open_state(out_dir: Path, n: int, storage: np.dtype, block_size: int, fingerprint: str) -> dict:
    state_path = out_dir / STATE_FILE
    fresh = {"n": n, "dtype": np.dtype(storage).name, "block_size": block_size, "fingerprint": fingerprint,
             "blocks_done": 0, "num_blocks": math.ceil(n / block_size), "hvp_count": 0, "build_s": 0.0}
    if not state_path.exists() or not (out_dir / MATRIX_FILE).exists():
        return fresh
    state = json.loads(state_path.read_text())
    if state.get("solving"):
        # An in-place eigensolve (exact_spectrum(overwrite=True)) was under way: LAPACK
        # has overwritten the matrix with its reduction, so nothing in the file is usable.
        import sys

        print(f"note: the matrix in '{out_dir}' was being overwritten by an in-place eigensolve when that run "
              "stopped; building it again from the start.", file=sys.stderr)
        return fresh
    for key in ("n", "dtype", "block_size", "fingerprint"):
        if state.get(key) != fresh[key]:
            raise LandscapeError(
                f"'{out_dir}' holds a partial matrix for a different {key} ({state.get(key)!r} vs {fresh[key]!r}): "
                "pass another --out directory, or delete it to start over."
            )
    return state


def dense_hessian(
    A,
    out_dir: str | Path | None = None,
    *,
    block_size: int = 64,
    storage_dtype: np.dtype | str = np.float64,
    progress: bool = True,
    max_blocks: int | None = None,
    method: str = "auto",
    ggn_chunk: int = 64,
    ggn_form: str = "auto",
    out: np.ndarray | None = None,
    workspace: int | str | None = "auto",
) -> np.ndarray:
    """Build the dense symmetric matrix of operator ``A`` (any landscape operator).

    ``method``: ``"hvp"`` takes every column from vmapped block products; ``"ggn"``
    takes the largest layer's diagonal block from the Gauss-Newton factor (exact for
    piecewise-linear classifiers, see :mod:`landscape.curvature.dense_ggn`) and the
    other columns from products; ``"auto"`` uses ``"ggn"`` where its exactness check
    passes (float64 Hessians of cross-entropy classifiers) and ``"hvp"`` otherwise.
    ``ggn_form``: how that block is built: ``"kron"`` (a Linear layer's Kronecker form,
    whole rows written once), ``"syrk"`` (rank-k updates over sample chunks of
    ``ggn_chunk``, any layer type), ``"auto"`` (kron where it applies).

    With ``out_dir`` the matrix lives in a memory-mapped file there and the build
    resumes; without it, in memory. ``storage_dtype`` float32 halves the disk and
    memory at the cost of float32 rounding in the stored entries (the solve still runs
    in float64); the GGN path needs float64 storage. ``max_blocks`` stops after that many
    new work units (column blocks or GGN chunks: tests and time slicing). Returns the
    (possibly partial, see the state file) array. ``out`` (in-memory builds only): an
    (n, n) C-ordered array of the storage dtype to build into (zeroed first), e.g. one
    buffer reused across builds.

    ``workspace``: bytes the split form's temporaries may take (vmapped Jacobians of the
    rows pass, psi-Hessian block products), ``"auto"`` = max(16 MiB, matrix / 12), so a
    build's peak stays near 1.2x the matrix's own size, or ``None`` for the fixed caps
    (128 samples per Jacobian call, 256 MiB per block product). Smaller chunks mean
    more, smaller vmapped calls: the build is a little slower (see benchmarks/README.md,
    dense).

    The build fixes glibc's mmap threshold at 4 MiB for the process and trims glibc's
    arenas between phases (:mod:`landscape.platform.heap`), because with glibc's defaults the
    heap keeps freed temporaries and a build's peak would grow past its workspace budget.
    """
    from landscape.curvature import dense_ggn

    bound_heap()
    op = as_operator(A)
    n = op.shape[0]
    storage = np.dtype(storage_dtype)
    if storage not in (np.float32, np.float64):
        raise LandscapeError(f"storage dtype must be float32 or float64, got {storage}.")
    if method not in ("auto", "hvp", "ggn"):
        raise LandscapeError(f"dense method must be auto, hvp or ggn, got '{method}'.")
    if ggn_form not in ("auto", "split", "kron", "syrk"):
        raise LandscapeError(f"GGN form must be auto, split, kron or syrk, got '{ggn_form}'.")
    fast = dense_ggn.plan(op) if method != "hvp" and storage == np.float64 else None
    if method == "ggn" and fast is None:
        raise LandscapeError(
            "The GGN fast path does not apply here (it needs a float64 Hessian of a cross-entropy classifier whose "
            "largest layer enters linearly, with float64 storage): use --dense-method hvp or auto."
        )
    block_size = max(1, min(int(block_size), n))
    if workspace == "auto":
        workspace = max(AUTO_WORKSPACE_FLOOR, n * n * storage.itemsize // AUTO_WORKSPACE_DIVISOR)
    elif workspace is not None and (isinstance(workspace, str) or int(workspace) <= 0):
        raise LandscapeError(f"workspace must be 'auto', None or a positive number of bytes, got {workspace!r}.")
    kron = split = None
    if fast is None:
        columns = np.arange(n)
        kind = "hvp"
    else:
        group, names = fast
        columns = np.concatenate([np.arange(0, group.start), np.arange(group.stop, n)])
        kron = dense_ggn.kron_layer(op, names) if ggn_form != "syrk" else None
        if ggn_form == "kron" and kron is None:
            raise LandscapeError("The Kronecker GGN form needs the largest layer to be an nn.Linear on flat inputs.")
        kind = "ggn-kron" if kron is not None else "ggn"
        if kron is not None and ggn_form in ("auto", "split"):
            from landscape.curvature import dense_split

            split = dense_split.plan_split(op, group, names, kron)
        if ggn_form == "split" and split is None:
            raise LandscapeError("The split form needs layers before the largest nn.Linear (a trunk) that reach the "
                                 "logits only through it.")
        if split is not None:
            columns = np.zeros(0, dtype=np.int64)  # every column outside L comes from the split form
            kind = "ggn-split"
    trim_heap()  # what the planning checks' products and Jacobians freed goes back before the build
    num_blocks = math.ceil(len(columns) / block_size)
    if fast is None:
        ggn_total = 0
    else:
        ggn_total = kron.out_features if kron is not None else dense_ggn.num_chunks(op, ggn_chunk)
    split_units = 0 if split is None else _split_units(op, split, block_size)
    fingerprint = operator_fingerprint(op) + f":{kind}:{ggn_chunk}"
    if out_dir is None:
        if out is None:
            from landscape import resources

            resources.check_in_memory(f"The dense {n:,} x {n:,} matrix", n * n * storage.itemsize + int(workspace or 0),
                                      resources.available_memory(), "build it on disk (pass out_dir), or use Lanczos "
                                      "or SLQ on the operator")
            H = np.zeros((n, n), dtype=storage)
        else:
            if out.shape != (n, n) or out.dtype != storage or not out.flags.c_contiguous:
                raise LandscapeError(
                    f"out must be a C-ordered ({n}, {n}) array of {storage}, got {out.shape} {out.dtype}."
                )
            H = out
            H.fill(0)
        state = {"blocks_done": 0, "hvp_count": 0, "build_s": 0.0, "ggn_chunks_done": 0, "ggn_in_progress": False,
                 "finalized": False, "split_units_done": 0}
        state_path = None
    else:
        if out is not None:
            raise LandscapeError("out is for in-memory builds; a build with out_dir lives in its memory-mapped file.")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = _open_state(out_dir, n, storage, block_size, fingerprint)
        state.update({k: v for k, v in {"method": kind, "num_blocks": num_blocks, "ggn_num_chunks": ggn_total}.items()})
        state.setdefault("split_units_done", 0)
        state.setdefault("ggn_chunks_done", 0)
        state.setdefault("ggn_in_progress", False)
        state.setdefault("finalized", False)
        path = out_dir / MATRIX_FILE
        started = path.exists() and (
            state["blocks_done"] > 0
            or state["ggn_chunks_done"] > 0
            or state["ggn_in_progress"]
            or state.get("split_units_done", 0) > 0
            or state.get("split_rows", "todo") != "todo"
        )
        H = np.memmap(path, dtype=storage, mode="r+" if started else "w+", shape=(n, n), order="C")
        state_path = out_dir / STATE_FILE
        if not started:
            write_json(state_path, state)

    def commit() -> None:
        if state_path is not None:
            H.flush()
            write_json(state_path, state)

    budget = [math.inf if max_blocks is None else int(max_blocks)]
    bar = make_progress(progress, "blocks")
    with bar:
        task = bar.add_task("dense curvature", total=num_blocks + split_units + ggn_total,
                            completed=int(state["blocks_done"]) + int(state.get("split_units_done", 0))
                            + int(state["ggn_chunks_done"]))
        for b in range(int(state["blocks_done"]), num_blocks):
            if budget[0] <= 0:
                return H
            t0 = time.perf_counter()
            idx = columns[b * block_size : (b + 1) * block_size]
            E = torch.zeros((n, len(idx)), dtype=op.dtype, device=op.device)
            E[torch.from_numpy(idx), torch.arange(len(idx))] = 1
            block = op.matmat(E).detach().cpu().numpy()  # columns idx == rows idx (symmetry)
            H[idx, :] = block.T.astype(storage, copy=False)
            state["hvp_count"] = int(state["hvp_count"]) + len(idx)
            state["build_s"] = float(state["build_s"]) + time.perf_counter() - t0
            state["blocks_done"] = b + 1
            budget[0] -= 1
            commit()
            bar.update(task, advance=1)
        if fast is not None:
            group, names = fast
            if split is not None and not _split_phases(H, op, split, state, commit, budget, bar, task, block_size,
                                                       workspace):
                return H
            if state["ggn_in_progress"] and kron is None:
                # A kill inside a BLAS update leaves the block half-updated: redo the phase.
                # (The Kronecker form overwrites whole rows: it just redoes the unrecorded ones.)
                H[group, group] = 0
                state["ggn_chunks_done"] = 0
            if int(state["ggn_chunks_done"]) < ggn_total and budget[0] > 0:
                t_phase = [time.perf_counter()]

                last_commit = [time.perf_counter()]

                def on_chunk(index: int) -> None:
                    state["build_s"] = float(state["build_s"]) + time.perf_counter() - t_phase[0]
                    t_phase[0] = time.perf_counter()
                    budget[0] -= 1
                    bar.update(task, advance=1)
                    more = index + 1 < ggn_total and budget[0] > 0
                    if kron is not None and more and time.perf_counter() - last_commit[0] < 20.0:
                        # Kronecker rows are overwritten, not accumulated: rows written but not yet
                        # recorded are simply redone after a kill, so the map is flushed at most
                        # every 20 s rather than after every row, which stalls on a busy disk.
                        return
                    state["ggn_chunks_done"] = index + 1
                    state["ggn_in_progress"] = more
                    commit()
                    last_commit[0] = time.perf_counter()
                    if budget[0] <= 0:
                        raise _Pause

                state["ggn_in_progress"] = True
                commit()
                try:
                    if kron is not None:
                        dense_ggn.build_kron_block_(H, op, group, kron, start_row=int(state["ggn_chunks_done"]),
                                                    on_row=on_chunk, workspace=workspace)
                    else:
                        dense_ggn.build_ggn_block_(H, op, group, names, chunk=ggn_chunk,
                                                   start_chunk=int(state["ggn_chunks_done"]), on_chunk=on_chunk)
                except _Pause:
                    return H
                trim_heap()
            if int(state["ggn_chunks_done"]) < ggn_total:
                return H
            if not state["finalized"]:
                _mirror_block_rows(H, group, within=kron is None)
                if storage == np.float64:
                    state["check_rel_error"] = check_against_products(H, op, workspace=workspace)
                    trim_heap()
                state["finalized"] = True
                commit()
    return H


def parse_workspace(text: str) -> int | str | None:
    """A workspace as users write it: ``auto``, ``none`` (the fixed caps, no budget), or a
    size in bytes with an optional binary suffix (``512M``, ``2GiB``, ``64k``, ``1e9``)."""
    value = str(text).strip().lower()
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    match = re.fullmatch(r"(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgt]?)(?:i?b)?", value)
    size = float(match.group(1)) * 2 ** (10 * " kmgt".index(match.group(2) or " ")) if match else 0.0
    if size < 1:
        raise LandscapeError(f"The dense workspace must be auto, none or a size such as 512M or 2G, got '{text}'.")
    return int(size)


def check_against_products(H: np.ndarray, op: LinearOperator, *, count: int = 2, seed: int = 0,
                           tol: float = 1e-8, workspace: int | None = None) -> float:
    """Max relative difference between ``H @ v`` and the operator's own products, for
    ``count`` random vectors; raises if it exceeds ``tol`` (a structured build whose
    assumptions failed must not reach the eigensolver). ``workspace`` bounds the
    products' memory (:meth:`HessianOperator.within`)."""
    from landscape.curvature.operators import HessianOperator

    if workspace is not None and isinstance(op, HessianOperator):
        op = op.within(workspace)
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(op.shape[0], count, generator=g, dtype=torch.float64)
    want = op.matmat(V.to(op.device, op.dtype)).detach().cpu().double().numpy()
    got = np.zeros_like(want)
    Vn = V.numpy()
    for i in range(0, H.shape[0], 2048):
        got[i : i + 2048] = np.asarray(H[i : i + 2048], dtype=np.float64) @ Vn
    rel = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-300))
    if rel > tol:
        raise LandscapeError(
            f"The dense matrix disagrees with the operator's Hessian-vector products (relative difference {rel:.1e} > "
            f"{tol:.0e}): a structural assumption of the fast path failed for this model; rerun with "
            "--dense-method hvp."
        )
    return rel


def _split_units(op, split, block_size: int) -> int:
    from landscape.curvature import dense_split

    sizes = dict(zip(op.names, op.sizes))
    return math.ceil(sum(sizes[n] for n in dense_split.trunk_columns(split)) / block_size) + 1


def _split_phases(H, op, split, state: dict, commit, budget: list, bar, task, block_size: int,
                  workspace: int | None = None) -> bool:
    """Rows S = trunk + head of H (see landscape.curvature.dense_split); True when done.

    Stages, recorded in ``state``: the psi-Hessian columns of the trunk (blocks, each
    written by assignment: idempotent), then the rows pass ("running" while it adds into
    H[S, L], "adding" while it adds into H[S, S]), then "done". A run killed while
    "running" clears H[S, L] and redoes that pass; one killed while "adding" starts the
    rows S over.
    """
    from landscape.curvature import dense_split

    rows = [split.trunk_rows, split.head_rows]
    stage = state.setdefault("split_rows", "todo")
    if stage == "running":
        for r in rows:
            H[r, split.L] = 0
        stage = "todo"
    elif stage == "adding":
        for r in rows:
            H[r, :] = 0
        state["split_units_done"] = 0
        stage = "todo"
    state["split_rows"] = stage
    if stage == "done":
        return True
    cols = dense_split.trunk_columns(split)
    t0 = time.perf_counter()
    w = dense_split.psi_weights(op, split, workspace=workspace)
    top = dense_split.trunk_operator(op, split, w, split.trunk, workspace=workspace)
    if "split_psi_vanishes" not in state:
        state["split_psi_vanishes"] = dense_split.psi_block_vanishes(top, split)
        trim_heap()
    if not state["split_psi_vanishes"]:
        cols = list(split.trunk)
    offsets = top.offsets
    sizes = dict(zip(top.names, top.sizes))
    idx_all = np.concatenate(
        [np.zeros(0, dtype=np.int64)]
        + [np.arange(offsets[f"model.{n}"], offsets[f"model.{n}"] + sizes[f"model.{n}"]) for n in cols]
    )
    nblocks = math.ceil(len(idx_all) / block_size)
    t_rows = split.trunk_rows
    base = t_rows.start
    for b in range(int(state["split_units_done"]), nblocks):
        if budget[0] <= 0:
            return False
        t1 = time.perf_counter()
        idx = idx_all[b * block_size : (b + 1) * block_size]
        E = torch.zeros((top.shape[0], len(idx)), dtype=top.dtype, device=top.device)
        E[torch.from_numpy(idx), torch.arange(len(idx))] = 1
        R = top.matmat(E).detach().cpu().double().numpy()  # psi-Hessian columns idx (all trunk rows)
        H[t_rows, base + idx] = R
        H[base + idx, t_rows] = R.T
        del R
        trim_heap()  # the vmapped product freed many sub-4-MiB tensors (see landscape.platform.heap)
        state["psi_product_count"] = int(state.get("psi_product_count", 0)) + len(idx)
        state["build_s"] = float(state["build_s"]) + time.perf_counter() - t1
        state["split_units_done"] = b + 1
        budget[0] -= 1
        commit()
        bar.update(task, advance=1)
    if budget[0] <= 0:
        return False
    t1 = time.perf_counter()
    state["split_rows"] = "running"
    commit()

    def adding() -> None:
        state["split_rows"] = "adding"
        commit()

    rows_task = bar.add_task("rows outside the largest layer", total=None)

    def rows_progress(done: int, total: int) -> None:
        bar.update(rows_task, completed=done, total=total)

    # an in-memory build cannot resume: its rows pass may add into H[S, S] as it goes
    dense_split.build_rows_(H, op, split, before_adding=adding, progress=rows_progress, workspace=workspace,
                            direct=not isinstance(H, np.memmap))
    trim_heap()
    bar.remove_task(rows_task)
    state["split_rows"] = "done"
    state["split_units_done"] = nblocks + 1
    state["build_s"] = float(state["build_s"]) + time.perf_counter() - t1
    state.setdefault("split_setup_s", time.perf_counter() - t0)
    budget[0] -= 1
    commit()
    bar.update(task, advance=1)
    return True


class _Pause(Exception):
    """Internal: the work-unit budget of this call is spent."""


def mark_solving(out_dir: str | Path) -> None:
    """Record that the matrix in ``out_dir`` is about to be destroyed by an in-place solve.

    A later ``dense_hessian`` on the same folder then rebuilds the matrix instead of
    resuming onto (and solving) the half-reduced remains of a killed eigensolve.
    """
    state_path = Path(out_dir) / STATE_FILE
    state = json.loads(state_path.read_text())
    state["solving"] = True
    write_json(state_path, state)


def _mirror_block_rows(H: np.ndarray, group: slice, panel: int = 1024, within: bool = True) -> None:
    """Complete rows ``group`` of H: off-block entries from the HVP rows (symmetry), and
    (``within``) the block's lower triangle from the upper one the rank-k update wrote."""
    lo, hi = group.start, group.stop
    for r0 in range(lo, hi, panel):
        r1 = min(hi, r0 + panel)
        if lo > 0:
            H[r0:r1, :lo] = np.asarray(H[:lo, r0:r1]).T
        if hi < H.shape[0]:
            H[r0:r1, hi:] = np.asarray(H[hi:, r0:r1]).T
        if not within:
            continue
        if r0 > lo:
            H[r0:r1, lo:r0] = np.asarray(H[lo:r0, r0:r1]).T
        diag = np.asarray(H[r0:r1, r0:r1])
        H[r0:r1, r0:r1] = np.triu(diag) + np.triu(diag, 1).T


def symmetrize_(H: np.ndarray, block: int = 4096) -> float:
    """Replace H by (H + H^T)/2 in place (row blocks); return the max asymmetry removed.

    Autodiff products are symmetric only up to rounding; LAPACK reads one triangle, so
    averaging makes the result independent of which triangle it reads.
    """
    n = H.shape[0]
    worst = 0.0
    for i in range(0, n, block):
        for j in range(i, n, block):
            a = np.array(H[i : i + block, j : j + block], dtype=np.float64)
            b = np.array(H[j : j + block, i : i + block], dtype=np.float64).T
            worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
            avg = 0.5 * (a + b)
            H[i : i + block, j : j + block] = avg
            H[j : j + block, i : i + block] = avg.T
    return worst
