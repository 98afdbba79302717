"""The in-memory dataset every later stage consumes.

All datasets this project uses fit in memory (CIFAR-10's 45,000 training images are
0.55 GB in float32), so a dataset is simply two tensors plus the provenance needed to
reproduce them. Batching and shuffling belong to the training loop, which takes an
explicit generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

SPLITS = ("train", "val", "test")
TASKS = ("classification", "sequence")


@dataclass(eq=False, repr=False)
class Dataset:
    """One split of one dataset.

    Attributes:
        name: the registry name as given ("digits", "mnist", "text:/path/file.txt", ...).
        split: "train", "val" or "test".
        inputs: images as float32 (N, C, H, W); sequences as int64 (N, T) token ids.
        targets: class labels int64 (N,); for sequences int64 (N, T), the next token
            of every input position.
        num_classes: number of classes, or the vocabulary size for sequences.
        task: "classification" or "sequence".
        meta: JSON-serialisable provenance (files and their SHA-256, split rule,
            preprocessing and its fitted parameters, vocabulary, seq_len ...).
    """

    name: str
    split: str
    inputs: torch.Tensor
    targets: torch.Tensor
    num_classes: int
    task: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError("inputs and targets must have the same number of examples")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) for images, (T,) for sequences."""
        return tuple(self.inputs.shape[1:])

    def head(self, n: int) -> Dataset:
        """The first ``n`` examples in dataset order (provenance noted in ``meta``)."""
        from landscape.data.files import DatasetArgumentError

        if not 1 <= n <= len(self):
            raise DatasetArgumentError(f"Cannot take the first {n} examples: {n} exceeds the {len(self)} examples "
                                       f"of the '{self.split}' split of {self.name}, or is below 1.")
        meta = {**self.meta, "subset": f"first {n} of {len(self)} in dataset order"}
        return replace(self, inputs=self.inputs[:n], targets=self.targets[:n], meta=meta)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, task={self.task!r})"
        )
