"""Convolutional classifiers from Chaudhari et al. 2017: small-lenet, lenet, all-cnn-bn.

Inputs are float images ``(B, C, H, W)``; the channel count C is read from
``input_shape`` so the same networks run on grey-scale and colour data. Layers carry
names (``conv1``, ``bn1``, ``block4.conv``) so per-layer curvature results are readable.
"""

from __future__ import annotations

import torch
from torch import nn

from landscape.models._validate import (
    choice_option,
    int_option,
    probability_option,
    reject_shape,
)


def _require_28x28(model: str, input_shape: tuple[int, ...]) -> int:
    """Both LeNets reduce 28x28 to a fixed grid before their first linear layer."""
    if len(input_shape) != 3 or input_shape[1:] != (28, 28):
        raise reject_shape(
            model,
            input_shape,
            "(C, 28, 28), that is 28x28 images with any number of channels C,",
            "use a 28x28 dataset such as mnist, or a model that flattens any image "
            "size such as small-mnistfc",
        )
    return input_shape[0]


class SmallLeNet(nn.Module):
    """small-lenet: LeNet with 10 and 20 channels and 128 hidden units, no BN, no dropout.

    Paper Sec. 5.1 (i), the network of Fig. 1 whose exact Hessian the paper computes
    (47,658 parameters on 1x28x28). The layout follows the authors' autograd script
    (ucla-vision/entropy-sgd, ``python/hessian.py``, ``init_params``/``predict``):
    conv 5x5 (C->10) -> ReLU -> maxpool 2 -> conv 5x5 (10->20) -> ReLU -> maxpool 2 ->
    flatten 320 -> Linear(320, 128) -> ReLU -> Linear(128, classes). Only (C, 28, 28)
    inputs reach the 20x4x4 = 320 features the first linear layer expects.

    Options: none.
    """

    name = "small-lenet"
    task = "classification"
    paper_section = "Sec. 5.1 (i)"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels = _require_28x28(self.name, input_shape)
        self.input_shape = tuple(input_shape)
        self.hparams: dict[str, object] = {}
        self.conv1 = nn.Conv2d(channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(20 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))  # 28 -> 24 -> 12
        x = self.pool(self.relu(self.conv2(x)))  # 12 -> 8 -> 4
        x = self.relu(self.fc1(x.flatten(start_dim=-3)))
        return self.fc2(x)


class LeNet(nn.Module):
    """lenet: LeNet 20-50-500 with BatchNorm and dropout.

    Paper Sec. 5.2: "a convolutional neural network with the same size as LeNet but with
    batch-normalization", with dropout after each layer. Layout of the authors' PyTorch
    reference (ucla-vision/entropy-sgd, ``python/models.py``, class ``mnistconv``):

    - conv 5x5 (C->20) -> BatchNorm2d -> ReLU -> maxpool 3 (stride 3) -> Dropout(p)
      (28 -> 24 -> 8)
    - conv 5x5 (20->50) -> BatchNorm2d -> ReLU -> maxpool 2 (stride 2) -> Dropout(p)
      (8 -> 4 -> 2)
    - flatten 50*2*2 = 200 -> Linear(200, 500) -> BatchNorm1d -> ReLU -> Dropout(p)
    - Linear(500, classes)

    with p = 0.5, giving 132,220 trainable parameters on 1x28x28. The authors' Lua
    version (``models.lua``) places BatchNorm after the pooling and has none on the
    500-unit layer (131,220 parameters); we follow the PyTorch file.

    Options: ``dropout`` (0.5).
    """

    name = "lenet"
    task = "classification"
    paper_section = "Sec. 5.2"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        channels = _require_28x28(self.name, input_shape)
        dropout = probability_option(self.name, "dropout", dropout)
        self.input_shape = tuple(input_shape)
        self.hparams = {"dropout": dropout}
        self.conv1 = nn.Conv2d(channels, 20, kernel_size=5)
        self.bn1 = nn.BatchNorm2d(20)
        self.pool1 = nn.MaxPool2d(3, stride=3)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.bn2 = nn.BatchNorm2d(50)
        self.pool2 = nn.MaxPool2d(2, stride=2)
        self.fc1 = nn.Linear(50 * 2 * 2, 500)
        self.bn3 = nn.BatchNorm1d(500)
        self.fc2 = nn.Linear(500, num_classes)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.pool1(self.relu(self.bn1(self.conv1(x)))))
        x = self.drop(self.pool2(self.relu(self.bn2(self.conv2(x)))))
        x = self.drop(self.relu(self.bn3(self.fc1(x.flatten(start_dim=-3)))))
        return self.fc2(x)


class ConvBNReLU(nn.Module):
    """Conv2d (with bias, as in the reference) -> BatchNorm2d -> ReLU."""

    def __init__(self, fan_in: int, fan_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(fan_in, fan_out, kernel, stride=stride, padding=padding)
        self.bn = nn.BatchNorm2d(fan_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


ALL_CNN_HEADS = ("reference", "springenberg")


class AllCNNBN(nn.Module):
    """all-cnn-bn: All-CNN-C (Springenberg et al. 2014) with BatchNorm after every conv.

    Paper Sec. 5.3 (and Sec. 5.1 (iv), "~1.6 million weights"). Layout of the authors'
    PyTorch reference (ucla-vision/entropy-sgd, ``python/models.py``, class ``allcnn``;
    ``models.lua`` ``cifarconv`` is identical), every conv followed by BatchNorm2d + ReLU:

    - Dropout(0.2) on the input
    - conv 3x3 w1, conv 3x3 w1, conv 3x3 w1 stride 2 (all padding 1), Dropout(p)
    - conv 3x3 w2, conv 3x3 w2, conv 3x3 w2 stride 2 (all padding 1), Dropout(p)
    - head, then conv 1x1 (w2 -> classes) + BN + ReLU, then global average pooling

    with w1 = 96, w2 = 192, p = 0.5. The reference's head (``head="reference"``, default)
    is two padded 3x3 convs w2 -> w2, giving 1,667,166 parameters (the paper's ~1.6M).
    Springenberg's All-CNN-C head (``head="springenberg"``) is a valid 3x3 conv then a
    1x1 conv, giving 1,372,254 parameters. Like the original, the class scores pass through
    ReLU before pooling, so the logits are non-negative.

    Global pooling is a mean over the spatial grid, so any (C, H, W) is accepted (CIFAR's
    3x32x32 reaches the head at 8x8); the springenberg head needs a 3x3 grid or larger
    there (H, W >= 9).

    Options: ``dropout`` (0.5), ``input_dropout`` (0.2), ``head`` ("reference"),
    ``width1`` (96), ``width2`` (192).
    """

    name = "all-cnn-bn"
    task = "classification"
    paper_section = "Sec. 5.3"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        dropout: float = 0.5,
        input_dropout: float = 0.2,
        head: str = "reference",
        width1: int = 96,
        width2: int = 192,
    ):
        super().__init__()
        dropout = probability_option(self.name, "dropout", dropout)
        input_dropout = probability_option(self.name, "input_dropout", input_dropout)
        head = choice_option(self.name, "head", head, ALL_CNN_HEADS)
        w1 = int_option(self.name, "width1", width1)
        w2 = int_option(self.name, "width2", width2)
        channels = self._check_shape(input_shape, head)
        self.input_shape = tuple(input_shape)
        self.hparams = {
            "dropout": dropout,
            "input_dropout": input_dropout,
            "head": head,
            "width1": w1,
            "width2": w2,
        }
        self.input_drop = nn.Dropout(input_dropout)
        self.block1 = ConvBNReLU(channels, w1, 3, padding=1)
        self.block2 = ConvBNReLU(w1, w1, 3, padding=1)
        self.block3 = ConvBNReLU(w1, w1, 3, stride=2, padding=1)
        self.drop1 = nn.Dropout(dropout)
        self.block4 = ConvBNReLU(w1, w2, 3, padding=1)
        self.block5 = ConvBNReLU(w2, w2, 3, padding=1)
        self.block6 = ConvBNReLU(w2, w2, 3, stride=2, padding=1)
        self.drop2 = nn.Dropout(dropout)
        if head == "reference":
            self.block7 = ConvBNReLU(w2, w2, 3, padding=1)
            self.block8 = ConvBNReLU(w2, w2, 3, padding=1)
        else:
            self.block7 = ConvBNReLU(w2, w2, 3, padding=0)
            self.block8 = ConvBNReLU(w2, w2, 1)
        self.block9 = ConvBNReLU(w2, num_classes, 1)

    @classmethod
    def _check_shape(cls, input_shape: tuple[int, ...], head: str) -> int:
        accepted = "(C, H, W), images of any size with any number of channels C,"
        if head == "springenberg":
            accepted = "(C, H, W) with H, W >= 9 for head 'springenberg',"
        ok = len(input_shape) == 3
        if ok and head == "springenberg":
            # two stride-2, padding-1 3x3 convs map s -> (s - 1) // 2 + 1 each; the valid
            # 3x3 conv of the head then needs at least 3 rows and columns.
            grid = [(((s - 1) // 2 + 1) - 1) // 2 + 1 for s in input_shape[1:]]
            ok = min(grid) >= 3
        if not ok:
            raise reject_shape(
                cls.name,
                input_shape,
                accepted,
                "pass the (channels, height, width) of one image, for cifar10 (3, 32, 32)",
            )
        return input_shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_drop(x)
        x = self.drop1(self.block3(self.block2(self.block1(x))))
        x = self.drop2(self.block6(self.block5(self.block4(x))))
        x = self.block9(self.block8(self.block7(x)))
        return x.mean(dim=(-2, -1))
