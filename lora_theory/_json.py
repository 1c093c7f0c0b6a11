"""Strict JSON out of the toolkit: no ``NaN`` / ``Infinity`` tokens, ever.

Python's ``json`` writes ``NaN`` and ``Infinity``, which strict parsers (``jq``, JavaScript,
``json.loads(..., parse_constant=...)``) reject, and pandas' ``to_json`` writes them as ``null``
without a word. Here a non-finite number becomes ``null`` and its path is listed with what it
was, in a sibling key ``"nonfinite"``: ``{"max_rel_err": {"A_q": null}, "nonfinite":
{"max_rel_err.A_q": "inf"}}``. A list of records gets one ``"nonfinite"`` per record.
"""
from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["NONFINITE", "dumps", "strict"]

NONFINITE = "nonfinite"


def _walk(v: Any, where: str, out: dict[str, str]) -> Any:
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if math.isfinite(v):
            return float(v)
        out[where or "value"] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return None
    if isinstance(v, dict):
        return {str(k): _walk(x, f"{where}.{k}" if where else str(k), out) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_walk(x, f"{where}[{i}]", out) for i, x in enumerate(v)]
    if hasattr(v, "tolist"):  # numpy scalars and arrays, torch tensors
        return _walk(v.tolist(), where, out)
    if hasattr(v, "item"):
        return _walk(v.item(), where, out)
    return str(v)  # paths, timestamps, dtypes: their text


def strict(obj: Any) -> tuple[Any, dict[str, str]]:
    """``(clean, nonfinite)``: ``obj`` with every non-finite number replaced by None, and {path: "nan" | "inf" | "-inf"}."""
    found: dict[str, str] = {}
    return _walk(obj, "", found), found


def _annotate(obj: Any) -> Any:
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        return [_annotate(r) for r in obj]
    clean, found = strict(obj)
    if isinstance(clean, dict):
        if found:
            clean[NONFINITE] = found
        return clean
    if found:  # a bare non-finite number or a list of numbers
        return {"value": clean, NONFINITE: found}
    return clean


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (dicts, lists, numbers, numpy/torch values); non-finite numbers as described above."""
    return json.dumps(_annotate(obj), indent=indent, allow_nan=False)
