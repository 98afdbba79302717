"""`landscape spectrum`: the command's options mapped onto :class:`landscape.spectrum.SpectrumConfig`."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from landscape.cli.common import (
    FRACTION,
    Mode,
    Precision,
    chunk_option,
    console,
    draws_option,
    force_option,
    interrupt_hint,
    refuse_unused,
    run_guarded,
    samples_option,
    seed_option,
    subset_seed_option,
)


class Method(str, enum.Enum):
    exact = "exact"
    lanczos = "lanczos"
    slq = "slq"
    trace = "trace"
    fisher_diag = "fisher-diag"


class Operator(str, enum.Enum):
    hessian = "hessian"
    ggn = "ggn"
    fisher = "fisher"


class Which(str, enum.Enum):
    LA = "LA"
    SA = "SA"
    both = "both"
    LM = "LM"


class FisherKind(str, enum.Enum):
    empirical = "empirical"
    mc = "mc"
    exact = "exact"
    adam = "adam"


class DenseMethod(str, enum.Enum):
    auto = "auto"
    hvp = "hvp"
    ggn = "ggn"


class Eigensolver(str, enum.Enum):
    auto = "auto"
    mkl = "mkl"
    scipy = "scipy"
    torch = "torch"


# Options of `spectrum` that only some methods use (parameter name -> flag), and which method uses which.
SPECTRUM_SPECIFIC = {
    "operator": "--operator", "k": "--k", "which": "--which", "tol": "--tol", "max_iters": "--max-iters",
    "num_probes": "--probes", "num_iters": "--iters", "trace_rel": "--trace-rel", "max_probes": "--max-probes",
    "fisher": "--fisher", "draws": "--draws", "storage": "--storage", "block_size": "--block-size",
    "keep_matrix": "--keep-matrix", "dense_method": "--dense-method", "dense_workspace": "--dense-workspace",
    "eigensolver": "--eigensolver", "build_only": "--build-only",
}
_FISHER_OPTIONS = {"fisher", "draws"}  # used with --method fisher-diag or --operator fisher only
SPECTRUM_USES = {
    "exact": {"operator", "storage", "block_size", "keep_matrix", "dense_method", "dense_workspace", "eigensolver",
              "build_only"},
    "lanczos": {"operator", "k", "which", "tol", "max_iters"},
    "slq": {"operator", "num_probes", "num_iters"},
    "trace": {"operator", "trace_rel", "max_probes"},
    "fisher-diag": set(),
}


def spectrum(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., metavar="RUN", help="A checkpoint.pt (or the run directory holding it)."),
    method: Method = typer.Option(Method.lanczos, "--method", help="exact | lanczos | slq | trace | fisher-diag."),
    operator: Operator = typer.Option(Operator.hessian, "--operator", help="Curvature matrix: hessian, ggn or fisher."),
    samples: int = samples_option(),
    split: str = typer.Option("train", "--split", metavar="SPLIT", help="train, val or test."),
    chunk_size: int = chunk_option(),
    seed: int = seed_option(),
    subset_seed: int | None = subset_seed_option(),
    mode: Mode = typer.Option(Mode.eval, "--mode", help="Model mode while differentiating."),
    dtype: Precision = typer.Option(Precision.float64, "--dtype", help="Precision of products and of the eigensolve."),
    k: int = typer.Option(20, "--k", min=1, metavar="K",
                          help="Lanczos: number of eigenvalues (per end with --which both)."),
    which: Which = typer.Option(Which.LA, "--which", help="Lanczos: LA largest, SA smallest, both, LM magnitude."),
    tol: float = typer.Option(1e-8, "--tol", callback=FRACTION, metavar="TOL",
                              help="Lanczos: relative eigenvalue error (Kato-Temple bound) to stop at."),
    max_iters: int | None = typer.Option(None, "--max-iters", min=1, metavar="M",
                                            help="Lanczos: cap on the steps [default: max(20 k + 50, 100)]; the "
                                                 "result says whether every Ritz value converged before it."),
    num_probes: int = typer.Option(10, "--probes", min=1, metavar="P", help="SLQ: number of random probes."),
    num_iters: int = typer.Option(90, "--iters", min=1, metavar="M", help="SLQ: Lanczos steps per probe."),
    trace_rel: float = typer.Option(0.01, "--trace-rel", callback=FRACTION, metavar="R",
                                    help="Trace: stop at this relative standard error."),
    max_probes: int = typer.Option(1000, "--max-probes", min=1, metavar="P",
                                   help="Trace: cap on the probes; the result says whether --trace-rel was met."),
    fisher: FisherKind = typer.Option(FisherKind.empirical, "--fisher",
                                      help="fisher-diag: empirical, mc, exact (true Fisher = diag GGN) or adam; "
                                           "fisher operator: empirical or mc."),
    draws: int = draws_option(1, "labels drawn per input for the MC Fisher (--fisher mc)"),
    storage: Precision = typer.Option(Precision.float64, "--storage", help="Exact: precision of the stored matrix."),
    block_size: int = typer.Option(64, "--block-size", min=1, metavar="B", help="Exact: columns per block product."),
    keep_matrix: bool = typer.Option(False, "--keep-matrix",
                                     help="Exact: keep hessian.bin after the solve (the solve never writes to it)."),
    dense_method: DenseMethod = typer.Option(
        DenseMethod.auto, "--dense-method",
        help="Exact: ggn (GGN block + HVP columns, exact for ReLU nets), hvp, or auto."
    ),
    dense_workspace: str = typer.Option(
        "auto", "--dense-workspace", metavar="SIZE",
        help="Exact: memory the build's temporaries may take beside the matrix: auto "
        "(max(16 MiB, matrix/12)), none (fixed caps: faster, more memory) or a size such as 512M or 2G."),
    eigensolver: Eigensolver = typer.Option(
        Eigensolver.auto, "--eigensolver",
        help="Exact: mkl, scipy, torch (torch.linalg.eigvalsh on --device), or auto (the GPU where the solve fits, "
             "else MKL if installed, else scipy)."),
    build_only: bool = typer.Option(
        False, "--build-only", help="Exact: build the dense matrix (resumable) and stop before the eigensolve; the "
                                    "same command without it then only solves."),
    params: list[str] = typer.Option([], "--param", metavar="NAME",
                                     help="Restrict to these parameter tensors / module prefixes (repeatable)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR", help="Where dataset files live."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR",
                                       help="Output folder [default: RUN_DIR/spectrum-METHOD]."),
    force: bool = force_option(),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress (a bar on a terminal, a line every 30 s otherwise)."),
) -> None:
    """Curvature spectrum of a checkpoint: writes DIR/spectrum.npz and DIR/spectrum.json."""
    from landscape.spectrum import SpectrumConfig, compute_spectrum

    def go():
        used = SPECTRUM_USES[method.value] - _FISHER_OPTIONS
        if method.value == "fisher-diag" or operator.value == "fisher":
            used |= {"fisher"} | ({"draws"} if fisher.value == "mc" else set())
        refuse_unused(ctx, SPECTRUM_SPECIFIC, used, f"--method {method.value}"
                      + (f" --operator {operator.value}" if method.value != "fisher-diag" else ""))
        config = SpectrumConfig(
            checkpoint=str(checkpoint), method=method.value, operator=operator.value, samples=samples, split=split,
            batch_size=chunk_size, seed=seed, subset_seed=subset_seed, mode=mode.value, dtype=dtype.value,
            device=device, out=None if out is None else str(out),
            data_dir=None if data_dir is None else str(data_dir), params=tuple(params) or None, k=k,
            which=which.value, tol=tol, max_iters=max_iters, num_probes=num_probes, num_iters=num_iters,
            trace_rel=trace_rel, max_probes=max_probes, fisher=fisher.value, mc_samples=draws,
            storage_dtype=storage.value, block_size=block_size, keep_matrix=keep_matrix,
            dense_method=dense_method.value, dense_workspace=dense_workspace, eigensolver=eigensolver.value,
            build_only=build_only,
        )
        target = config.output_dir()
        interrupt_hint[0] = lambda: (
            f"the finished blocks of the dense matrix in {target} are kept; run the same command again to resume."
            if method.value == "exact" and (target / "hessian.json").exists()
            else "no spectrum was written."
        )
        out_dir, summary = compute_spectrum(config, progress=not quiet, force=force)
        for line in summarise_spectrum(out_dir, summary):
            console.print(line, highlight=False, soft_wrap=True)

    run_guarded(go)


def summarise_spectrum(out_dir: Path, summary: dict) -> list[str]:
    """What the terminal shows of a spectrum result (the JSON holds everything)."""
    if summary.get("built"):
        return [f"built the dense matrix in {out_dir} ({summary['n_params']} parameters, "
                f"{summary['dense_build_s']:.0f} s of building, method {summary['dense_method']}); run the "
                "same command without --build-only to solve it."]
    parts = [f"n_params {summary['n_params']}"]
    for key in ("lambda_max", "lambda_min", "lambda_abs_max", "ritz_max", "ritz_min", "trace"):
        if key in summary and not (key.startswith("ritz") and summary.get("method") != "lanczos"):
            parts.append(f"{key} {summary[key]:.6g}")
    if summary.get("method") == "lanczos":
        parts.append(f"{summary['k']} {summary['which']} Ritz values")
    if "fraction_abs_below" in summary and summary.get("method") == "exact":
        parts.append(f"|lambda|<1e-4: {summary['fraction_abs_below']['1e-4']:.1%}")
    parts.append(f"{summary['hvp_count']} products, {summary['wall_s']:.1f} s")
    lines = [f"wrote {out_dir}/spectrum.{{npz,json}}: " + ", ".join(parts)]
    if summary.get("replaced"):
        changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in summary["replaced"].items())
        lines.append(f"replaced the earlier result in {out_dir} ({changed})")
    lines.extend(f"warning: {w}" for w in summary.get("warnings") or [])
    return lines
