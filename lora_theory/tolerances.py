"""Tolerances per dtype, in one table, and the error metric they apply to.

The metric is the max-entry relative error ``max|a - b| / max|b|``: it is the quantity the
ALoRAGC problem bounds (max-entry error), normalised so that it does not depend on the scale
of the gradient.
"""
from __future__ import annotations

import math

import torch

from ._validate import InvalidArgumentError

__all__ = ["TOLERANCES", "max_rel_error", "tolerance"]

#: rtol for "the same quantity computed two exact ways" (closed form vs autograd, blocked vs
#: dense). float64: the closed form and autograd reorder O(L) sums, so agreement is a few
#: hundred ulps at the sizes tested; float32: the same at single precision.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10},
    torch.float32: {"rtol": 2e-4},
}


def tolerance(dtype: torch.dtype) -> float:
    """The rtol for ``dtype`` from :data:`TOLERANCES`."""
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected one of {list(TOLERANCES)}, got {dtype}")
    return TOLERANCES[dtype]["rtol"]


def max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|`` (0 when both are zero; inf when only ``b`` is zero or any entry is NaN/inf)."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise InvalidArgumentError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"a: expected shape {tuple(b.shape)} (the shape of b), got {tuple(a.shape)}")
    num = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    den = b.double().abs().max().item() if b.numel() else 0.0
    if not (math.isfinite(num) and math.isfinite(den)):  # NaN/inf entries: an unbounded error (NaN would compare False silently)
        return float("inf")
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den
