"""Fully connected classifiers from Chaudhari et al. 2017: small-mnistfc and mnistfc.

Both flatten whatever image they are given, so they accept any input shape (MNIST's
1x28x28, the embedded 8x8 digits, a flat feature vector). Flattening starts at the
first dimension of ``input_shape`` counted from the end, so the same module also runs
on a single unbatched sample (handy under ``torch.func.vmap``).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from landscape.models._validate import (
    bool_option,
    int_option,
    probability_option,
)


class SmallMnistFC(nn.Module):
    """small-mnistfc: flatten -> Linear(d, hidden) -> ReLU -> Linear(hidden, classes).

    Paper Sec. 5.1 (ii), the network whose exact Hessian spectrum is Fig. 3(a). The paper's
    text says "one layer of 32 hidden units" but also "50,890 parameters"; on 1x28x28 inputs
    784*32 + 32 + 32*10 + 10 = 25,450 while 784*64 + 64 + 64*10 + 10 = 50,890, so the
    parameter count (the quantity that fixes the Hessian's size) implies 64 hidden units,
    and ``hidden`` defaults to 64. Pass ``hidden=32`` for the network the text describes.

    Options: ``hidden`` (int, default 64).
    """

    name = "small-mnistfc"
    task = "classification"
    paper_section = "Sec. 5.1 (ii)"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, hidden: int = 64):
        super().__init__()
        hidden = int_option(self.name, "hidden", hidden)
        self.input_shape = tuple(input_shape)
        self.hparams = {"hidden": hidden}
        features = math.prod(self.input_shape)
        self.fc1 = nn.Linear(features, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=-len(self.input_shape))
        return self.fc2(self.relu(self.fc1(x)))


class MnistFC(nn.Module):
    """mnistfc: Dropout(0.2) -> [Linear, BatchNorm1d, ReLU, Dropout(p)] x 2 -> Linear.

    Paper Sec. 5.2: "a fully-connected network with two hidden layers of 1024 units each"
    with dropout after each layer. The layout follows the authors' PyTorch reference
    (ucla-vision/entropy-sgd, ``python/models.py``, class ``mnistfc``): dropout 0.2 on the
    input, then two blocks Linear -> BatchNorm1d -> ReLU -> Dropout(p) with p = 0.5, then a
    linear read-out. On 1x28x28 this has 1,867,786 trainable parameters.

    The authors' Lua version (``models.lua``, used for the paper's runs) has neither the
    BatchNorm layers nor the input dropout; ``batch_norm=False, input_dropout=0.0``
    reproduces it (1,863,690 parameters on 1x28x28).

    Options: ``hidden`` (1024), ``dropout`` (0.5), ``input_dropout`` (0.2),
    ``batch_norm`` (True).
    """

    name = "mnistfc"
    task = "classification"
    paper_section = "Sec. 5.2"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        hidden: int = 1024,
        dropout: float = 0.5,
        input_dropout: float = 0.2,
        batch_norm: bool = True,
    ):
        super().__init__()
        hidden = int_option(self.name, "hidden", hidden)
        dropout = probability_option(self.name, "dropout", dropout)
        input_dropout = probability_option(self.name, "input_dropout", input_dropout)
        batch_norm = bool_option(self.name, "batch_norm", batch_norm)
        self.input_shape = tuple(input_shape)
        self.hparams = {
            "hidden": hidden,
            "dropout": dropout,
            "input_dropout": input_dropout,
            "batch_norm": batch_norm,
        }
        features = math.prod(self.input_shape)
        self.input_drop = nn.Dropout(input_dropout)
        self.block1 = _dense_block(features, hidden, dropout, batch_norm)
        self.block2 = _dense_block(hidden, hidden, dropout, batch_norm)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=-len(self.input_shape))
        x = self.block2(self.block1(self.input_drop(x)))
        return self.classifier(x)


def _dense_block(fan_in: int, fan_out: int, dropout: float, batch_norm: bool) -> nn.Sequential:
    """Linear -> (BatchNorm1d) -> ReLU -> Dropout, with named children for readable names."""
    layers: dict[str, nn.Module] = {"linear": nn.Linear(fan_in, fan_out)}
    if batch_norm:
        layers["bn"] = nn.BatchNorm1d(fan_out)
    layers["relu"] = nn.ReLU()
    layers["drop"] = nn.Dropout(dropout)
    return nn.Sequential(OrderedDict(layers))
