"""How numbers, times and names read on the report page (Jinja filters)."""

from __future__ import annotations

import math

from landscape.report.collect import finite_float

__all__ = ["MISSING", "num", "pct", "signed", "duration", "short_name"]

MISSING = "–"


def num(value, digits: int = 4) -> str:
    """Significant-digit formatting for tables; '–' for missing values."""
    if value is None:
        return MISSING
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return MISSING if math.isnan(value) else str(value)
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def pct(value, digits: int = 2) -> str:
    value = finite_float(value)
    return MISSING if value is None else f"{100 * value:.{digits}f}%"


def signed(value, digits: int = 2) -> str:
    """``+0.42`` style for correlations; '–' when undefined."""
    value = finite_float(value)
    return MISSING if value is None else f"{value:+.{digits}f}"


def duration(seconds) -> str:
    """A wall time as a person says it: "0.4 s", "42 s", "3 min 5 s", "1 h 10 min", "2 d 3 h"."""
    seconds = finite_float(seconds)
    if seconds is None or seconds < 0:
        return MISSING
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    minutes = round(seconds / 60)
    if minutes < 24 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    hours = round(seconds / 3600)
    days, rest = divmod(hours, 24)
    return f"{days} d {rest} h" if rest else f"{days} d"


def short_name(name: str, width: int = 30) -> str:
    """``name`` cut in the middle to ``width`` characters (the page gives the full name on hover)."""
    name = str(name)
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]
