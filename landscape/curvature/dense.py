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
import time
from pathlib import Path

import numpy as np
import torch

from landscape.curvature.base import LinearOperator, as_operator
from landscape.errors import LandscapeError
from landscape.io import write_json

MATRIX_FILE = "hessian.bin"
STATE_FILE = "hessian.json"


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
    memory (DESIGN: store in float32, solve in float64 errs by ~5e-9 on Hessians of
    norm ~40; the GGN path needs float64 storage). ``max_blocks`` stops after that many
    new work units (column blocks or GGN chunks: tests and time slicing). Returns the
    (possibly partial, see the state file) array.
    """
    from landscape.curvature import dense_ggn

    op = as_operator(A)
    n = op.shape[0]
    storage = np.dtype(storage_dtype)
    if storage not in (np.float32, np.float64):
        raise LandscapeError(f"storage dtype must be float32 or float64, got {storage}.")
    if method not in ("auto", "hvp", "ggn"):
        raise LandscapeError(f"dense method must be auto, hvp or ggn, got '{method}'.")
    if ggn_form not in ("auto", "kron", "syrk"):
        raise LandscapeError(f"GGN form must be auto, kron or syrk, got '{ggn_form}'.")
    fast = dense_ggn.plan(op) if method != "hvp" and storage == np.float64 else None
    if method == "ggn" and fast is None:
        raise LandscapeError(
            "The GGN fast path does not apply here (it needs a float64 Hessian of a cross-entropy classifier whose "
            "largest layer enters linearly, with float64 storage): use --dense-method hvp or auto."
        )
    block_size = max(1, min(int(block_size), n))
    kron = None
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
    num_blocks = math.ceil(len(columns) / block_size)
    if fast is None:
        ggn_total = 0
    else:
        ggn_total = kron.out_features if kron is not None else dense_ggn.num_chunks(op, ggn_chunk)
    fingerprint = operator_fingerprint(op) + f":{kind}:{ggn_chunk}"
    if out_dir is None:
        H = np.zeros((n, n), dtype=storage)
        state = {"blocks_done": 0, "hvp_count": 0, "build_s": 0.0, "ggn_chunks_done": 0, "ggn_in_progress": False,
                 "finalized": False}
        state_path = None
    else:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = _open_state(out_dir, n, storage, block_size, fingerprint)
        state.update({k: v for k, v in {"method": kind, "num_blocks": num_blocks, "ggn_num_chunks": ggn_total}.items()})
        state.setdefault("ggn_chunks_done", 0)
        state.setdefault("ggn_in_progress", False)
        state.setdefault("finalized", False)
        path = out_dir / MATRIX_FILE
        started = path.exists() and (state["blocks_done"] > 0 or state["ggn_chunks_done"] > 0 or state["ggn_in_progress"])
        H = np.memmap(path, dtype=storage, mode="r+" if started else "w+", shape=(n, n), order="C")
        state_path = out_dir / STATE_FILE
        if not started:
            write_json(state_path, state)

    def commit() -> None:
        if state_path is not None:
            H.flush()
            write_json(state_path, state)

    budget = [math.inf if max_blocks is None else int(max_blocks)]
    bar = _progress(progress)
    with bar:
        task = bar.add_task("dense curvature", total=num_blocks + ggn_total,
                            completed=int(state["blocks_done"]) + int(state["ggn_chunks_done"]))
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
            if state["ggn_in_progress"] and kron is None:
                # A kill inside a BLAS update leaves the block half-updated: redo the phase.
                # (The Kronecker form overwrites whole rows: it just redoes the unrecorded ones.)
                H[group, group] = 0
                state["ggn_chunks_done"] = 0
            if int(state["ggn_chunks_done"]) < ggn_total and budget[0] > 0:
                t_phase = [time.perf_counter()]

                def on_chunk(index: int) -> None:
                    state["ggn_chunks_done"] = index + 1
                    state["build_s"] = float(state["build_s"]) + time.perf_counter() - t_phase[0]
                    t_phase[0] = time.perf_counter()
                    budget[0] -= 1
                    state["ggn_in_progress"] = index + 1 < ggn_total and budget[0] > 0
                    commit()
                    bar.update(task, advance=1)
                    if budget[0] <= 0:
                        raise _Pause

                state["ggn_in_progress"] = True
                commit()
                try:
                    if kron is not None:
                        dense_ggn.build_kron_block_(H, op, group, kron, start_row=int(state["ggn_chunks_done"]),
                                                    on_row=on_chunk)
                    else:
                        dense_ggn.build_ggn_block_(H, op, group, names, chunk=ggn_chunk,
                                                   start_chunk=int(state["ggn_chunks_done"]), on_chunk=on_chunk)
                except _Pause:
                    return H
            if int(state["ggn_chunks_done"]) < ggn_total:
                return H
            if not state["finalized"]:
                _mirror_block_rows(H, group, within=kron is None)
                state["finalized"] = True
                commit()
    return H


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


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("blocks"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=not enabled)
