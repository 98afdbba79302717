"""`landscape report` and `landscape reproduce`: run directories to one HTML page, and whole results."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from landscape.cli.common import (
    _bounded,
    console,
    interrupt_hint,
    run_guarded,
    stderr_log,
)


def report(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN...", help="Run directories (or folders holding them, or Fig. 2 folders).", show_default=False
    ),
    out: Path = typer.Option(Path("reports/report"), "--out", metavar="DIR", help="Folder for index.html."),
    title: str | None = typer.Option(
        None, "--title", metavar="TEXT", help="Page title [default: what the page shows, from its runs]."
    ),
    max_train_error: float = typer.Option(
        0.5,
        "--max-train-error",
        callback=_bounded(0.0, 1.0),
        metavar="E",
        help="Correlation study: leave out models whose final training error is above this (they did not train).",
    ),
    archive: bool = typer.Option(
        False,
        "--archive",
        help="Also copy the small files the page is built from "
        "(configs, metrics, spectra, flatness; no checkpoints or matrices) to OUT/runs, so "
        "`landscape report OUT/runs --out OUT` can re-render it without the run directories.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """One self-contained HTML page (figures inlined, no external URL) from what the run directories hold."""
    from landscape.report import build_report

    def go():
        log = stderr_log(quiet)
        path = build_report([str(p) for p in run_dirs], out, title=title, log=log, max_train_error=max_train_error,
                            archive=archive)
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)

    run_guarded(go)


class Target(str, enum.Enum):
    fig1 = "fig1"
    fig2 = "fig2"
    fig3 = "fig3"
    table1 = "table1"
    correlation = "correlation"
    slices = "slices"
    all = "all"


class Scale(str, enum.Enum):
    quick = "quick"
    full = "full"


def reproduce(
    target: Target = typer.Argument(..., help="Which result: fig1, fig2, fig3, table1, correlation, slices or all."),
    scale: Scale = typer.Option(
        Scale.quick,
        "--scale",
        help="quick: minutes on 2 CPU cores on the embedded digits; "
        "full: the paper's settings as far as this machine allows.",
    ),
    out: Path | None = typer.Option(
        None, "--out", metavar="DIR", help="Folder for index.html [default: reports/SCALE]."
    ),
    runs: Path | None = typer.Option(
        None, "--runs", metavar="DIR", help="Where the runs go [default: runs/<name of --out>]."
    ),
    dataset: str | None = typer.Option(None, "--dataset", metavar="NAME", help="Override the scale's dataset."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR", help="Where dataset files live."),
    text: Path | None = typer.Option(
        None, "--text", metavar="FILE", help="UTF-8 text for char-lstm (full scale, Fig. 3b)."
    ),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the steps (done / to do) and stop."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Train -> spectrum -> flatness -> report for one of the paper's results; resumable, finished steps skipped."""
    from landscape.reproduce import ReproduceConfig
    from landscape.reproduce import reproduce as run_reproduce

    def go():
        config = ReproduceConfig(target=target.value, scale=scale.value, out=None if out is None else str(out),
                                 runs=None if runs is None else str(runs), dataset=dataset,
                                 data_dir=None if data_dir is None else str(data_dir), device=device,
                                 text=None if text is None else str(text))
        log = stderr_log(quiet)
        interrupt_hint[0] = lambda: "finished steps are kept; run the same command again to continue."
        path = run_reproduce(config, log=log, dry_run=dry_run, progress=not quiet)
        if path is not None:
            console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False, soft_wrap=True)

    run_guarded(go)
