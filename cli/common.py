"""What the `landscape` commands share: one vocabulary of options, their checks, and how errors end.

Errors a user can cause (:class:`landscape.errors.LandscapeError`) are printed as one
sentence on stderr with exit status 2, never as a traceback (:func:`run_guarded`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from landscape.errors import LandscapeError

T = TypeVar("T")
err_console = Console(stderr=True)
console = Console()


class Precision(str, enum.Enum):
    float32 = "float32"
    float64 = "float64"


class Mode(str, enum.Enum):
    eval = "eval"
    train = "train"


# What to tell the user on Ctrl-C; a stage sets it once it knows (e.g. after the first checkpoint).
interrupt_hint: list[Callable[[], str]] = [lambda: "nothing was written."]


def run_guarded(fn: Callable[[], T]) -> T:
    """Run a stage; a user error becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except LandscapeError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted: {interrupt_hint[0]()}", highlight=False)
        raise typer.Exit(130) from None


def format_seconds(seconds: float) -> str:
    """A duration as a person reads it: 4.2 s, 3 min 05 s, 1 h 10 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def stderr_log(quiet: bool) -> Callable[[str], None]:
    """Progress lines for a stage: printed verbatim on stderr (no rich markup), or dropped with --quiet."""
    if quiet:
        return lambda message: None
    return lambda message: err_console.print(message, highlight=False, soft_wrap=True, markup=False)


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_args(items: list[str]) -> dict:
    """``["hidden=32", "dropout=0.1"]`` -> ``{"hidden": 32, "dropout": 0.1}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise LandscapeError(f"--model-arg expects KEY=VALUE, got '{item}'.")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return out


def parse_int_list(text: str | None, option: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise LandscapeError(f"{option} expects comma-separated integers like 30,60,90, got '{text}'.") from None


def _bounded(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Callable:
    """A typer callback refusing NaN, infinities and values outside [low, high] (open ends as asked)."""
    def describe() -> str:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        return "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(value):
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None:
                continue
            bad = (not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low))
                   or (high is not None and (v >= high if high_open else v > high)))
            if bad:
                raise typer.BadParameter(f"must be {describe()}, got {v:g}.")
        return value

    return check


POSITIVE = _bounded(0.0, low_open=True)
NON_NEGATIVE = _bounded(0.0)
FRACTION = _bounded(0.0, 1.0, low_open=True, high_open=True)


def refuse_unused(ctx: typer.Context, specific: dict[str, str], used: set[str], what: str) -> None:
    """One sentence for an option given on the command line that ``what`` does not use.

    ``specific`` maps each context-dependent parameter name to its flag; ``used`` names the
    ones that apply here.
    """
    for name, flag in specific.items():
        if name not in used and _given_on_command_line(ctx, name):
            useful = sorted(specific[n] for n in used if n in specific)
            tail = f"; its own options are {', '.join(useful)}" if useful else ""
            raise LandscapeError(f"{flag} is not used by {what}{tail}.")


def _given_on_command_line(ctx: typer.Context, name: str) -> bool:
    # ParameterSource lives in click or in typer's vendored copy: compare by name
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


# Options every curvature / flatness command shares, with one meaning and one default everywhere.
def samples_option(default: int = 1000):
    return typer.Option(default, "--samples", "-n", min=1, metavar="N",
                        help="Data samples N: the loss is their mean (first N of --split in order, or a random "
                             "subset with --subset-seed).")


def subset_seed_option():
    return typer.Option(None, "--subset-seed", metavar="S",
                        help="Draw the N samples at random with this seed [default: the first N in order].")


def seed_option():
    return typer.Option(
        0, "--seed", metavar="S", help="Seed of the random draws: probes, start vectors, noise, chains."
    )


def chunk_option():
    return typer.Option(256, "--chunk-size", min=1, metavar="B",
                        help="Samples per forward pass: memory and speed only, the result is the mean over all N.")


def draws_option(default: int, what: str):
    return typer.Option(default, "--draws", min=1, metavar="M", help=f"Monte-Carlo draws: {what}.")


def force_option():
    return typer.Option(False, "--force", help="Replace a result in the output folder that was computed with "
                                               "other settings (without it such a rerun is refused).")
