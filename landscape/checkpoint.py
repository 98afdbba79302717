"""Self-describing, safe checkpoints (DESIGN.md sec. 3).

A checkpoint is one ``torch.save`` file holding a plain dictionary::

    {
      "format": "landscape-checkpoint", "format_version": 1,
      "model": {"name", "input_shape", "num_classes", "kwargs"},   # enough to rebuild it
      "state_dict": {...},                                       # tensors
      "dataset": {"name", "normalize", "preprocess", ...},        # how the data was made
      "optimizer": {"name", "state_dict"} | None,
      "scheduler": {...} | None,
      "step": int, "epoch": int,
      "config": {...},                                           # the TrainConfig, as JSON
      "trainer": {...} | None,                                   # counters, RNG and data-stream state for --resume
      "versions": {"landscape", "torch", "numpy", "python"},
    }

Only tensors and plain Python values go in, so the file loads with
``torch.load(path, weights_only=True)``: loading a user's file never runs code. A pickle
that carries anything else (a class, a function) is refused by that loader, and we turn
the refusal into one sentence.
"""

from __future__ import annotations

import os
import pickle
import platform
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import landscape
from landscape.errors import CheckpointError, LandscapeError
from landscape.io import atomic_open

FORMAT = "landscape-checkpoint"
FORMAT_VERSION = 1


def package_versions() -> dict[str, str]:
    """Versions recorded beside every result, so a number can be traced to its software."""
    return {
        "landscape": str(landscape.__version__),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def _to_cpu(obj: Any) -> Any:
    """Move tensors to the CPU recursively, so a GPU checkpoint loads anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    dataset: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    optimizer_name: str | None = None,
    scheduler: Any = None,
    step: int = 0,
    epoch: int = 0,
    config: dict | None = None,
    trainer: dict | None = None,
) -> None:
    """Write a checkpoint atomically (temp file + rename).

    ``model`` must come from :func:`landscape.models.build_model` (it carries the spec
    that rebuilds it). ``trainer`` holds what ``--resume`` needs beyond the optimizer:
    counters, RNG states, the data stream's position.
    """
    from landscape.models import model_spec

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_spec(model),
        "state_dict": _to_cpu(model.state_dict()),
        "dataset": dict(dataset or {}),
        "optimizer": None
        if optimizer is None
        else {"name": optimizer_name or type(optimizer).__name__, "state_dict": _to_cpu(optimizer.state_dict())},
        "scheduler": None if scheduler is None else _to_cpu(scheduler.state_dict()),
        "step": int(step),
        "epoch": int(epoch),
        "config": dict(config or {}),
        "trainer": _to_cpu(trainer) if trainer is not None else None,
        "versions": package_versions(),
    }
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint's raw dictionary, safely (``weights_only=True``).

    Raises :class:`CheckpointError` with one sentence for a missing file, a file that is
    not a checkpoint, a corrupt file, or a pickle that carries code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint '{path}' does not exist: pass the checkpoint.pt of a run directory written by `landscape "
            "train`."
        )
    if path.is_dir():
        candidate = path / "checkpoint.pt"
        if candidate.exists():
            path = candidate
        else:
            raise CheckpointError(
                f"'{path}' is a directory without a checkpoint.pt: pass a run directory written by `landscape train` "
                "or the checkpoint file itself."
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        match = re.search(r"unsupported GLOBAL ([\w.]+)", message, re.IGNORECASE) or re.search(
            r"GLOBAL ([\w.]+)", message
        )
        if match:
            # weights_only refuses any global (class, function) the file asks for.
            raise CheckpointError(
                f"Refused to load '{path}': it asks for the Python object {match.group(1)}, which could run code; "
                "only landscape checkpoints (tensors and plain values) are accepted."
            ) from None
        raise CheckpointError(
            f"'{path}' is not a readable checkpoint (corrupt, truncated, or not a PyTorch file); re-create it with "
            "`landscape train`."
        ) from None
    except Exception as err:  # torch's legacy loader raises KeyError/IndexError on garbage
        raise CheckpointError(
            f"'{path}' is not a readable checkpoint (corrupt or truncated: {type(err).__name__}); re-create it with "
            "`landscape train`."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is a PyTorch file but not a landscape checkpoint (no 'format: {FORMAT}' entry); "
            "train with `landscape train` to get one."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has checkpoint format version {version!r}, newer than this landscape understands "
            f"({FORMAT_VERSION}): upgrade landscape."
        )
    for key in ("model", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"'{path}' is missing its '{key}' entry; re-create it with `landscape train`.")
    spec = payload["model"]
    if not isinstance(spec, dict) or not {"name", "input_shape", "num_classes"} <= set(spec) or not isinstance(
        payload["state_dict"], dict
    ):
        raise CheckpointError(f"'{path}' has a malformed model description; re-create it with `landscape train`.")
    payload["path"] = str(path)
    return payload


def check_finite_weights(payload: dict) -> None:
    """Refuse a checkpoint whose weights or floating buffers hold NaN or infinity (a diverged run's):
    every measurement on it would be NaN, and the error would otherwise surface far from its cause."""
    bad = [
        name
        for name, tensor in payload["state_dict"].items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(
            f"'{payload.get('path')}' has non-finite weights (NaN or infinity in {bad[0]}{more}): the "
            "run that wrote it diverged; use a checkpoint from before, or train again with a lower "
            "--lr."
        )


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a checkpoint and return ``(model, meta)``.

    ``meta`` is the checkpoint dictionary without the state dict (model spec, dataset,
    optimizer state, step, epoch, config, versions). The model is returned in eval mode
    on ``device``.
    """
    from landscape.models import build_model

    payload = read_checkpoint(path)
    check_finite_weights(payload)
    spec = payload["model"]
    try:
        model = build_model(
            spec["name"], tuple(spec["input_shape"]), int(spec["num_classes"]), **dict(spec.get("kwargs") or {})
        )
        model.load_state_dict(payload["state_dict"], strict=True)
    except LandscapeError:
        raise
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(
            f"'{payload['path']}' does not match the model it names ({spec.get('name')!r}): "
            f"{str(err).splitlines()[0][:160]}."
        ) from None
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


def checkpoint_dataset(meta: dict, split: str, data_dir: str | None = None):
    """One split of the dataset a checkpoint was trained on, with the same preprocessing.

    ``meta`` is the second value of :func:`load_checkpoint`; ``data_dir`` overrides the
    folder recorded at training time (the files may have moved). A run trained on a
    ``train_subset`` gets that subset as its train split.
    """
    from landscape.data import load_dataset

    record = meta.get("dataset") or {}
    if "name" not in record:
        raise LandscapeError("The checkpoint does not say which dataset it was trained on; it cannot pick samples.")
    kwargs = {k: record[k] for k in ("normalize", "preprocess", "val_fraction", "seq_len", "vocab")
              if record.get(k) is not None}
    dataset = load_dataset(record["name"], split, data_dir or (meta.get("config") or {}).get("data_dir"), **kwargs)
    if split == "train" and record.get("train_subset"):
        dataset = dataset.head(int(record["train_subset"]))  # the samples it was trained on
    return dataset
