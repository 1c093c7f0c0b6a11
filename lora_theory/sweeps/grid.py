"""Sweep grids: the cartesian product of named axes, from Python or a TOML file, with content hashes.

A point's hash is sha256 over (sweep name, parameters, toolkit version) in canonical JSON, so the
same point of the same sweep is recognised across runs and machines, and a new toolkit version
recomputes it.
"""
from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._validate import InvalidArgumentError

__all__ = ["grid", "load_toml", "point_hash"]


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """[{axis: value, ...}] over the cartesian product of the axes (in the order given)."""
    for k, v in axes.items():
        if isinstance(v, str | bytes) or not isinstance(v, Sequence) or len(v) == 0:
            raise InvalidArgumentError(f"{k}: expected a non-empty list of values, got {v!r}")
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(axes[n] for n in names))]


def point_hash(sweep: str, params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of (sweep, params, lora-theory version)."""
    from .. import __version__

    blob = json.dumps({"sweep": sweep, "params": params, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_toml(path: str | Path) -> tuple[str, Callable[..., dict], list[dict[str, Any]]]:
    """Read ``name = ...``, ``function = "module:attr"`` and a ``[grid]`` table of axes.

    Example file::

        name = "norms"
        function = "lora_theory.sweeps.points:approx_error"
        [grid]
        L = [256, 1024]
        gamma = [0.5, 1.0, 2.0]
    """
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidArgumentError(f"path: expected a readable TOML sweep file, got {path} ({e})") from None
    for key in ("name", "function", "grid"):
        if key not in spec:
            raise InvalidArgumentError(f"{path}: expected a '{key}' entry")
    mod, _, attr = str(spec["function"]).partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise InvalidArgumentError(f"function: expected 'module:attr' of an importable function, got {spec['function']!r} ({e})") from None
    return str(spec["name"]), fn, grid(**spec["grid"])
