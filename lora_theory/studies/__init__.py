"""Studies (parameter sweeps -> tidy DataFrames) and the figure registry: a figure is a study plus a plot.

A figure is registered with :func:`register_figure`; :func:`render` runs its study (or reads
a stored table), writes ``NAME.csv`` and ``NAME.png`` into a folder, and returns their paths.
Computing and drawing stay separate: one study module per paper here (``studies/limits.py``,
``studies/lora_ga.py``, ``studies/lora_plus.py``), drawing in the matching ``plotting/`` modules.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._registry import LazyRegistry

__all__ = ["FIGURE_MODULES", "FigureSpec", "all_figures", "get_figure", "lazy_plot", "register_figure", "render"]

#: Modules that register figures; missing ones are skipped.
FIGURE_MODULES = ("lora_theory.studies.limits", "lora_theory.studies.lora_ga", "lora_theory.studies.lora_plus", "lora_theory.studies.finetune",
                  "lora_theory.studies.poc")


@dataclass(frozen=True)
class FigureSpec:
    """A figure: its name, the claim ids it illustrates, its study and its plot."""

    name: str
    claims: tuple[str, ...]
    description: str
    compute: Callable[[bool], pd.DataFrame]
    plot: Callable[[pd.DataFrame], object]
    experiment: bool = False  # its study runs fine-tuning (tens of CPU minutes): quick reproduce skips it unless asked


#: every registered figure, filled lazily from FIGURE_MODULES
_FIGS: LazyRegistry[FigureSpec] = LazyRegistry("name", FIGURE_MODULES)


def register_figure(name: str, *, claims: tuple[str, ...], description: str, compute: Callable[[bool], pd.DataFrame], plot: Callable[[pd.DataFrame], object],
                    experiment: bool = False) -> FigureSpec:
    """Register ``compute(quick) -> DataFrame`` and ``plot(df) -> matplotlib Figure`` as ``name`` (``experiment``: as for claims)."""
    spec = FigureSpec(name, tuple(claims), " ".join(description.split()), compute, plot, experiment)
    _FIGS.add(name, spec, same=lambda a, b: a.name == b.name)
    return spec


def lazy_plot(module: str, function: str) -> Callable[[pd.DataFrame], object]:
    """``df -> lora_theory.plotting.<module>.<function>(df)``, importing matplotlib only when a figure is drawn."""

    def plot(df: pd.DataFrame):
        mod = importlib.import_module(f"lora_theory.plotting.{module}")
        return getattr(mod, function)(df)

    return plot


def all_figures() -> list[FigureSpec]:
    """Every registered figure, sorted by name."""
    return _FIGS.all()


def get_figure(name: str) -> FigureSpec:
    """The figure registered as ``name``."""
    return _FIGS.get(name)


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
