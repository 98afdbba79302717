"""Shared test set-up: deterministic, single-threaded torch so results do not depend on the runner."""

import os

import pytest
import torch

os.environ.setdefault("LANDSCAPE_NO_DOWNLOAD", "1")  # tests never touch the network


@pytest.fixture(autouse=True)
def _torch_defaults():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    yield
