"""A result folder keeps what it holds: a rerun with other settings is refused unless forced.

Every result JSON (``spectrum.json``, ``flatness-MEASURE.json``) records the settings that
produced it under ``"config"``. Before a stage replaces one, :func:`check_replaceable`
compares those with the new settings; the keys that change only speed, memory or paths
are passed as ``ignore``. A key the old result lacks (written by an older version) counts
as equal, so upgrading never blocks a rerun with the same settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from landscape.errors import LandscapeError

__all__ = ["check_replaceable", "differences"]


def differences(old: dict, new: dict, ignore: Iterable[str] = ()) -> dict[str, tuple]:
    """``{key: (old value, new value)}`` for the keys both hold with different values."""
    skipped = set(ignore)
    return {key: (old[key], new[key]) for key in new
            if key in old and key not in skipped and old[key] != new[key]}


def check_replaceable(json_path: Path, settings: dict, *, force: bool, ignore: Iterable[str] = ()) -> dict:
    """The settings that differ from the result at ``json_path`` (empty when none or no result).

    Raises :class:`LandscapeError` when some differ and ``force`` is false: replacing would
    silently destroy a result the user may still need.
    """
    try:
        held = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # nothing readable to keep: an absent or corrupt result is simply replaced
    old = held.get("config") if isinstance(held, dict) else None
    if not isinstance(old, dict):
        return {}
    # JSON turns tuples into lists: compare in the form the file holds
    changed = differences(old, json.loads(json.dumps(settings)), ignore)
    if changed and not force:
        shown = "; ".join(f"{key} {a!r} there, {b!r} now" for key, (a, b) in list(changed.items())[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise LandscapeError(f"{json_path} holds a result computed with other settings ({shown}{more}); pass "
                             "--out DIR to keep both, or --force to replace it.")
    return changed
