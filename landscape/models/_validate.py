"""Checks for model options and input shapes, each failing with one clear sentence.

Every model constructor validates what it is given before it allocates a single weight,
so a wrong ``input_shape`` or option fails fast with a :class:`~landscape.errors.ShapeError`
or :class:`~landscape.errors.LandscapeError` instead of a matmul error deep in a forward pass.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from landscape.errors import LandscapeError, ShapeError


def format_shape(shape: Sequence[object]) -> str:
    """Render a shape the way Python prints a tuple: ``(1, 8, 8)``, ``(35,)``."""
    items = ", ".join(str(s) for s in shape)
    return f"({items},)" if len(shape) == 1 else f"({items})"


def as_shape(model: str, input_shape: object) -> tuple[int, ...]:
    """Coerce ``input_shape`` (tuple, list, ``torch.Size``) to a tuple of positive ints."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise ShapeError(
            f"Model '{model}' needs input_shape as a tuple of positive integers "
            f"(for example (1, 28, 28)), but was given {input_shape!r}."
        )
    dims: list[int] = []
    for dim in input_shape:
        try:
            if isinstance(dim, bool):
                raise TypeError
            value = operator.index(dim)
        except TypeError:
            value = 0
        if value < 1:
            raise ShapeError(
                f"Model '{model}' needs input_shape made of positive integers, "
                f"but was given {format_shape(list(input_shape))}."
            )
        dims.append(value)
    if not dims:
        raise ShapeError(
            f"Model '{model}' needs a non-empty input_shape, but was given ()."
        )
    return tuple(dims)


def reject_shape(model: str, given: Sequence[int], accepted: str, hint: str) -> ShapeError:
    """Build the one-sentence error for an input shape a model cannot take."""
    return ShapeError(
        f"Model '{model}' accepts input_shape {accepted} but was given "
        f"{format_shape(list(given))}; {hint}."
    )


def int_option(model: str, key: str, value: object, minimum: int = 1) -> int:
    """An integer option such as ``hidden`` or ``layers``; bools are not integers here."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = minimum - 1
    if number < minimum:
        raise LandscapeError(
            f"Option {key} of model '{model}' must be an integer >= {minimum}, "
            f"but was given {value!r}."
        )
    return number


def probability_option(model: str, key: str, value: object) -> float:
    """A dropout probability in [0, 1); p = 1 would zero every activation."""
    number = _as_float(value)
    if number is None or not 0.0 <= number < 1.0:
        raise LandscapeError(
            f"Option {key} of model '{model}' must be a probability in [0, 1), "
            f"but was given {value!r}."
        )
    return number


def positive_float_option(model: str, key: str, value: object) -> float:
    """A strictly positive finite float, such as an initialisation range."""
    number = _as_float(value)
    if number is None or not (number > 0.0 and math.isfinite(number)):
        raise LandscapeError(
            f"Option {key} of model '{model}' must be a positive number, "
            f"but was given {value!r}."
        )
    return number


def bool_option(model: str, key: str, value: object) -> bool:
    """A true/false switch; only real booleans are accepted (not 0/1 or strings)."""
    if not isinstance(value, bool):
        raise LandscapeError(
            f"Option {key} of model '{model}' must be true or false, but was given {value!r}."
        )
    return value


def choice_option(model: str, key: str, value: object, choices: Sequence[str]) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise LandscapeError(
            f"Option {key} of model '{model}' must be one of {listed}, but was given {value!r}."
        )
    return value


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
