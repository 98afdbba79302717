"""One style for every figure, and the way figures leave the process.

Figures are built on :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no global figure registry, no interactive backend, nothing to close, so
building a report in a notebook or a worker thread leaves no state behind. Draw
functions in this package take an ``Axes`` and return it (DESIGN.md sec. 5); the caller
makes the figure with :func:`new_figure` and turns it into bytes with :func:`svg_bytes`
or writes it with :func:`save_figure`.

Text is stored as paths in SVG output (``svg.fonttype = "path"``) so a figure looks the
same on a machine without the fonts it was drawn with: a report must be one
self-contained file.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import matplotlib.colors
import seaborn as sns
from matplotlib.figure import Figure

__all__ = ["RC", "OKABE_ITO", "OPTIMIZER_COLORS", "OPTIMIZER_MARKERS", "LINESTYLES", "color_for", "marker_for",
           "line_styles", "new_figure", "style", "styled",
           "svg_bytes", "png_bytes", "save_figure"]

#: matplotlib settings on top of seaborn's "ticks" theme, "paper" context.
RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "landscape",  # stable element ids: the same figure gives the same bytes
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
}

#: Okabe & Ito's colour-blind-safe palette (yellow left out: it does not read on white).
OKABE_ITO = {
    "blue": "#0072B2", "vermillion": "#D55E00", "bluish green": "#009E73", "reddish purple": "#CC79A7",
    "orange": "#E69F00", "black": "#000000", "sky blue": "#56B4E9",
}
_PALETTE = [matplotlib.colors.to_rgb(c) for c in OKABE_ITO.values()]
#: One colour per optimizer, the same in every figure of a report; an entropic optimizer and its
#: baseline never share a hue, and SAM (black) stands apart from Entropy-SGD (vermillion).
OPTIMIZER_COLORS = {
    "sgd": matplotlib.colors.to_rgb(OKABE_ITO["blue"]),
    "entropy-sgd": matplotlib.colors.to_rgb(OKABE_ITO["vermillion"]),
    "adam": matplotlib.colors.to_rgb(OKABE_ITO["bluish green"]),
    "entropy-adam": matplotlib.colors.to_rgb(OKABE_ITO["reddish purple"]),
    "replicated-sgd": matplotlib.colors.to_rgb(OKABE_ITO["orange"]),
    "sam": matplotlib.colors.to_rgb(OKABE_ITO["black"]),
}
#: One marker per optimizer, so curves stay apart in grey print and for every kind of colour vision.
OPTIMIZER_MARKERS = {"sgd": "o", "entropy-sgd": "s", "adam": "^", "entropy-adam": "D", "replicated-sgd": "v",
                     "sam": "X"}
_MARKERS = ("o", "s", "^", "D", "v", "X", "P", "*")


def _optimizer(label: str) -> str | None:
    for name in sorted(OPTIMIZER_COLORS, key=len, reverse=True):
        if str(label).lower().startswith(name):
            return name
    return None


def color_for(label: str, index: int = 0):
    """The optimizer's colour when ``label`` starts with an optimizer name, else the ``index``-th."""
    name = _optimizer(label)
    return OPTIMIZER_COLORS[name] if name else _PALETTE[index % len(_PALETTE)]


def marker_for(label: str, index: int = 0) -> str:
    """The optimizer's marker when ``label`` starts with an optimizer name, else the ``index``-th."""
    name = _optimizer(label)
    return OPTIMIZER_MARKERS[name] if name else _MARKERS[index % len(_MARKERS)]


#: Runs that share a colour (several seeds of one optimizer) are told apart by line style.
LINESTYLES = ("-", "--", ":", "-.")


def line_styles(labels) -> list[tuple]:
    """``(colour, linestyle)`` per label: optimizer colour, then a new line style per repeat of it."""
    seen: dict = {}
    out = []
    for i, label in enumerate(labels):
        color = color_for(label, i)
        key = tuple(color)
        out.append((color, LINESTYLES[seen.get(key, 0) % len(LINESTYLES)]))
        seen[key] = seen.get(key, 0) + 1
    return out


@contextmanager
def style() -> Iterator[None]:
    """The house style as a context: seaborn ticks/paper theme plus :data:`RC`."""
    with matplotlib.rc_context(), sns.axes_style("ticks"), sns.plotting_context("paper"):
        matplotlib.rcParams.update(RC)
        yield


def styled(draw: Callable) -> Callable:
    """Run a draw function inside :func:`style`: artists take their sizes from rcParams when created."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with style():
            return draw(*args, **kwargs)

    return wrapper


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 5.0, height: float = 3.4, **subplot_kw):
    """``(figure, axes)`` in the house style; ``axes`` is a single Axes for a 1x1 grid."""
    with style():
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=True, **subplot_kw)
    return fig, axes


_XML_HEADER = re.compile(rb"<\?xml[^>]*>\s*|<!DOCTYPE[^>]*>\s*", re.S)
_METADATA = re.compile(rb"<metadata>.*?</metadata>\s*", re.S)


def svg_bytes(fig: Figure) -> bytes:
    """The figure as a standalone SVG document without date, creator or licence metadata."""
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    data = _METADATA.sub(b"", _XML_HEADER.sub(b"", buf.getvalue()))
    return data


def png_bytes(fig: Figure, dpi: int = 150) -> bytes:
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure atomically; the format follows the suffix (.svg, .png, .pdf)."""
    from landscape.io import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with style(), atomic_open(path, "wb") as handle:
        fig.savefig(handle, format=path.suffix.lstrip(".") or "png")
    return path
