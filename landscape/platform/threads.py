"""How many CPU threads this process should use: the cores it is given, less the ones others keep busy.

torch starts one thread per core. On a machine that other work already loads, those threads
wait for each other (OpenMP spins while a sibling is descheduled), so a run takes several
times its quiet wall time and burns CPU time doing nothing. The command-line entry point
sizes torch's pool once at start-up from the cores the process may run on (affinity and a
cgroup CPU quota) minus the cores other work keeps busy right now (a quarter-second sample
of /proc/stat: the load average lags by a minute, and right after `make demo`'s install it
would halve a quiet machine); library code never changes it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuBudget", "cpu_budget", "choose_threads", "configure_threads"]


@dataclass(frozen=True)
class CpuBudget:
    cpus: int  # cores this process may run on
    load: float  # cores busy with other work when sampled
    threads: int  # what torch is given

    def describe(self) -> str:
        return (f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} ({self.cpus} cores, "
                f"{self.load:.1f} busy with other work)")


def _quota_cpus(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """The cgroup v2 CPU quota in cores, or None where there is none."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def available_cpus() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _quota_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def choose_threads(cpus: int, load: float) -> int:
    """The cores left idle by the load, rounded, at least one."""
    return max(1, min(cpus, round(cpus - load)))


def _cpu_times(path: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None off Linux."""
    try:
        fields = [int(v) for v in path.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(interval: float = 0.25) -> float:
    """Cores kept busy by other processes over ``interval`` seconds (this one sleeps meanwhile)."""
    first = _cpu_times()
    if first is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    time.sleep(interval)
    second = _cpu_times()
    busy, total = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * busy / total if total > 0 else 0.0


def cpu_budget() -> CpuBudget:
    cpus = available_cpus()
    load = busy_cores()
    return CpuBudget(cpus, load, choose_threads(cpus, load))


def configure_threads() -> CpuBudget:
    """Size torch's intra-op pool to :func:`cpu_budget` (call once, before heavy work)."""
    import torch

    budget = cpu_budget()
    torch.set_num_threads(budget.threads)
    return budget
