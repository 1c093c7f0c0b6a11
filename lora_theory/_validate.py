"""Input validation shared by the public API.

Every public function checks its arguments here, so that bad input fails early with a
``ValueError`` that names the argument, what was expected and what was given (never a bare
IndexError or a torch-internal RuntimeError, and never a silent broadcast).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "InvalidArgumentError",
    "check_choice",
    "check_finite",
    "check_int",
    "check_matrix",
    "check_positive",
    "check_same_dtype_device",
]


class InvalidArgumentError(ValueError):
    """A public function got an argument it cannot use; the message names it."""


def _fmt_shape(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as int, requiring ``low <= value <= high`` (bounds optional)."""

    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if low is not None and value < low:
        raise InvalidArgumentError(f"{name}: expected an integer >= {low}, got {value}")
    if high is not None and value > high:
        raise InvalidArgumentError(f"{name}: expected an integer <= {high}, got {value}")
    return value


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float that is > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name}: expected a positive number, got {value!r}")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name}: expected a positive number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        want = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InvalidArgumentError(f"{name}: expected {want}, got {value!r}")
    return x


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Require ``value`` to be one of ``choices`` (strings)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_matrix(name: str, t: object, shape: Sequence[int | None]) -> torch.Tensor:
    """Require a floating tensor of exactly ``shape`` (None matches any size); no broadcasting."""
    if not isinstance(t, torch.Tensor):
        raise InvalidArgumentError(f"{name}: expected a torch.Tensor of shape {_fmt_shape(['*' if s is None else s for s in shape])}, got {type(t).__name__}")
    if not t.is_floating_point():
        raise InvalidArgumentError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    ok = t.dim() == len(shape) and all(s is None or s == n for s, n in zip(shape, t.shape, strict=False))
    if not ok:
        want = _fmt_shape(["*" if s is None else s for s in shape])
        raise InvalidArgumentError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    return t


def check_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """Require every entry of ``t`` to be finite (no NaN or inf)."""
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise InvalidArgumentError(f"{name}: expected finite entries, got {bad} non-finite of {t.numel()}")
    return t


def check_same_dtype_device(tensors: dict[str, torch.Tensor]) -> tuple[torch.dtype, torch.device]:
    """Require all tensors to share one dtype and one device; return them."""
    items = list(tensors.items())
    name0, t0 = items[0]
    for name, t in items[1:]:
        if t.dtype != t0.dtype:
            raise InvalidArgumentError(f"{name}: expected dtype {t0.dtype} (the dtype of {name0}), got {t.dtype}; mixed dtypes are not promoted")
        if t.device != t0.device:
            raise InvalidArgumentError(f"{name}: expected device {t0.device} (the device of {name0}), got {t.device}")
    return t0.dtype, t0.device
