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

Nothing is written outside ``OUT/runs``: an archived run's folder name is the last part of
its RESOLVED path (``..`` is the folder it names), made unique with a suffix, never empty
and never hidden. An existing ``OUT/runs`` is replaced only when it holds nothing but
the files an archive holds (a run folder with a checkpoint, say, does not qualify); any
other file or folder there is refused, never overwritten.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from landscape.errors import LandscapeError
from landscape.io import remove_stale_temporaries, temporary_prefix

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
    """Folder names for the archive: each resolved path's own name, suffixed where two runs share it."""
    names: list[str] = []
    for path in paths:
        base = path.resolve().name.lstrip(".") or "run"  # "/" has no name; a hidden name is skipped by collect
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _is_archive(folder: Path) -> bool:
    """Whether ``folder`` holds only what an archive holds: ``RUN/<a file a report reads>``."""
    patterns = _RUN_FILES + _FIG2_FILES
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = Path(root, name).relative_to(folder)
            if len(rel.parts) < 2 or not any(fnmatch.fnmatchcase("/".join(rel.parts[1:]), p) for p in patterns):
                return False
    return True


def _check_target(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise LandscapeError(f"'{target}' exists and is not a report archive folder: --archive writes OUT/"
                             f"{ARCHIVE_DIR}, so move that file or pass another --out.")
    if target.is_dir() and not _is_archive(target):
        raise LandscapeError(f"'{target}' holds files that are not a report archive (--archive replaces OUT/"
                             f"{ARCHIVE_DIR} as a whole): move that folder or pass another --out.")


def _copy_into(staging: Path, name: str, source: Path) -> None:
    root = staging.resolve()
    for rel in archived_files(source):
        dest = staging / name / rel
        if not dest.resolve().is_relative_to(root):  # names come from resolved paths: a guard, not a path
            raise LandscapeError(f"Refused to archive {source / rel}: its copy would land outside {staging.parent}.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, dest)


def archive_runs(paths: Iterable[Path], out: str | Path) -> Path:
    """Copy the report inputs of every run/Fig. 2 folder in ``paths`` to ``out/runs``; returns that folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / ARCHIVE_DIR
    _check_target(target)
    remove_stale_temporaries(out, directories=True)  # staging folders of killed earlier calls
    sources = [Path(p) for p in paths]
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(ARCHIVE_DIR), suffix=".tmp", dir=out))
    try:
        for source, name in zip(sources, _unique_names(sources)):
            _copy_into(staging, name, source)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=temporary_prefix(f"{ARCHIVE_DIR}-old"), suffix=".tmp", dir=out))
            target.rename(old / ARCHIVE_DIR)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
