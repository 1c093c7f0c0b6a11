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


# ---- decision rules (stats.decide) ----------------------------------------------------------------------------------------

from lora_theory.finetune.stats import Component, decide, geo_mean_ratio, mean_diff, null_relabellings, smoothed_final  # noqa: E402


def test_false_holds_rate_under_no_effect_is_at_most_5_percent():
    """Many data sets with no effect (two arms from one distribution): the rule says "holds" in <= 5 % of them, and its own reported rate is <= 5 %."""
    rng = np.random.default_rng(3)
    holds = 0
    for _ in range(20):
        a, b = rng.lognormal(3, 0.2, 6), rng.lognormal(3, 0.2, 6)
        d = decide({"a": a, "b": b}, [Component("speed-up", geo_mean_ratio("a", "b"), 1.0)], ["a", "b"], n_resamples=200, null_resamples=60)
        holds += d.holds is True
        assert d.false_holds <= 0.05
    assert holds <= 1  # <= 5 % of 20


def test_a_real_effect_holds_and_the_percentile_bootstrap_alone_would_be_too_liberal():
    """A consistent 1.5x effect on 6 seeds holds; with 4 seeds the smallest relabelling p is 1/16 > 5 %: inconclusive, never holds."""
    rng = np.random.default_rng(0)
    a = 1.5 * np.exp(rng.normal(0, 0.05, 6))
    comp = [Component("speed-up", geo_mean_ratio("a", "b"), 1.0)]
    assert decide({"a": a, "b": np.ones(6)}, comp, ["a", "b"]).verdict == "holds"
    d4 = decide({"a": a[:4], "b": np.ones(4)}, comp, ["a", "b"])
    assert d4.verdict == "inconclusive" and "relabelling p" in d4.text()


def test_inconclusive_names_the_seeds_that_would_decide():
    rng = np.random.default_rng(1)
    d = decide({"a": 1.0 + rng.normal(0.05, 0.1, 6), "b": np.ones(6)}, [Component("diff", mean_diff("a", "b"), 0.0)], ["a", "b"])
    p = d.parts[0]
    if d.verdict == "inconclusive" and p.holds is None:
        assert p.seeds_to_decide is not None and p.seeds_to_decide > 6


def test_wholly_below_the_threshold_fails():
    d = decide({"a": np.full(6, 1.2) + np.arange(6) * 0.01, "b": np.ones(6)}, [Component("speed-up", geo_mean_ratio("a", "b"), 2.0)], ["a", "b"])
    assert d.verdict == "fails"


def test_null_relabellings_swap_within_seeds_only():
    arms = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([10.0, 20.0, 30.0])}
    rel = null_relabellings(arms, ["a", "b"], 64)
    assert len(rel) == 8
    for r in rel:
        for i in range(3):
            assert {r["a"][i], r["b"][i]} == {arms["a"][i], arms["b"][i]}


def test_smoothed_final_is_the_mean_of_the_last_three_and_inf_when_diverged():
    assert smoothed_final([9, 1, 2, 3]) == pytest.approx(2.0)
    assert smoothed_final([1, 2, math.inf]) == math.inf


def test_geo_mean_ratio_counts_equal_steps_as_no_speedup():
    """Two runs at the target from the start (0 and 0 steps) or both censored (inf, inf): ratio 1, not nan (a control's identical arms)."""
    from lora_theory.finetune.stats import geo_mean_ratio

    f = geo_mean_ratio("ref", "x")
    assert f({"ref": np.array([0.0, 0.0]), "x": np.array([0.0, 0.0])}) == 1.0
    assert f({"ref": np.array([np.inf, 10.0]), "x": np.array([np.inf, 5.0])}) == pytest.approx(2 ** 0.5)
    assert f({"ref": np.array([0.0, 8.0]), "x": np.array([4.0, 8.0])}) == 0.0  # charged init steps against none: no speed-up at all
