"""The spectrum stage: checkpoint -> curvature operator -> spectrum.npz + spectrum.json.

``compute_spectrum(SpectrumConfig(...))`` reads a checkpoint, takes the first N samples
of a split in dataset order (or a seeded random subset), builds the curvature operator
of the MEAN loss over them and runs one method:

==============  ==========================================  ==============================
method          npz arrays                                  json extras
==============  ==========================================  ==============================
exact           eigenvalues (all, ascending, float64)       error bound, statistics
lanczos         ritz_values, residuals, converged           ritz_max/min; lambda_max/min for --which
slq             nodes, weights (one row per probe)          trace (+ stderr)
trace           samples                                      trace, trace_stderr
fisher-diag     diagonal (empirical, mc, exact = diag GGN, adam) statistics of the diagonal
==============  ==========================================  ==============================

Every JSON records method, n_params, samples, split, mode, dtype, seed, hvp_count,
wall_s and peak_rss_mb (DESIGN.md sec. 4: the sample set, dtype, mode, seed, HVP count
and wall time are part of the result). Results are written atomically; the dense
matrix of ``exact`` is built resumably in the output folder and removed once solved.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape import platform
from landscape.checkpoint import checkpoint_dataset, load_checkpoint, package_versions
from landscape.curvature.dense import MATRIX_FILE, STATE_FILE, dense_hessian, parse_workspace
from landscape.curvature.diagonal import adam_fisher_diagonal, diagonal_fisher
from landscape.curvature.operators import FisherOperator, GGNOperator, HessianOperator, make_batches
from landscape.data.splits import select_samples
from landscape.device import resolve_device
from landscape.errors import LandscapeError
from landscape.io import ensure_output_dir, write_arrays_and_summary
from landscape.losses import cross_entropy
from landscape.progress import announce, make_progress
from landscape.results import check_replaceable
from landscape.spectra.exact import exact_spectrum, spectrum_statistics
from landscape.spectra.lanczos import lanczos
from landscape.spectra.slq import slq
from landscape.spectra.trace import hutchinson_trace

METHODS = ("exact", "lanczos", "slq", "trace", "fisher-diag")
OPERATORS = ("hessian", "ggn", "fisher")


@dataclass(frozen=True)
class SpectrumConfig:
    checkpoint: str
    method: str = "lanczos"
    operator: str = "hessian"
    samples: int = 1000
    split: str = "train"
    batch_size: int = 256  # samples per forward pass: memory and speed, not the result
    seed: int = 0  # random probes and start vectors
    subset_seed: int | None = None  # None: the first N samples in dataset order
    mode: str = "eval"
    dtype: str = "float64"
    device: str = "auto"
    out: str | None = None
    data_dir: str | None = None
    params: tuple[str, ...] | None = None
    # lanczos
    k: int = 20
    which: str = "LA"
    tol: float = 1e-8
    max_iters: int | None = None  # None: lanczos()'s default, min(n, max(20 k + 50, 100))
    # slq / trace
    num_probes: int = 10
    num_iters: int = 90
    trace_rel: float = 0.01
    max_probes: int = 1000
    # fisher
    fisher: str = "empirical"
    mc_samples: int = 1
    # exact
    storage_dtype: str = "float64"
    block_size: int = 64
    keep_matrix: bool = False
    dense_method: str = "auto"  # auto | hvp | ggn (landscape.curvature.dense_hessian)
    dense_workspace: str = "auto"  # auto | none | a size such as 512M (dense_hessian's workspace)
    eigensolver: str = "auto"  # auto | mkl | scipy | torch (auto: the GPU where it fits, else MKL, else scipy)
    build_only: bool = False  # exact: build the matrix (resumably) and stop before the solve

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LandscapeError(f"Unknown method '{self.method}': choose one of {', '.join(METHODS)}.")
        if self.operator not in OPERATORS:
            raise LandscapeError(f"Unknown operator '{self.operator}': choose one of {', '.join(OPERATORS)}.")
        if self.samples < 1:
            raise LandscapeError(f"--samples must be >= 1, got {self.samples}.")
        if self.dtype not in ("float32", "float64"):
            raise LandscapeError(f"--dtype must be float32 or float64, got {self.dtype}.")
        parse_workspace(self.dense_workspace)  # one sentence now, not after a long setup
        if self.build_only and self.method != "exact":
            raise LandscapeError("--build-only is for --method exact (it builds the dense matrix and stops).")
        if self.fisher not in ("empirical", "mc", "adam", "exact"):
            raise LandscapeError(f"--fisher must be empirical, mc, exact or adam, got {self.fisher}.")
        if self.fisher == "adam" and self.method != "fisher-diag":
            raise LandscapeError("--fisher adam (the proxy from Adam's moments, Sec. 5.1 (iv)) is a diagonal only: "
                                 "use it with --method fisher-diag; for a Fisher operator choose --fisher "
                                 "empirical or mc.")
        if self.fisher == "exact" and self.method != "fisher-diag":
            raise LandscapeError("--fisher exact is for --method fisher-diag; the exact true-Fisher matrix is "
                                 "--operator ggn (equal for cross-entropy).")

    def output_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        ckpt = Path(self.checkpoint)
        run_dir = ckpt if ckpt.is_dir() else ckpt.parent
        return run_dir / f"spectrum-{self.method}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def build_operator(model, batches, config: SpectrumConfig, device, dtype):
    common = dict(mode=config.mode, dtype=dtype, device=device, params=list(config.params) if config.params else None)
    if config.operator == "hessian":
        return HessianOperator(model, cross_entropy, batches, **common)
    if config.operator == "ggn":
        return GGNOperator(model, cross_entropy, batches, **common)
    kind = "mc" if config.fisher == "mc" else "empirical"
    return FisherOperator(model, cross_entropy, batches, kind=kind, mc_samples=config.mc_samples,
                          seed=config.seed, **common)


#: Settings that change speed, memory or where files go, not the spectrum: a rerun may change them freely.
NOT_RESULT_SETTINGS = ("checkpoint", "device", "out", "data_dir", "batch_size", "block_size", "keep_matrix",
                       "dense_method", "dense_workspace", "eigensolver", "build_only")


def compute_spectrum(config: SpectrumConfig, *, progress: bool = True, force: bool = False) -> tuple[Path, dict]:
    """Run one spectrum method; returns ``(output_dir, summary)`` and writes the files.

    A result already in the output folder that was computed with other settings is kept:
    this raises unless ``force`` (the summary's ``replaced`` lists what changed).
    """
    start = time.perf_counter()
    out_dir = config.output_dir()
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
    replaced = check_replaceable(out_dir / "spectrum.json", settings, force=force, ignore=NOT_RESULT_SETTINGS)
    device = resolve_device(config.device)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    model, meta = load_checkpoint(config.checkpoint, device=device)
    out_dir = ensure_output_dir(out_dir)
    summary: dict = {
        "method": config.method,
        "operator": "fisher" if config.method == "fisher-diag" else config.operator,
        "checkpoint": str(meta.get("path", config.checkpoint)),
        "model": meta["model"],
        "split": config.split,
        "mode": config.mode,
        "dtype": config.dtype,
        "seed": config.seed,
        "subset_seed": config.subset_seed,
        "config": settings,
        "versions": package_versions(),
        "device": str(device),
        "platform": platform.describe(),
    }
    arrays: dict[str, np.ndarray] = {}

    if config.method == "fisher-diag" and config.fisher == "adam":
        optimizer = meta.get("optimizer") or {}
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
        diagonal = adam_fisher_diagonal(optimizer.get("state_dict") or {}, names, shapes)
        arrays["diagonal"] = diagonal.numpy()
        summary.update({"fisher": "adam", "samples": None, "n_params": int(diagonal.numel()), "hvp_count": 0,
                        "sample_rule": "moments accumulated by Adam during training"})
    else:
        dataset = checkpoint_dataset(meta, config.split, config.data_dir)
        inputs, targets, sample_info = select_samples(dataset, config.samples, config.subset_seed)
        batches = make_batches(inputs, targets, config.batch_size)
        summary.update({"samples": config.samples, "sample_rule": sample_info["rule"], "batch_size": config.batch_size,
                        "dataset": meta.get("dataset", {}).get("name")})
        if config.method == "fisher-diag":
            exact = config.fisher == "exact"
            op = FisherOperator(model, cross_entropy, batches, kind="empirical" if exact else config.fisher,
                                mc_samples=config.mc_samples, seed=config.seed, mode=config.mode, dtype=dtype,
                                device=device)
            arrays["diagonal"] = diagonal_fisher(op, exact_expectation=exact).cpu().double().numpy()
            summary["fisher"] = config.fisher
        else:
            op = build_operator(model, batches, config, device, dtype)
        summary["n_params"] = int(op.shape[0])
        summary["loss"] = op.loss()
        _run_method(op, config, out_dir, summary, arrays, progress)
        # a solve after --build-only made no products itself: the build's count comes from its state file
        summary["hvp_count"] = max(int(op.count), int(summary.get("build_hvp_count", 0)))
        if isinstance(op, HessianOperator):  # which exact scheme computed the products (timed choices)
            summary["product_schemes"] = {"single": op.hvp_method, "block": op.block_method,
                                          "cache_graph": op.cache_decision,
                                          "cached_graph_bytes": int(op.cached_graph_bytes)}
        if config.build_only:
            return out_dir, summary  # no spectrum files: the solve is still to come

    if replaced:
        summary["replaced"] = {key: list(pair) for key, pair in replaced.items()}
    if "diagonal" in arrays:
        summary.update(spectrum_statistics(arrays["diagonal"]))
    summary["wall_s"] = time.perf_counter() - start
    summary["peak_rss_mb"] = peak_rss_mb()
    write_arrays_and_summary(out_dir / "spectrum.npz", out_dir / "spectrum.json", arrays, summary)
    return out_dir, summary


def _run_lanczos(op, config: SpectrumConfig, summary: dict, arrays: dict, progress: bool) -> None:
    """Top-k Ritz values. Only an end that was asked for (--which) names an eigenvalue of the
    operator (lambda_max / lambda_min); ritz_max / ritz_min are the range of what was found."""
    n = op.shape[0]
    wanted = config.k * (2 if config.which == "both" else 1)
    if wanted > n:
        summary.setdefault("warnings", []).append(
            f"--k {config.k} asks for {wanted} eigenvalues of a {n}-parameter operator; Lanczos returns at most "
            f"{n}: use --method exact for all of them.")
    with make_progress(progress, "steps", status=True) as bar:
        task = bar.add_task(f"Lanczos ({config.k} {config.which} Ritz values to {config.tol:g})", total=None, status="")

        def on_step(m: int, cap: int, done: int) -> None:
            bar.update(task, completed=m, total=cap, status=f"{done} converged")

        result = lanczos(op, k=config.k, which=config.which, tol=config.tol, seed=config.seed,
                         max_iters=config.max_iters, on_step=on_step)
    arrays.update(ritz_values=result.ritz_values, residuals=result.residuals, converged=result.converged,
                  error_bounds=result.error_bounds)
    summary.update({"k": config.k, "which": config.which, "iterations": result.iterations, "tol": config.tol,
                    "stop": result.stop, "max_error_bound": float(np.max(result.error_bounds)),
                    "all_converged": result.all_converged, "converged": result.all_converged,
                    "ritz_max": float(result.ritz_values.max()), "ritz_min": float(result.ritz_values.min())})
    if config.which in ("LA", "both"):
        summary["lambda_max"] = summary["ritz_max"]
    if config.which in ("SA", "both"):
        summary["lambda_min"] = summary["ritz_min"]
    if config.which == "LM":
        summary["lambda_abs_max"] = float(np.max(np.abs(result.ritz_values)))
    if not result.all_converged:
        summary.setdefault("warnings", []).append(
            f"{int(np.sum(~result.converged))} of {len(result.ritz_values)} Ritz values did not reach --tol "
            f"{config.tol:g} within {result.iterations} Lanczos steps (largest error bound "
            f"{summary['max_error_bound']:.3g}); raise --max-iters or loosen --tol.")


def _run_method(op, config: SpectrumConfig, out_dir: Path, summary: dict, arrays: dict, progress: bool) -> None:
    if config.method == "exact":
        from landscape.resources import check_exact_spectrum

        check_exact_spectrum(op.shape[0], out_dir / MATRIX_FILE, storage_dtype=config.storage_dtype,
                             solve_dtype=config.dtype, solve=not config.build_only, eigensolver=config.eigensolver,
                             device=op.device, workspace=parse_workspace(config.dense_workspace))
        H = dense_hessian(
            op,
            out_dir,
            block_size=config.block_size,
            storage_dtype=config.storage_dtype,
            progress=progress,
            method=config.dense_method,
            workspace=parse_workspace(config.dense_workspace),
        )
        state = json.loads((out_dir / STATE_FILE).read_text())
        summary["build_hvp_count"] = int(state.get("hvp_count") or 0)
        if config.build_only:
            summary.update({"built": True, "dense_method": state.get("method"), "dense_build_s": state.get("build_s"),
                            "dense_check_rel_error": state.get("check_rel_error")})
            return
        n, storage = H.shape[0], H.dtype
        H.flush()
        del H
        # Solve on a private copy-on-write mapping of the file: LAPACK overwrites the matrix
        # with its reduction n times over, and on the shared mapping the kernel wrote every
        # dirtied page back to disk (the first small-mnistfc solve sat at 90% I/O wait). Private
        # pages never reach the file, so the built matrix also survives a killed solve.
        H = np.memmap(out_dir / MATRIX_FILE, dtype=storage, mode="c", shape=(n, n), order="C")
        announce(f"eigensolve of the {n:,} x {n:,} matrix started (built by {state.get('method')} in "
                 f"{float(state.get('build_s') or 0):.0f} s); LAPACK reports no progress until it returns", progress)
        result = exact_spectrum(H, solve_dtype="float64" if config.dtype == "float64" else "float32",
                                overwrite=True, backend=config.eigensolver, device=op.device)
        del H
        arrays["eigenvalues"] = result.eigenvalues
        summary.update(spectrum_statistics(result.eigenvalues))
        summary.update({"eigenvalue_abs_error_bound": result.eigenvalue_abs_error_bound,
                        "solver_error_bound": result.abs_error_bound, "storage_error_bound": result.storage_error_bound,
                        "storage_dtype": config.storage_dtype, "eigensolve_s": result.wall_s,
                        "eigensolve_in_place": result.in_place, "eigensolver": result.extra.get("backend"),
                        "dense_method": state.get("method"), "dense_build_s": state.get("build_s"),
                        "dense_check_rel_error": state.get("check_rel_error"),
                        "psi_product_count": state.get("psi_product_count", 0)})
        if not config.keep_matrix:
            for name in (MATRIX_FILE, STATE_FILE):
                (out_dir / name).unlink(missing_ok=True)
    elif config.method == "lanczos":
        _run_lanczos(op, config, summary, arrays, progress)
    elif config.method == "slq":
        with make_progress(progress, "probes") as bar:
            task = bar.add_task(f"SLQ ({config.num_iters} Lanczos steps per probe)", total=config.num_probes)
            result = slq(op, num_probes=config.num_probes, num_iters=config.num_iters, seed=config.seed,
                         on_probe=lambda done, total: bar.update(task, completed=done))
        arrays.update(nodes=result.nodes, weights=result.weights)
        trace, stderr = result.trace_estimate()
        # the extreme quadrature nodes are Ritz values of each probe's Krylov space: estimates, not bounds
        summary.update({"num_probes": config.num_probes, "num_iters": result.num_iters, "trace": trace,
                        "trace_stderr": stderr, "lambda_max": float(result.nodes.max()),
                        "lambda_min": float(result.nodes.min())})
    elif config.method == "trace":
        with make_progress(progress, "probes", status=True) as bar:
            task = bar.add_task(f"Hutchinson trace (to {config.trace_rel:g} relative error)", total=config.max_probes,
                                status="")
            result = hutchinson_trace(
                op, max_samples=config.max_probes, target_rel=config.trace_rel, seed=config.seed,
                on_block=lambda done, total, rel: bar.update(task, completed=done, status=f"rel. error {rel:.3g}"))
        arrays["estimate"] = np.array([result.estimate])
        summary["converged"] = result.converged
        if not result.converged:
            summary.setdefault("warnings", []).append(
                f"the trace stopped at its cap of {config.max_probes} probes with a relative standard error of "
                f"{result.stderr / abs(result.estimate):.3g}, above the --trace-rel target {config.trace_rel:g}; "
                "raise --max-probes for a tighter estimate.")
        summary.update({"trace": result.estimate, "trace_stderr": result.stderr, "probes": result.samples,
                        "target_rel": config.trace_rel, "max_probes": config.max_probes})
