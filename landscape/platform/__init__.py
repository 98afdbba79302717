"""The platform boundary: everything that tunes or reads the machine, switched in one place.

Library code (curvature, spectra, optimizers) never imports ctypes, reads an environment
variable or changes the process: it calls the small services here, which do nothing that
was not switched on. The command-line entry point switches them on, once, and says so
(``landscape.cli.app.main``); a Python user calls :func:`configure`.

==============  ===========================================  ============================
service         what                                         default for library users
==============  ===========================================  ============================
``threads``     torch's CPU threads sized to the idle cores  untouched (the CLI sizes them)
``heap``        glibc: a fixed mmap threshold and trims      off (the CLI turns it on)
                during dense builds, so freed workspace
                goes back to the kernel
``mkl``         Intel MKL, where installed: ``?syevd`` for   on where MKL is installed
                exact spectra, Philox4x32-10 for the SGLD
                noise, ``dsyrk`` for GGN blocks
==============  ===========================================  ============================

The settings are process-wide because what they control (the allocator, a loaded
library) is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["Settings", "configure", "current", "describe"]


@dataclass(frozen=True)
class Settings:
    heap: bool = False  # glibc heap tuning during dense builds (landscape.platform.heap)
    mkl: bool = True  # use Intel MKL where it is installed (landscape.platform.mkl)


_settings = Settings()


def current() -> Settings:
    return _settings


def configure(*, heap: bool | None = None, mkl: bool | None = None) -> Settings:
    """Switch platform services on or off for this process; returns the new settings."""
    global _settings
    changes = {k: v for k, v in {"heap": heap, "mkl": mkl}.items() if v is not None}
    _settings = replace(_settings, **changes)
    return _settings


def describe() -> dict:
    """What is in force, for a result's JSON and the console line: settings, MKL found, threads."""
    import torch

    from landscape.platform import mkl

    return {**asdict(_settings), "mkl_loaded": mkl.load() is not None, "torch_threads": torch.get_num_threads()}
