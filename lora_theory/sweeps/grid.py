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
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import tomllib

from .. import _version
from .._validate import InvalidArgumentError

__all__ = ["SweepSpec", "check_point", "grid", "load_toml", "point_hash"]


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """[{axis: value, ...}] over the cartesian product of the axes (in the order given; last axis fastest).

    Args:
        axes: name -> non-empty list of JSON values (numbers, strings, bools, None, lists).

    Returns:
        prod(len(axis)) parameter dicts.
    """
    for k, v in axes.items():
        if isinstance(v, str | bytes) or not isinstance(v, Sequence) or len(v) == 0:
            raise InvalidArgumentError(f"{k}: expected a non-empty list of values, got {v!r}")
    names = list(axes)
    for k in names:
        if not k.isidentifier():
            raise InvalidArgumentError(f"axes: expected identifiers as axis names, got {k!r}")
        _check_value(k, list(axes[k]))
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(axes[n] for n in names))]


def _check_value(where: str, v: Any) -> None:
    if isinstance(v, bool | int | str) or v is None:
        return
    if isinstance(v, float):
        if not math.isfinite(v):  # NaN != NaN: such a point could never be recognised as finished
            raise InvalidArgumentError(f"{where}: expected a finite number, got {v!r}")
        return
    if isinstance(v, list | tuple):
        for i, x in enumerate(v):
            _check_value(f"{where}[{i}]", x)
        return
    raise InvalidArgumentError(f"{where}: expected a JSON value (number, string, bool, None or a list of them), got {type(v).__name__} {v!r:.60}")


def check_point(params: object, index: int | None = None) -> dict[str, Any]:
    """Validate one parameter point: a dict of str -> JSON values (what the hash and the store hold)."""
    where = "points" if index is None else f"points[{index}]"
    if not isinstance(params, Mapping):
        raise InvalidArgumentError(f"{where}: expected a dict of parameters, got {type(params).__name__} {params!r:.60}")
    for k, v in params.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise InvalidArgumentError(f"{where}: expected parameter names that are identifiers, got {k!r}")
        _check_value(f"{where}[{k!r}]", v)
    return dict(params)


def point_hash(sweep: str, params: Mapping[str, Any], seed: int | None = None) -> str:
    """sha256 of the canonical JSON of (sweep, params, seed, lora-theory version).

    Tuples hash like lists (JSON has no tuples); ``1`` and ``1.0`` are different points.
    """

    check_point(params)
    blob = json.dumps({"sweep": sweep, "params": params, "seed": seed, "version": _version.__version__}, sort_keys=True, allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class SweepSpec(NamedTuple):
    """A sweep read from a TOML file: its name, point function, points and seed."""

    name: str
    fn: Callable[..., dict]
    points: list[dict[str, Any]]
    seed: int | None


def load_toml(path: str | Path) -> SweepSpec:
    """Read ``name``, ``function = "module:attr"``, an optional ``seed`` (default 0) and a ``[grid]`` table of axes.

    Example file::

        name = "norms"
        seed = 0
        function = "lora_theory.limits.norm_sweeps:approx_error"
        [grid]
        L = [256, 1024]
        gamma = [0.5, 1.0, 2.0]
    """
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:  # TOML is UTF-8: other bytes are bad input (issue 21)
        raise InvalidArgumentError(f"{path}: expected a readable TOML sweep file in UTF-8 ({e})") from None
    for key in ("name", "function", "grid"):
        if key not in spec:
            raise InvalidArgumentError(f"{path}: expected a '{key}' entry")
    mod, _, attr = str(spec["function"]).partition(":")
    try:
        if not mod or not attr:
            raise ImportError("the module or the attribute is empty")
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as e:  # ValueError: an empty or relative module name
        raise InvalidArgumentError(f"function: expected 'module:attr' of an importable function, got {spec['function']!r} ({e})") from None
    if not callable(fn):
        raise InvalidArgumentError(f"function: expected a callable, got {spec['function']!r} ({type(fn).__name__})")
    if not isinstance(spec["grid"], dict):
        raise InvalidArgumentError(f"grid: expected a [grid] table of axes, got {spec['grid']!r:.60}")
    seed = spec.get("seed", 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidArgumentError(f"seed: expected an integer, got {seed!r}")
    return SweepSpec(str(spec["name"]), fn, grid(**spec["grid"]), seed)
