"""Tests of lora_theory.limits.scaling: the cost sweep and its fits (claims limits.thm3.1, limits.thmA.1 part (a); figure runtime_scaling)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lora_theory._validate import InvalidArgumentError
from lora_theory.limits import scaling


@pytest.mark.parametrize("e", [1.0, 1.3, 2.0])
def test_fixed_rank_exponent_recovers_the_exponent(e):
    L = np.repeat(2.0 ** np.arange(10, 17), 2)
    k = np.tile([70.0, 495.0], 7)
    t = 3e-3 + np.where(k == 70, 1e-9, 6e-9) * L**e
    got, a = scaling.fixed_rank_exponent(L, k, t)
    assert got == pytest.approx(e, abs=0.01) and a == pytest.approx(3e-3, rel=0.05)


def test_fixed_rank_exponent_needs_three_lengths():
    with pytest.raises(InvalidArgumentError):
        scaling.fixed_rank_exponent([1, 2, 1, 2], [1, 1, 2, 2], [1.0, 2.0, 1.0, 2.0])


def test_fit_cost_form_recovers_constants():
    df = pd.DataFrame({"L": [1024.0, 4096.0, 16384.0, 4096.0, 65536.0], "flops": [1e7, 4e7, 2e8, 5e8, 1e9]})
    df["cpu_seconds"] = 2e-3 + 1e-6 * df.L + 3e-10 * df.flops
    a, b, c = scaling.fit_cost_form(df)
    assert (a, b, c) == pytest.approx((2e-3, 1e-6, 3e-10), rel=1e-6)


def test_cost_sweep_rows():
    df = scaling.cost_sweep([(256, 2, 2), (512, 2, 2)], rounds=1)
    assert list(df.k) == [6, 6] and (df.cpu_seconds > 0).all() and (df.flops > 0).all()
    assert len(scaling.cost_grid(True)) == 14
