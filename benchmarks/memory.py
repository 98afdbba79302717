"""Resident-memory readings for the benchmarks (Linux /proc; None elsewhere)."""

from __future__ import annotations

from pathlib import Path


def status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (``"VmRSS"``, ``"VmHWM"``: the peak), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's peak resident set to its current one (writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
