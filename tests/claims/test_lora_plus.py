"""Tests for lora_theory.claims.lora_plus: the checks hold, and fail loudly with wrong exponents.

Claims ``lora_plus.prop1``, ``lora_plus.prop2``, ``lora_plus.thm1``, ``lora_plus.ratio`` (its verdicts on
synthetic grids: it can fail and it can be inconclusive).
"""
from __future__ import annotations

from fractions import Fraction

import pytest

from lora_theory.claims import get_claim
from lora_theory.claims.lora_plus import PROP1_CONFIGS, PROP2_CONFIGS, THM1_CONFIGS, check_configs


@pytest.mark.parametrize("cid", ["lora_plus.prop1", "lora_plus.prop2", "lora_plus.thm1"])
def test_scaling_claims_hold_quick(cid):
    m = get_claim(cid).check(True)
    assert m.holds, m.summary
    assert "mismatches" not in m.summary


def _half_shift(cfg):
    opt, init, a, b = cfg
    return opt, init, Fraction(str(a)) + Fraction(1, 2), Fraction(str(b)) - Fraction(1, 2)


def _swap_rates(cfg):
    """eta_A <-> eta_B exponents (LoRA+ read backwards); equal-rate configurations get LoRA+ rates."""
    opt, init, a, b = cfg
    return (opt, init, b, a) if str(a) != str(b) else (opt, init, -1, 0)


def _other_init(cfg):
    opt, init, a, b = cfg
    return opt, 3 - init, a, b


def _gd_vs_adam(cfg):
    opt, init, a, b = cfg
    return ("adam" if opt == "gd" else "gd"), init, a, b


@pytest.mark.parametrize("name,configs", [("prop1", PROP1_CONFIGS), ("prop2", PROP2_CONFIGS), ("thm1", THM1_CONFIGS)])
@pytest.mark.parametrize("wrong", [_half_shift, _swap_rates, _other_init])
def test_wrong_exponents_fail_the_claim_check_loudly(name, configs, wrong):
    """Every claim configuration, compared with a wrong prediction: the check says 'fails' and names mismatches."""
    from lora_theory.claims.lora_plus import _summary

    for cfg in configs:
        ok, table = check_configs([cfg], quick=True, predict_with=wrong)
        assert not ok, (name, cfg, wrong.__name__)
        assert "mismatches" in _summary(table)


def test_lora_plus_rates_give_the_same_exponents_for_gd_and_adam():
    """Not a wrong prediction: at eta_A = Theta(1/n), eta_B = Theta(1) the GD (Prop. 2) and Adam-type (Thm 1) recursions coincide."""
    ok, _ = check_configs(PROP2_CONFIGS, quick=True, predict_with=_gd_vs_adam)
    assert ok


def _fake_grid(best_at):
    """A ratio_grid table on a 4 x 4 grid whose test loss is smallest at (eta_A, eta_B) = best_at, rising with log-distance from it."""
    import numpy as np
    import pandas as pd

    etas = (1e-3, 1e-2, 1e-1, 1.0)
    rows = [{"eta_A": a, "eta_B": b, "ratio": b / a, "train_loss": 0.0,
             "test_loss": 0.01 * (1 + abs(np.log10(a / best_at[0])) + abs(np.log10(b / best_at[1])))} for a in etas for b in etas]
    return lambda *args, **kw: pd.DataFrame(rows)


@pytest.mark.parametrize("best_at,verdict", [((1e-2, 1e-1), "holds"),  # ratio 10, one decade from the diagonal: 2x better than any eta_B <= eta_A
                                             ((1e-1, 1e-1), "fails"),  # on the diagonal: ratio 1
                                             ((1e-1, 1e-2), "fails"),  # LoRA+ read backwards
                                             ((1e-3, 1.0), "inconclusive")])  # at the grid's corner: the optimum may lie outside
def test_ratio_claim_verdicts_on_synthetic_grids(monkeypatch, best_at, verdict):
    """lora_plus.ratio decides from the grid: a wrong optimum fails, an optimum on the edge is inconclusive (the check can fail)."""
    from lora_theory.lora_plus import ratio

    monkeypatch.setattr(ratio, "ratio_grid", _fake_grid(best_at))
    m = get_claim("lora_plus.ratio").check(True)
    assert m.verdict == verdict, m.summary
    assert m.figures["best_eta_A"] == best_at[0] and m.figures["best_eta_B"] == best_at[1]
    assert m.margins["best_ratio"].measured == pytest.approx(best_at[1] / best_at[0])


def test_ratio_claim_gap_needs_ten_percent():
    """An optimum off the diagonal by a hair (the best eta_B <= eta_A run within 10%) is not enough: fails."""
    import pandas as pd

    from lora_theory.lora_plus import ratio

    rows = [{"eta_A": a, "eta_B": b, "ratio": b / a, "train_loss": 0.0, "test_loss": 1.0} for a in (1e-2, 1e-1) for b in (1e-2, 1e-1, 1.0)]
    rows[2]["test_loss"] = 0.95  # best: (eta_A, eta_B) = (1e-2, 1.0), ratio 100 ...
    rows[4]["test_loss"] = 0.99  # ... but the equal-rate run (1e-1, 1e-1) is only 4% worse
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ratio, "ratio_grid", lambda *a, **k: pd.DataFrame(rows))
        m = get_claim("lora_plus.ratio").check(True)
    assert m.verdict == "fails" and m.margins["gap_to_best_with_eta_B_le_eta_A"].measured < 1.1
