"""The figure registry: each committed figure is a study (-> tidy DataFrame) plus a plot.

A figure is registered with :func:`register_figure`; :func:`render` runs its study (or reads
a stored table), writes ``NAME.csv`` and ``NAME.png`` into a folder, and returns their paths.
Computing and drawing stay separate: studies live in ``lora_theory.studies``, drawing in
``lora_theory.plotting``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ._validate import InvalidArgumentError

__all__ = ["FIGURE_MODULES", "FigureSpec", "all_figures", "get_figure", "register_figure", "render"]

#: Modules that register figures; missing ones are skipped.
FIGURE_MODULES = (
    "lora_theory.studies.limits_exact",
    "lora_theory.studies.limits_phase",
    "lora_theory.studies.lora_ga",
    "lora_theory.studies.lora_plus",
)


@dataclass(frozen=True)
class FigureSpec:
    """A figure: its name, the claim ids it illustrates, its study and its plot."""

    name: str
    claims: tuple[str, ...]
    description: str
    compute: Callable[[bool], pd.DataFrame]
    plot: Callable[[pd.DataFrame], object]


_FIGS: dict[str, FigureSpec] = {}
_LOADED = False


def register_figure(name: str, *, claims: tuple[str, ...], description: str, compute: Callable[[bool], pd.DataFrame], plot: Callable[[pd.DataFrame], object]) -> FigureSpec:
    """Register ``compute(quick) -> DataFrame`` and ``plot(df) -> matplotlib Figure`` as ``name``."""
    spec = FigureSpec(name, tuple(claims), " ".join(description.split()), compute, plot)
    _FIGS[name] = spec
    return spec


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    for mod in FIGURE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    _LOADED = True


def all_figures() -> list[FigureSpec]:
    """Every registered figure, sorted by name."""
    _load()
    return [_FIGS[k] for k in sorted(_FIGS)]


def get_figure(name: str) -> FigureSpec:
    """The figure registered as ``name``."""
    _load()
    if name not in _FIGS:
        raise InvalidArgumentError(f"name: expected one of {', '.join(sorted(_FIGS))}, got {name!r}")
    return _FIGS[name]


def render(name: str, out_dir: str | Path, *, quick: bool = True, data: pd.DataFrame | None = None) -> dict[str, Path]:
    """Compute (or take ``data``), then write ``out_dir/NAME.csv`` and ``out_dir/NAME.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = get_figure(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = spec.compute(quick) if data is None else data
    csv = out / f"{name}.csv"
    df.to_csv(csv, index=False)
    fig = spec.plot(df)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"csv": csv, "png": png}
