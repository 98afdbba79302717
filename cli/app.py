"""The `landscape` command: one thin command per pipeline stage.

Each command maps its typed options onto the stage's frozen config dataclass and calls
the library; nothing here computes anything. Errors a user can cause
(:class:`landscape.errors.LandscapeError`) are printed as one sentence on stderr with
exit status 2, never as a traceback.
"""

from __future__ import annotations

import sys

import typer

from landscape.cli.common import console, err_console
from landscape.cli.flatness import flatness
from landscape.cli.report import report, reproduce
from landscape.cli.slice import slice_command
from landscape.cli.spectrum import spectrum
from landscape.cli.train import ModelName, OptimizerName, train

__all__ = ["ModelName", "OptimizerName", "app", "configure_platform", "main"]

app = typer.Typer(
    help="landscape: geometry of neural-network loss landscapes. "
    "Stages: train -> spectrum -> flatness -> report; reproduce runs them all for one of the paper's results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain text: without this, rich reads "[default: 5]" as a markup tag and drops it
    rich_markup_mode=None,
    context_settings={"max_content_width": 80, "help_option_names": ["-h", "--help"]},
)

app.command(short_help="Train a network; writes a run directory (config, metrics, checkpoint).")(train)
app.command(short_help="Curvature spectrum of a checkpoint (exact, Lanczos, SLQ, trace, Fisher diagonal).")(spectrum)
app.command(short_help="Flatness of a checkpoint (local entropy, local energy, sharpness, PAC-Bayes, Fisher-Rao).")(
    flatness)
app.command(short_help="One self-contained HTML page from run directories.")(report)
app.command(short_help="Run one of the papers' results end to end (resumable).")(reproduce)
app.command("slice", short_help="Loss and error on a 1-D / 2-D grid of weights (random, Hessian, or path to a run).")(
    slice_command)


def _print_version(value: bool) -> None:
    if value:
        import landscape

        console.print(f"landscape {landscape.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """landscape: train with flatness-seeking optimizers, measure the minima they reach."""


def configure_platform(environ: dict) -> str:
    """Switch the platform services on for a command-line run; returns the line that says so.

    glibc heap tuning keeps a dense build's freed workspace from staying resident;
    ``LANDSCAPE_HEAP=default`` leaves the allocator alone. ``LANDSCAPE_NO_MKL=1`` keeps MKL
    unloaded (the exact solve then uses scipy, the SGLD noise torch's generator).
    """
    from landscape.platform import configure, describe
    from landscape.platform.threads import configure_threads

    configure(heap=environ.get("LANDSCAPE_HEAP", "").lower() != "default", mkl=not environ.get("LANDSCAPE_NO_MKL"))
    budget = configure_threads()
    state = describe()
    parts = [budget.describe(), "glibc heap tuning " + ("on" if state["heap"] else "off"),
             "MKL " + ("on" if state["mkl_loaded"] else "off")]
    return "platform: " + ", ".join(parts)


def main() -> None:
    """The console entry point: switches the platform services on, once and visibly, then runs the command."""
    import os

    # help and --version do no work: they skip the torch import and the quarter-second CPU sample
    args = set(sys.argv[1:])
    if len(sys.argv) > 2 and not {"-h", "--help", "--version"} & args:
        line = configure_platform(dict(os.environ))
        if sys.argv[1] in ("train", "spectrum", "flatness", "reproduce", "slice") and not (
                {"-q", "--quiet", "--dry-run"} & args):
            err_console.print(line, highlight=False, soft_wrap=True)
    app()
