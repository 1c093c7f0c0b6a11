"""Plotting: functions that take a study's DataFrame and return a matplotlib Figure (one module per paper).

Shared helpers: :func:`finish_axes` (labels, scales, title, legend: the same on every panel) and
:func:`fmt` (a number in a title or label that says "n/a" instead of printing nan or inf).
"""
from __future__ import annotations

import math

__all__ = ["finish_axes", "fmt"]


def fmt(value: object, spec: str = ".3g", *, missing: str = "n/a (not measured)") -> str:
    """``format(value, spec)``, or ``missing`` when value is None, NaN or infinite (a failed measurement)."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return missing
    return format(x, spec) if math.isfinite(x) else missing


def finish_axes(ax, *, xlabel: str, ylabel: str, title: str, xscale: str | None = None, yscale: str | None = None, xbase: int | None = None,
                legend: bool = True, fontsize: int = 8) -> None:
    """Label one panel: axis labels and scales, a small title, an optional legend (fontsize 7)."""
    if xscale is not None:
        ax.set_xscale(xscale, **({"base": xbase} if xbase else {}))
    if yscale is not None:
        ax.set_yscale(yscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=fontsize)
    if legend:
        ax.legend(fontsize=7)
