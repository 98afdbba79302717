"""The platform boundary: only landscape.platform touches ctypes, the allocator or the environment."""

import ast
from pathlib import Path

import pytest

import landscape
from landscape import platform

PACKAGE = Path(landscape.__file__).parent


def _imports_and_env_reads(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            found.add("os.environ")
    return found


@pytest.mark.parametrize("layer", ["curvature", "spectra", "optim", "flatness", "models"])
def test_library_layers_reach_the_machine_only_through_the_platform_module(layer):
    for path in sorted((PACKAGE / layer).glob("*.py")):
        touched = _imports_and_env_reads(path) & {"ctypes", "os.environ"}
        assert not touched, f"{path.relative_to(PACKAGE)} uses {touched}: go through landscape.platform"


@pytest.fixture
def restore_settings():
    before = platform.current()
    yield
    platform.configure(heap=before.heap, mkl=before.mkl)


def test_library_default_leaves_the_allocator_alone_and_the_cli_turns_it_on(restore_settings):
    from landscape.cli.app import configure_platform
    from landscape.platform.heap import bound_heap, trim_heap

    platform.configure(heap=False)
    assert not bound_heap() and not trim_heap()  # no-ops: nothing changes the process behind a user's back
    line = configure_platform({})
    assert platform.current().heap and "glibc heap tuning on" in line and "CPU thread" in line
    line = configure_platform({"LANDSCAPE_HEAP": "default", "LANDSCAPE_NO_MKL": "1"})
    assert not platform.current().heap and not platform.current().mkl
    assert "glibc heap tuning off" in line and "MKL off" in line


def test_mkl_switched_off_is_not_loaded_and_auto_falls_back(restore_settings):
    import torch

    from landscape.optim.rng import generator_kind, make_generator
    from landscape.platform import mkl
    from landscape.spectra.exact import exact_spectrum

    platform.configure(mkl=False)
    assert mkl.load() is None and platform.describe()["mkl_loaded"] is False
    assert generator_kind(make_generator("cpu", 0, "auto")) == "torch"
    A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64)).numpy()
    assert exact_spectrum(A, backend="auto").extra["backend"] == "scipy"
