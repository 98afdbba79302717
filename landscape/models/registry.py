"""The model zoo's front door: build a network by name and describe it as plain data.

A model is identified by its *spec*, ``{"name", "input_shape", "num_classes", "kwargs"}``,
which holds only JSON values. Checkpoints store the spec next to the ``state_dict``
(tensors only, so ``torch.load(..., weights_only=True)`` suffices, docs/design.md sec. 3),
and ``build_model(**spec)`` rebuilds the identical architecture; ``kwargs`` holds every
option of the model with its resolved value, so a later change of a default cannot
change what an old checkpoint rebuilds.

Validation happens before any weight is allocated, in this order: model name, option
names, the form of input_shape and num_classes, then option values and the model's own
input-shape rule (first thing in each model's constructor).
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.models._validate import as_shape
from landscape.models.conv import AllCNNBN, LeNet, SmallLeNet
from landscape.models.mlp import MnistFC, SmallMnistFC
from landscape.models.recurrent import CharLSTM, LSTMLanguageModel

SPEC_ATTRIBUTE = "landscape_spec"

_MODELS: dict[str, type[nn.Module]] = {
    cls.name: cls  # type: ignore[attr-defined]
    for cls in (
        SmallMnistFC,
        MnistFC,
        SmallLeNet,
        LeNet,
        AllCNNBN,
        CharLSTM,
        LSTMLanguageModel,
    )
}


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is, for help texts and for code that must feed it.

    ``task`` is ``"classification"`` (float input ``(B, *input_shape)`` -> logits
    ``(B, num_classes)``) or ``"sequence"`` (int64 token ids ``(B, T)`` -> logits
    ``(B, T, V)`` with V = num_classes).
    """

    name: str
    task: str
    paper_section: str
    summary: str
    options: Mapping[str, Any]


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_MODELS)


def model_info(name: str) -> ModelInfo:
    """Task, paper section, one-line summary and option defaults of a registered model."""
    cls = _lookup(name)
    doc = inspect.getdoc(cls) or ""
    return ModelInfo(
        name=cls.name,  # type: ignore[attr-defined]
        task=cls.task,  # type: ignore[attr-defined]
        paper_section=cls.paper_section,  # type: ignore[attr-defined]
        summary=doc.splitlines()[0] if doc else "",
        options=dict(_option_defaults(cls)),
    )


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """Build the model ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs.

    ``input_shape`` excludes the batch dimension: ``(C, H, W)`` for image models,
    ``(T,)`` (window length) for sequence models, whose ``num_classes`` is the vocabulary
    size. Model options come as keyword arguments, or as the ``kwargs`` mapping so that
    ``build_model(**model_spec(model))`` works; see :func:`model_info` for each model's
    options and defaults.

    Initialisation draws from torch's global CPU generator, so ``torch.manual_seed`` makes
    it reproducible. Passing ``seed`` instead seeds a forked copy of that generator: the
    same seed gives the same weights and the caller's random state is left untouched.

    Raises :class:`~landscape.errors.LandscapeError` for an unknown model or option or a
    bad option value, and :class:`~landscape.errors.ShapeError` for an input shape the
    model cannot take. The returned module carries its spec (see :func:`model_spec`).
    """
    cls = _lookup(name)
    chosen = _merge_options(cls.name, kwargs, options)  # type: ignore[attr-defined]
    defaults = _option_defaults(cls)
    unknown = sorted(set(chosen) - set(defaults))
    if unknown:
        raise LandscapeError(_unknown_options_message(cls.name, unknown, defaults))  # type: ignore[attr-defined]
    shape = as_shape(cls.name, input_shape)  # type: ignore[attr-defined]
    classes = _check_num_classes(cls.name, num_classes)  # type: ignore[attr-defined]
    if seed is None:
        model = cls(shape, classes, **chosen)
    else:
        seed = _check_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            model = cls(shape, classes, **chosen)
    resolved = dict(model.hparams)  # type: ignore[attr-defined]
    # Every option must be recorded, or build_model(**spec) could rebuild something else.
    assert set(resolved) == set(defaults), (cls, resolved, defaults)
    setattr(
        model,
        SPEC_ATTRIBUTE,
        {
            "name": cls.name,  # type: ignore[attr-defined]
            "input_shape": list(shape),
            "num_classes": classes,
            "kwargs": resolved,
        },
    )
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The JSON-able spec of a model made by :func:`build_model` (a fresh copy).

    ``build_model(**model_spec(m))`` rebuilds a module with the same parameter names and
    shapes, into which ``m.state_dict()`` loads strictly.
    """
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    if not isinstance(spec, dict):
        raise LandscapeError(
            f"This {type(model).__name__} was not built by landscape.models.build_model, "
            "so it has no spec to save; build it with build_model(name, input_shape, num_classes)."
        )
    return copy.deepcopy(spec)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (``requires_grad`` parameters; BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _lookup(name: object) -> type[nn.Module]:
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in _MODELS:
        raise LandscapeError(
            f"Unknown model {name!r}; choose one of: {', '.join(model_names())}."
        )
    return _MODELS[key]


def _option_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    """Keyword-only constructor arguments (the model's options) and their defaults."""
    signature = inspect.signature(cls.__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _merge_options(
    model: str, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    if kwargs is None:
        return dict(options)
    if not isinstance(kwargs, Mapping):
        raise LandscapeError(
            f"The kwargs of model '{model}' must be a mapping of option names to values, "
            f"but was given {type(kwargs).__name__}."
        )
    merged = dict(kwargs)
    for key, value in options.items():
        if key in merged and merged[key] != value:
            raise LandscapeError(
                f"Option {key} of model '{model}' was given twice with different values "
                f"({merged[key]!r} in kwargs and {value!r} as a keyword); give it once."
            )
        merged[key] = value
    return merged


def _unknown_options_message(model: str, unknown: list[str], defaults: Mapping[str, Any]) -> str:
    given = ", ".join(unknown)
    if not defaults:
        return f"Model '{model}' takes no options, but was given: {given}."
    valid = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items())
    return f"Model '{model}' has no option {given}; its options are: {valid}."


def _check_num_classes(model: str, num_classes: object) -> int:
    try:
        if isinstance(num_classes, bool):
            raise TypeError
        value = operator.index(num_classes)
    except TypeError:
        value = 0
    if value < 1:
        raise LandscapeError(
            f"Model '{model}' needs num_classes (the number of outputs, or the vocabulary "
            f"size for sequence models) as a positive integer, but was given {num_classes!r}."
        )
    return value


def _check_seed(seed: object) -> int:
    try:
        if isinstance(seed, bool):
            raise TypeError
        value = operator.index(seed)
    except TypeError:
        value = -1
    if value < 0:
        raise LandscapeError(f"The model seed must be a non-negative integer, but was {seed!r}.")
    return value
