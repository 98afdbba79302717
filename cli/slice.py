"""`landscape slice`: the loss and error of a run on a 1-D or 2-D grid of weights (Li et al. 2018).

A plain function registered on the app in ``cli/app.py``; it maps its options onto
:class:`landscape.slices.SliceConfig` and calls the library.
"""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from landscape.cli.common import (
    NON_NEGATIVE,
    Precision,
    chunk_option,
    console,
    force_option,
    format_seconds,
    run_guarded,
    seed_option,
    stderr_log,
)
from landscape.errors import LandscapeError


class DirectionKind(str, enum.Enum):
    random = "random"
    hessian = "hessian"


class HessianWhich(str, enum.Enum):
    LA = "LA"
    both = "both"


def slice_command(
    checkpoint: Path = typer.Argument(..., metavar="RUN", help="A checkpoint.pt (or the run directory holding it)."),
    directions: DirectionKind = typer.Option(
        DirectionKind.random, "--directions",
        help="random: Gaussian, filter-normalised as Li et al. 2018; hessian: the top Lanczos eigenvectors of the "
             "Hessian on the training samples, scaled to the norm of the weights."),
    which: HessianWhich = typer.Option(HessianWhich.LA, "--which",
                                       help="Hessian directions: LA the top eigenvectors, both the top and the bottom "
                                            "one (2-D)."),
    to: Path | None = typer.Option(None, "--to", metavar="OTHER_RUN",
                                      help="The straight path from RUN (t = 0) to OTHER_RUN (t = 1) instead of "
                                           "directions; 1-D only."),
    dims: int | None = typer.Option(None, "--dims", min=1, max=2, metavar="1|2",
                                       help="Directions: 1 (a curve) or 2 (a surface). [default: 2; 1 with --to]"),
    span: float | None = typer.Option(
        None, "--range", callback=NON_NEGATIVE, metavar="R",
        help="Coordinates in [-R, R] (in units of the directions, whose norm is that of the weights); with --to, "
             "t in [-R, 1 + R]. [default: 1; 0.25 with --to]"),
    points: int | None = typer.Option(None, "--points", min=2, metavar="P",
                                         help="Points per axis. [default: 51 in 1-D, 21 in 2-D]"),
    samples: int = typer.Option(1000, "--samples", "-n", min=1, metavar="N",
                                help="Data samples N of each split, train and test (the first N in dataset order; "
                                     "all of a smaller split): the loss and error are their means."),
    chunk_size: int = chunk_option(),
    points_per_pass: int | None = typer.Option(
        None, "--points-per-pass", min=1, metavar="K",
        help="Grid points per forward pass: memory and speed only. [default: as many as keep the activations "
             "within 512 MiB, at most 32]"),
    seed: int = seed_option(),
    keep_bias_bn: bool = typer.Option(False, "--keep-bias-bn",
                                      help="Random directions: keep biases and BatchNorm parameters (each rescaled "
                                           "to the norm of its weights) instead of zeroing them as Li et al."),
    dtype: Precision = typer.Option(Precision.float32, "--dtype", help="Precision of the network evaluations."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR", help="Where dataset files live."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR",
                                       help="Output folder [default: RUN/slice-NAME, NAME e.g. random-2d, "
                                            "hessian-1d, to-OTHER]."),
    force: bool = force_option(),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Training and test loss and error of RUN on a grid of weights: writes DIR/slice.npz and DIR/slice.json.

    BatchNorm layers keep the checkpoint's running statistics at every point (eval mode).
    """
    from landscape.slices import SliceConfig, compute_slice

    def go():
        if directions is not DirectionKind.hessian and which is not HessianWhich.LA:
            raise LandscapeError("--which is for --directions hessian.")
        config = SliceConfig(
            checkpoint=str(checkpoint), directions=directions.value, to=None if to is None else str(to),
            dims=dims if dims is not None else (1 if to is not None else 2),
            span=span, points=points, samples=samples, batch_size=chunk_size, points_per_pass=points_per_pass,
            seed=seed, keep_bias_bn=keep_bias_bn, hessian_which=which.value, dtype=dtype.value, device=device,
            out=None if out is None else str(out), data_dir=None if data_dir is None else str(data_dir))
        out_dir, summary = compute_slice(config, log=stderr_log(quiet), progress=not quiet, force=force)
        for line in summarise_slice(out_dir, summary):
            console.print(line, highlight=False, soft_wrap=True)

    run_guarded(go)



def summarise_slice(out_dir: Path, summary: dict) -> list[str]:
    """What the terminal shows of a slice (the JSON holds everything)."""
    centre = summary["centre"]
    lines = [f"centre: train loss {centre['train']['loss']:.4g} error {centre['train']['error']:.4g}, "
             f"test loss {centre['test']['loss']:.4g} error {centre['test']['error']:.4g}"]
    if "barrier" in summary:
        barrier = summary["barrier"]
        lines.append(f"path barrier (max over t in [0, 1] minus the larger end): train loss "
                     f"{barrier['train_loss']:.4g}, test loss {barrier['test_loss']:.4g}, "
                     f"test error {barrier['test_error']:.4g}")
    for d in summary["directions"]:
        if d.get("eigenvalue") is not None:
            lines.append(f"{d['label']}: eigenvalue {d['eigenvalue']:.6g}")
    lines.extend(f"warning: {w}" for w in summary.get("warnings") or [])
    if summary.get("replaced"):
        changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in summary["replaced"].items())
        lines.append(f"replaced the earlier result in {out_dir} ({changed})")
    shape = " x ".join(map(str, summary["grid"]["shape"]))
    lines.append(f"wrote {out_dir}/slice.{{npz,json}}: {summary['kind']} {shape} grid, "
                 f"{summary['points_per_s']:.1f} points/s, {format_seconds(summary['wall_s'])}")
    return lines
