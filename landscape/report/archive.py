"""Keep the small files a report was built from beside it (``landscape report --archive``).

A published report is only as durable as the run directories it read: those hold
checkpoints and, for exact spectra, matrices of tens of GB, and are not committed. The
archive copies what :mod:`landscape.report.collect` reads, and nothing else, into
``OUT/runs/<run>/``: ``config.json``, ``metrics.jsonl``, ``spectrum-*/spectrum.{json,npz}``,
``flatness-*.json`` and Fig. 2's ``fig2.{json,npz}`` (a few hundred KB per exact spectrum).
``landscape report OUT/runs ... --out OUT`` then re-renders the page, with or without new
runs beside the archived ones, on a machine that never held the originals.

The new archive is assembled in a temporary folder and swapped in at the end, so an
interrupted call leaves the previous archive intact, and re-rendering from the archive
itself (reading ``OUT/runs`` while writing it) is safe.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterable

__all__ = ["ARCHIVE_DIR", "archive_runs", "archived_files"]

ARCHIVE_DIR = "runs"
_RUN_FILES = ("config.json", "metrics.jsonl", "flatness-*.json", "spectrum-*/spectrum.json", "spectrum-*/spectrum.npz")
_FIG2_FILES = ("fig2.json", "fig2.npz")


def archived_files(path: Path) -> list[Path]:
    """The files under ``path`` (a run or a Fig. 2 folder) that a report reads, relative to it."""
    patterns = _RUN_FILES if (path / "config.json").exists() else _FIG2_FILES
    files: list[Path] = []
    for pattern in patterns:
        files.extend(sorted(p.relative_to(path) for p in path.glob(pattern) if p.is_file()))
    return files


def _unique_names(paths: list[Path]) -> list[str]:
    """Folder names for the archive: each path's own name, suffixed where two runs share it."""
    names: list[str] = []
    for path in paths:
        name, k = path.name, 2
        while name in names:
            name, k = f"{path.name}-{k}", k + 1
        names.append(name)
    return names


def archive_runs(paths: Iterable[Path], out: str | Path) -> Path:
    """Copy the report inputs of every run/Fig. 2 folder in ``paths`` to ``out/runs``; returns that folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / ARCHIVE_DIR
    sources = [Path(p) for p in paths]
    staging = Path(tempfile.mkdtemp(prefix=f".{ARCHIVE_DIR}.", suffix=".tmp", dir=out))
    try:
        for source, name in zip(sources, _unique_names(sources)):
            for rel in archived_files(source):
                dest = staging / name / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, dest)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{ARCHIVE_DIR}.old.", dir=out))
            target.rename(old / ARCHIVE_DIR)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
