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
) -> np.ndarray:
    """Build the dense symmetric matrix of operator ``A`` (any landscape operator).

    With ``out_dir`` the matrix lives in a memory-mapped file there and the build
    resumes; without it, in memory. ``storage_dtype`` float32 halves the disk and
    memory (DESIGN: store in float32, solve in float64 errs by ~5e-9 on Hessians of
    norm ~40). ``max_blocks`` stops after that many new blocks (for tests and time
    slicing). Returns the (possibly partially built, see the state file) array.
    """
    op = as_operator(A)
    n = op.shape[0]
    storage = np.dtype(storage_dtype)
    if storage not in (np.float32, np.float64):
        raise LandscapeError(f"storage dtype must be float32 or float64, got {storage}.")
    block_size = max(1, min(int(block_size), n))
    num_blocks = math.ceil(n / block_size)
    if out_dir is None:
        H = np.zeros((n, n), dtype=storage)
        state = {"blocks_done": 0, "hvp_count": 0, "build_s": 0.0}
        state_path = None
    else:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = _open_state(out_dir, n, storage, block_size, operator_fingerprint(op))
        path = out_dir / MATRIX_FILE
        mode = "r+" if path.exists() and state["blocks_done"] > 0 else "w+"
        H = np.memmap(path, dtype=storage, mode=mode, shape=(n, n), order="C")
        state_path = out_dir / STATE_FILE
        if mode == "w+":
            write_json(state_path, state)
    start_block = int(state["blocks_done"])
    stop_block = num_blocks if max_blocks is None else min(num_blocks, start_block + max_blocks)
    bar = _progress(progress)
    with bar:
        task = bar.add_task("dense curvature", total=num_blocks, completed=start_block)
        for b in range(start_block, stop_block):
            t0 = time.perf_counter()
            lo, hi = b * block_size, min(n, (b + 1) * block_size)
            E = torch.zeros((n, hi - lo), dtype=op.dtype, device=op.device)
            E[torch.arange(lo, hi), torch.arange(hi - lo)] = 1
            block = op.matmat(E).detach().cpu().numpy()  # columns lo:hi == rows lo:hi
            H[lo:hi, :] = block.T.astype(storage, copy=False)
            state["hvp_count"] = int(state["hvp_count"]) + (hi - lo)
            state["build_s"] = float(state["build_s"]) + time.perf_counter() - t0
            state["blocks_done"] = b + 1
            if state_path is not None:
                H.flush()
                write_json(state_path, state)
            bar.update(task, advance=1)
    return H


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
