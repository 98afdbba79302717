"""Progress on long work: a live bar on a terminal, timed plain lines anywhere else.

A dense build or a training run can take an hour; run under ``nohup`` or a batch scheduler,
a live bar writes nothing useful (rich draws nothing when stderr is not a terminal). There
:class:`LineProgress` prints one line per task every ``interval`` seconds and when a task
finishes, with the count, the elapsed time and an estimate of the time left.

:func:`make_progress` picks one. Both offer the subset of rich's ``Progress`` the toolkit
uses: ``add_task``, ``update``, ``remove_task`` and the context manager.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class LineProgress:
    """Plain-text progress: at most one line per task every ``interval`` seconds, plus one
    when a task reaches its total.

    The estimate of time left uses the rate since the task was added, counting only the
    units done in this process (a resumed build does not look faster than it is).
    """

    def __init__(self, unit: str = "", *, interval: float = 30.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.unit = unit
        self.interval = float(interval)
        self.stream = stream
        self.clock = clock
        self._tasks: dict[int, dict] = {}
        self._next_id = 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        task_id = self._next_id
        self._next_id += 1
        now = self.clock()
        self._tasks[task_id] = {"description": description, "total": total, "completed": completed,
                                "start_completed": completed, "start": now, "last": now, "fields": dict(fields),
                                "finished": False}
        return task_id

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, description: str | None = None, **fields) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if description is not None:
            task["description"] = description
        task["fields"].update(fields)
        now = self.clock()
        finished = task["total"] is not None and task["completed"] >= task["total"]
        if (finished and not task["finished"]) or now - task["last"] >= self.interval:
            task["last"] = now
            task["finished"] = finished
            self._write(self.line(task_id))

    def remove_task(self, task_id: int) -> None:
        self._tasks.pop(task_id, None)

    def line(self, task_id: int) -> str:
        """The text of one task's progress line."""
        task = self._tasks[task_id]
        done, total = task["completed"], task["total"]
        elapsed = self.clock() - task["start"]
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{task['description']}: {done:g}/{total:g}{unit} ({done / total:.0%})" if total
                 else f"{task['description']}: {done:g}{unit}", f"{_clock(elapsed)} elapsed"]
        rate_done = done - task["start_completed"]
        if total and 0 < rate_done and done < total:
            parts.append(f"about {_clock(elapsed / rate_done * (total - done))} left")
        status = task["fields"].get("status")
        if status:
            parts.append(str(status))
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=stream, flush=True)


def make_progress(enabled: bool, unit: str, *, status: bool = False, interval: float = 30.0):
    """A rich bar when stderr is a terminal, :class:`LineProgress` otherwise; a disabled bar
    (prints nothing) when ``enabled`` is false. ``status`` adds a free-text column fed by
    ``update(task, status=...)``."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(unit, interval=interval)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=False)


def announce(message: str, enabled: bool) -> None:
    """One timed line on stderr (for steps without a count, such as a LAPACK call)."""
    if enabled:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Throttled:
    """A log passing at most one message per ``interval`` seconds, the first only after
    ``interval``: a step that ends sooner prints nothing, a long one shows it is alive."""

    def __init__(self, log: Callable[[str], None], interval: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.interval, self.clock = log, interval, clock
        self.last = clock()

    def __call__(self, message: str) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.log(message)


class Ticks:
    """Progress of a stage's loops: one live display with a bar per loop when ``bar``
    (:func:`make_progress`), otherwise a line per update to ``log`` with the time left
    (which :class:`Throttled` can thin out)."""

    def __init__(self, bar: bool, log: Callable[[str], None]):
        self.bar, self.log = bar, log
        self._display = None

    def __enter__(self) -> Ticks:
        if self.bar:
            self._display = make_progress(True, "").__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._display is not None:
            self._display.__exit__(*exc)

    def loop(self, description: str) -> Callable[[int, int], None]:
        """An ``update(done, total)`` for one loop."""
        if self._display is not None:
            task = self._display.add_task(description, total=None)
            return lambda done, total: self._display.update(task, completed=done, total=total)
        start = time.monotonic()

        def line(done: int, total: int) -> None:
            elapsed = time.monotonic() - start
            self.log(f"  {description}: {done}/{total}, {elapsed:.0f} s elapsed, about "
                     f"{elapsed / max(done, 1) * (total - done):.0f} s to go")

        return line
