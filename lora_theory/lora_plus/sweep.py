"""Width sweeps of the toy model and fitted exponents: slope of log|quantity| vs log n per term and step."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._validate import InvalidArgumentError
from .layer import simulate_layer
from .toy import simulate_toy

__all__ = ["TERMS", "compare", "fit_exponents", "width_sweep"]

TERMS = ("delta1", "delta2", "delta3", "df", "b_t", "aTx", "f")


def width_sweep(widths: Sequence[int] = tuple(2**k for k in range(6, 15)), steps: int = 5, seeds: Sequence[int] = (0, 1, 2), *,
                optimizer: str = "gd", init: int = 1, a: float = -1.0, b: float = 0.0, c_a: float = 0.1, c_b: float = 0.1,
                model: str = "toy") -> pd.DataFrame:
    """The toy model (eq. 2, ``model="toy"``) or the Sec. 4 layer (``model="layer"``, SignSGD / Adam)
    over widths and seeds, one row per (n, seed, step); see :mod:`~lora_theory.lora_plus.toy` and
    :mod:`~lora_theory.lora_plus.layer`."""
    if any(n <= 0 for n in widths):
        raise InvalidArgumentError(f"widths: expected positive integers, got {list(widths)}")
    if model == "layer":
        return simulate_layer(widths, steps, optimizer=optimizer, init=init, a=a, b=b, c_a=c_a, c_b=c_b, seeds=seeds)
    if model != "toy":
        raise InvalidArgumentError(f"model: expected 'toy' or 'layer', got {model!r}")
    return simulate_toy(widths, steps, optimizer=optimizer, init=init, a=a, b=b, c_a=c_a, c_b=c_b, seeds=seeds)


def fit_exponents(df: pd.DataFrame, terms: Sequence[str] = TERMS, zero_tol: float = 1e-300) -> pd.DataFrame:
    """Per (term, step): the least-squares slope of log median_seed |term| vs log n, and its seed spread.

    A term that is exactly zero at every width is reported with slope -inf (the "-inf" of the
    recursions); non-finite values (overflow of an exploding run) are dropped, and a fit needs
    at least 3 widths. ``slope_sd`` is the standard deviation of the per-seed slopes.

    Returns:
        DataFrame: term, step, slope, slope_sd, widths.
    """
    rows = []
    for (step,), g in df.groupby(["step"]):
        for term in terms:
            vals = g[["n", "seed", term]].copy()
            vals["abs"] = vals[term].abs()
            if (vals["abs"] <= zero_tol).all():
                rows.append({"term": term, "step": step, "slope": float("-inf"), "slope_sd": 0.0, "widths": vals.n.nunique()})
                continue
            vals = vals[np.isfinite(vals["abs"]) & (vals["abs"] > zero_tol)]
            med = vals.groupby("n")["abs"].median()
            if len(med) < 3:
                rows.append({"term": term, "step": step, "slope": float("nan"), "slope_sd": float("nan"), "widths": len(med)})
                continue
            slope = float(np.polyfit(np.log(med.index.to_numpy(float)), np.log(med.to_numpy()), 1)[0])
            per_seed = []
            for _, s in vals.groupby("seed"):
                if s.n.nunique() >= 3:
                    per_seed.append(np.polyfit(np.log(s.n.to_numpy(float)), np.log(s["abs"].to_numpy()), 1)[0])
            rows.append({"term": term, "step": step, "slope": slope, "slope_sd": float(np.std(per_seed)) if per_seed else float("nan"), "widths": len(med)})
    return pd.DataFrame(rows)


def compare(fitted: pd.DataFrame, predicted: pd.DataFrame, tol: float = 0.15, terms: Sequence[str] = ("delta1", "delta2", "delta3")) -> pd.DataFrame:
    """Join fitted slopes with predicted exponents; ``ok`` when |slope - gamma| <= tol (both -inf counts as ok)."""
    m = fitted.merge(predicted, on=["term", "step"])
    m = m[m.term.isin(terms)].copy()

    def ok(row):
        if row.gamma is None:
            return row.slope == float("-inf")
        return bool(np.isfinite(row.slope) and abs(row.slope - row.gamma_float) <= tol)

    m["ok"] = m.apply(ok, axis=1)
    m["error"] = [abs(s - g) if np.isfinite(s) and np.isfinite(g) else (0.0 if s == g else float("inf")) for s, g in zip(m.slope, m.gamma_float, strict=True)]
    return m
