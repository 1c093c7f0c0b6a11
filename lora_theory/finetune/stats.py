"""Statistics of fine-tuning runs: steps to a target loss, bootstrap intervals over seeds, interval verdicts.

- :func:`crossing`: the first (linearly interpolated) step at which a validation curve reaches a
  target, ``inf`` if it never does within the budget (a censored run, never a number it did not reach).
- :func:`bootstrap_ci`: a statistic (default: the median) over seeds and its percentile bootstrap
  interval; with 3 to 5 seeds the interval is coarse (it spans the middle seeds), which the
  verdicts respect rather than hide.
- :func:`interval_verdict`: "holds" when the whole interval is on the claimed side of a threshold,
  "fails" when the whole interval is on the other side, "inconclusive" otherwise.

Reference: Efron & Tibshirani (1993), percentile bootstrap; used by ``lora_theory.claims.finetune``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from .._validate import InvalidArgumentError, check_int

__all__ = ["bootstrap_ci", "crossing", "interval_verdict", "ratio", "smoothed_final"]

#: evaluations averaged by :func:`smoothed_final` (never the minimum over a noisy curve: that records the luckiest dip)
SMOOTH_K = 3


def smoothed_final(values: Sequence[float], k: int = SMOOTH_K) -> float:
    """Mean of the last ``k`` evaluations of a validation curve; inf if any of them is not finite (a diverged run)."""
    k = check_int("k", k, low=1)
    v = np.asarray(values, dtype=float)[-k:]
    if len(v) == 0:
        raise InvalidArgumentError("values: expected a non-empty curve, got []")
    return float(v.mean()) if np.all(np.isfinite(v)) else math.inf


def crossing(steps: Sequence[float], values: Sequence[float], target: float) -> float:
    """First step s with value(s) <= target, linearly interpolated between evaluations; inf if never.

    Args:
        steps: increasing evaluation steps (step 0 first).
        values: the validation loss at each step (inf for a diverged run).
        target: the loss to reach.

    Returns:
        The interpolated step (0 when the curve starts at or below the target), or ``math.inf``.
    """
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if s.shape != v.shape or s.ndim != 1 or len(s) == 0:
        raise InvalidArgumentError(f"steps, values: expected two 1-D sequences of one length, got {s.shape} and {v.shape}")
    if np.any(np.diff(s) <= 0):
        raise InvalidArgumentError(f"steps: expected strictly increasing steps, got {s.tolist()[:8]}")
    v = np.where(np.isnan(v), np.inf, v)  # nan = diverged: never below a target
    hit = np.nonzero(v <= target)[0]
    if len(hit) == 0:
        return math.inf
    i = int(hit[0])
    if i == 0:
        return float(s[0])
    v0, v1 = v[i - 1], v[i]
    if not math.isfinite(v0):  # coming back from inf cannot be interpolated: the evaluation step itself
        return float(s[i])
    return float(s[i - 1] + (s[i] - s[i - 1]) * (v0 - target) / (v0 - v1))  # v0 > target >= v1, so v0 > v1


def ratio(num: float, den: float) -> float:
    """num / den for step counts that may be inf: inf/inf -> nan, x/inf -> 0, inf/x -> inf."""
    if math.isinf(num) and math.isinf(den):
        return math.nan
    if den == 0:
        return math.inf if num > 0 else math.nan
    return num / den


def bootstrap_ci(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.median, *, n_boot: int = 4000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(stat(values), low, high): the statistic and its percentile bootstrap interval over the given values (seeds).

    NaN values (undefined per-seed ratios) are dropped; inf values are kept (a censored speed-up
    is a bound, and the median handles it). Returns (nan, nan, nan) when no value is left.
    """
    n_boot = check_int("n_boot", n_boot, low=1)
    if not 0 < level < 1:
        raise InvalidArgumentError(f"level: expected a number in (0, 1), got {level!r}")
    x = np.asarray([float(v) for v in values], dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    if stat is np.median:  # vectorized: one call over the (n_boot, n) resamples
        with np.errstate(invalid="ignore"):  # inf - inf inside a median of infs is nan: dropped below
            boots = np.median(x[idx], axis=1)
    else:
        boots = np.array([stat(x[row]) for row in idx], dtype=float)
    boots = boots[~np.isnan(boots)]
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf") if len(boots) else (math.nan, math.nan)
    return float(stat(x)), float(lo), float(hi)


def interval_verdict(low: float, high: float, threshold: float, sense: Literal[">=", "<="] = ">=") -> bool | None:
    """True if [low, high] lies on the claimed side of ``threshold``, False if wholly on the other side, else None.

    ``sense`` ">=" claims value >= threshold: True if low >= threshold, False if high < threshold.
    ``sense`` "<=" claims value <= threshold: True if high <= threshold, False if low > threshold.
    A nan bound gives None (inconclusive: nothing was measured).
    """
    if sense not in (">=", "<="):
        raise InvalidArgumentError(f"sense: expected '>=' or '<=', got {sense!r}")
    if math.isnan(low) or math.isnan(high):
        return None
    if sense == ">=":
        return True if low >= threshold else (False if high < threshold else None)
    return True if high <= threshold else (False if low > threshold else None)
