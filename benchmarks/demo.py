"""Case demo: the README's main job, timed step by step.

``make demo`` runs ``landscape reproduce all --scale quick``; its promise is at most 5 min
wall and 8 min CPU on 2 quiet cores. This case runs the same command in a fresh folder (a
subprocess, so the CLI's thread sizing applies as for a user), then reads the per-step
wall times that ``reproduce`` records in ``runs/.../reproduce.json`` and groups them by
kind of step, so a regression in one stage shows by name. CPU time is the child's
user + system time. The whole job is one repeat: it is the measurement a user makes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from landscape.platform.threads import busy_cores

WALL_TARGET_S = 300.0
CPU_TARGET_S = 480.0


def _kind(command: str) -> str:
    """A step's group: `train <optimizer>`, `spectrum <method>`, `flatness <measure>`, `slice <kind>`, or fig2."""
    words = command.split()
    if command.startswith("landscape train"):
        return "train " + words[words.index("--optimizer") + 1]
    if command.startswith("landscape spectrum"):
        return "spectrum " + words[words.index("--method") + 1]
    if command.startswith("landscape flatness"):
        return "flatness " + words[words.index("--measure") + 1]
    if command.startswith("landscape slice"):
        return "slice path" if "--to" in words else "slice " + words[words.index("--directions") + 1]
    return "fig2"


def run(quick: bool = False) -> dict:
    before_busy = busy_cores()
    with tempfile.TemporaryDirectory(prefix="landscape-demo-") as folder:
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        command = str(Path(sys.executable).with_name("landscape"))  # the console script a user runs
        done = subprocess.run([command, "reproduce", "all", "--scale", "quick",
                               "--out", "reports/quick", "--quiet"], cwd=folder, capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - start
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"the demo failed: {done.stderr[-2000:]}")
        manifest = json.loads((Path(folder) / "runs" / "quick" / "reproduce.json").read_text())
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    groups: dict[str, dict] = defaultdict(lambda: {"steps": 0, "wall_s": 0.0})
    for timing in manifest["timings"]:
        group = groups[_kind(timing["step"])]
        group["steps"] += 1
        group["wall_s"] += timing["wall_s"]
    return {"wall_s": wall, "cpu_s": cpu, "steps_wall_s": manifest["wall_s"], "busy_cores_at_start": before_busy,
            "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]["wall_s"])),
            "targets": {"wall_s": WALL_TARGET_S, "cpu_s": CPU_TARGET_S}}


def table(result: dict) -> str:
    lines = [f"Whole job: **{result['wall_s']:.0f} s wall** (target <= {WALL_TARGET_S:.0f}), "
             f"**{result['cpu_s']:.0f} s CPU** (target <= {CPU_TARGET_S:.0f}); "
             f"{result['busy_cores_at_start']:.1f} cores busy with other work at the start.", "",
             "| step kind | steps | wall (s) | share |", "|---|---:|---:|---:|"]
    for kind, group in result["groups"].items():
        lines.append(f"| {kind} | {group['steps']} | {group['wall_s']:.1f} | "
                     f"{group['wall_s'] / result['steps_wall_s']:.0%} |")
    return "\n".join(lines)
