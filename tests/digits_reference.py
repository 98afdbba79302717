"""Shared by the stage tests: a tiny trained digits run and its loss as a function of the flat weights (float64)."""

from __future__ import annotations

import os

import torch
from torch.func import functional_call

from landscape.checkpoint import load_checkpoint
from landscape.data import load_dataset
from landscape.losses import cross_entropy
from landscape.train import TrainConfig, train

# Where the stage tests run the command under test: the CPU unless LANDSCAPE_TEST_DEVICE
# says otherwise (scripts/device_check.sh sets "cuda" on a GPU machine). References are
# always computed on the CPU in float64, so the same assertions check the GPU path.
DEVICE = os.environ.get("LANDSCAPE_TEST_DEVICE", "cpu")


def train_tiny_digits_run(out, *, epochs: int):
    """small-mnistfc with 4 hidden units (310 parameters), Adam on digits, seed 0."""
    torch.manual_seed(0)
    train(TrainConfig(model="small-mnistfc", dataset="digits", optimizer="adam", epochs=epochs, batch_size=64,
                      out=str(out), device="cpu", model_kwargs={"hidden": 4}), progress=False)
    return out


def flat_loss(run_dir, n: int):
    """``(loss, w0)``: ``loss(v, index=slice(None))`` is the mean float64 loss over the chosen
    samples among the first ``n`` of the training split, at flat weights ``v``."""
    model, _ = load_checkpoint(run_dir / "checkpoint.pt")
    model = model.double()
    data = load_dataset("digits", "train")
    x, y = data.inputs[:n].double(), data.targets[:n]
    named = dict(model.named_parameters())
    names = list(named)
    sizes = [named[k].numel() for k in names]
    shapes = [named[k].shape for k in names]
    w0 = torch.cat([named[k].detach().reshape(-1) for k in names])

    def loss(v, index=slice(None)):
        params = {k: t.view(s) for k, t, s in zip(names, torch.split(v, sizes), shapes)}
        return cross_entropy(functional_call(model, params, (x[index],)), y[index])

    return loss, w0
