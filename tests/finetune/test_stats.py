"""Statistics of fine-tuning runs (lora_theory.finetune.stats), used by every ``lora_ga.*`` / ``lora_plus.*`` fine-tuning claim."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lora_theory.finetune.stats import bootstrap_ci, crossing, interval_verdict, ratio


@given(slope=st.floats(0.01, 10), start=st.floats(0.5, 100), frac=st.floats(0.0, 1.0), every=st.integers(1, 7))
def test_crossing_is_exact_on_a_straight_line(slope, start, frac, every):
    """On L(s) = start - slope * s sampled every ``every`` steps, the crossing of any target is the exact root.

    Fails on an off-by-one evaluation step (returning the first evaluation at or after the target) or a
    reversed interpolation weight.
    """
    steps = np.arange(0, 50 * every + 1, every, dtype=float)
    vals = start - slope * steps
    target = start - frac * slope * steps[-1]
    assert crossing(steps, vals, target) == pytest.approx(frac * steps[-1], abs=1e-6 * steps[-1] + 1e-9)


def test_crossing_never_reached_is_inf_and_start_below_is_zero():
    assert crossing([0, 5, 10], [3.0, 2.0, 1.5], 1.0) == math.inf
    assert crossing([0, 5, 10], [0.9, 2.0, 0.5], 1.0) == 0.0


def test_crossing_treats_nan_and_inf_as_never_below():
    """A diverged evaluation (nan or inf) is never a hit, and a step after it is not interpolated from inf."""
    assert crossing([0, 5, 10], [3.0, math.nan, math.inf], 1.0) == math.inf
    assert crossing([0, 5, 10], [3.0, math.inf, 0.5], 1.0) == 10.0


def test_crossing_rejects_bad_curves():
    with pytest.raises(ValueError, match="steps, values"):
        crossing([0, 1], [1.0], 0.5)
    with pytest.raises(ValueError, match="increasing"):
        crossing([0, 5, 5], [3.0, 2.0, 1.0], 1.5)


def test_ratio_of_censored_step_counts():
    assert ratio(10, 5) == 2 and ratio(math.inf, 5) == math.inf and ratio(5, math.inf) == 0.0
    assert math.isnan(ratio(math.inf, math.inf))


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=7), st.integers(0, 10))
def test_bootstrap_interval_contains_the_median_and_stays_in_range(values, seed):
    med, lo, hi = bootstrap_ci(values, n_boot=300, seed=seed)
    assert med == pytest.approx(float(np.median(values)))
    assert min(values) <= lo <= hi <= max(values)


def test_bootstrap_of_identical_seeds_is_a_point_and_of_spread_seeds_is_wide():
    """Fails if the interval ignores the seeds' spread (e.g. a standard error of the wrong size, or no resampling)."""
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    _, lo, hi = bootstrap_ci([1.0, 2.0, 9.0, 10.0, 11.0])
    assert lo <= 2.0 and hi >= 10.0


def test_bootstrap_drops_nan_keeps_inf():
    med, lo, hi = bootstrap_ci([1.0, math.nan, math.inf, math.inf])
    assert med == math.inf and hi == math.inf and lo == 1.0
    assert all(math.isnan(x) for x in bootstrap_ci([math.nan]))


@pytest.mark.parametrize("low, high, sense, expected", [
    (2.1, 3.0, ">=", True), (1.0, 1.9, ">=", False), (1.5, 2.5, ">=", None), (2.0, 2.0, ">=", True),
    (0.1, 1.9, "<=", True), (2.1, 3.0, "<=", False), (1.5, 2.5, "<=", None), (math.nan, 3.0, ">=", None),
])
def test_interval_verdict_truth_table(low, high, sense, expected):
    assert interval_verdict(low, high, 2.0, sense) is expected


def test_interval_verdict_rejects_a_bad_sense():
    with pytest.raises(ValueError, match="sense"):
        interval_verdict(1, 2, 1.5, ">")
