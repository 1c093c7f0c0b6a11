"""Runs proofs_checks/limits_bound.py: the steps of approx_gradients' a-posteriori bound (limits.thm3.1, limits.thmA.1)."""
from __future__ import annotations

import pytest

from proofs_checks import ProofCheckFailed
from proofs_checks import limits_bound as lb


def test_moment_form():
    assert lb.check_moment_form(L=3, d=2) == {"L": 3, "d": 2}


@pytest.mark.parametrize("check", [lb.check_mean_shift, lb.check_cov_shift, lb.check_slope_shift, lb.check_sd_ratio])
def test_inequalities_hold_and_are_nearly_attained(check):
    """Each bound holds on the extreme configurations and is attained within 20% (so it is not slack)."""
    out = check()
    ratio = next(v for k, v in out.items() if k.startswith("max_"))
    assert 0.8 <= ratio <= 1.0


@pytest.mark.parametrize("check", [lb.check_mean_shift, lb.check_cov_shift, lb.check_slope_shift, lb.check_sd_ratio])
def test_a_wrong_inequality_is_caught(check):
    """The check can fail: claiming a bound 0.7 times the one proved (e.g. dropping 1 / (1 - delta), or
    the 1/2 of the midpoint, the wrong way) raises ProofCheckFailed."""
    with pytest.raises(ProofCheckFailed):
        check(factor=0.7)
