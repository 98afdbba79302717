"""Errors a user can cause.

Every exception raised for bad input (a missing dataset file, a checkpoint that is not
ours, an input shape a model does not accept, a NaN loss) is a :class:`LandscapeError`
whose message is one sentence that says what to do. The CLI prints that sentence and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class LandscapeError(Exception):
    """A problem the user can fix; ``str(err)`` is the one-sentence explanation."""


class DatasetNotFoundError(LandscapeError, FileNotFoundError):
    """A dataset's files are not where we looked (and could not be downloaded)."""


class ChecksumError(LandscapeError):
    """A downloaded or user-supplied file does not have the expected SHA-256."""


class CheckpointError(LandscapeError):
    """A file is not a landscape checkpoint, is corrupt, or is unsafe to load."""


class ShapeError(LandscapeError, ValueError):
    """An input shape a model (or operator) does not accept."""


class NonFiniteLossError(LandscapeError, FloatingPointError):
    """Training produced a NaN or infinite loss."""
