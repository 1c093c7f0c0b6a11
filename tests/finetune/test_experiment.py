"""The experiment's tables (lora_theory.finetune.experiment): protocols, target, steps to target, premise.

Synthetic stored runs (tests/finetune/synthetic.py) with known speeds, so every number has a closed form.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from lora_theory.finetune import experiment as ft
from tests.finetune.synthetic import main_runs


def test_tuned_lr_is_the_grid_point_with_the_lowest_median_final_loss():
    runs = main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10})
    lrs = ft.tuned_lrs(runs)
    assert set(lrs.values()) == {1e-4}  # the other lrs are 3x slower: higher final loss
    runs.loc[(runs.method == "lora") & np.isclose(runs.lr, 3e-4), "curve_val"] = runs.loc[
        (runs.method == "lora") & np.isclose(runs.lr, 3e-4), "curve_val"].map(lambda v: [x - 0.2 for x in v])
    assert ft.tuned_lrs(runs)[("vader_valence", "lora")] == 3e-4


def test_target_and_steps_match_the_closed_form():
    """target = L0 - 0.5 (L0 - L_full_best); the crossing of 1 - 0.5 (1 - e^{-s/tau}) at level t is s = -tau ln(1 - (1 - t)/0.5).

    Fails if the target uses the final instead of the best loss of full FT in a non-monotone case, if the
    fraction is applied to the wrong side, or if LoRA-GA's gradient batches are not charged.
    """
    runs = main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10}, jitter=0.0)
    tab = ft.method_table(runs)
    t = tab[(tab.task == "vader_valence") & (tab.protocol == "tuned")]
    L_full = 1 - 0.5 * (1 - math.exp(-40 / 5))
    target = 1 - 0.5 * (1 - L_full)
    assert t.target.iloc[0] == pytest.approx(target)
    for method, tau in {"full": 5, "lora": 20, "lora_ga": 8}.items():
        exact = -tau * math.log(1 - (1 - target) / 0.5)
        row = t[t.method == method].iloc[0]
        assert row.steps == pytest.approx(exact, rel=0.01)  # linear interpolation between evaluations every step
        assert row.steps_charged == row.steps + (4 if method == "lora_ga" else 0)
        assert row.cpu_charged == pytest.approx(0.1 * row.steps + (0.8 if method == "lora_ga" else 0), rel=1e-9)


def test_paper_protocol_uses_the_papers_lr_and_tuned_uses_the_best():
    runs = main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10})
    tab = ft.method_table(runs)
    assert np.allclose(tab[tab.protocol == "paper"].lr, 1e-4)
    assert len(tab) == 2 * 2 * 4 * 3  # tasks x protocols x methods x seeds


def test_premise_uses_the_decision_rule():
    """VADER premise via stats.decide: full FT (tau 5) 4x faster than LoRA (tau 20) on 6 seeds holds; equal speeds never hold."""
    runs = main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10}, seeds=tuple(range(7)))
    prem = ft.premise_table(runs)
    assert prem.premise.all() and (prem.false_holds <= 0.05).all()
    runs = main_runs({"full": 20, "lora": 20, "lora_ga": 8, "lora_plus": 10}, seeds=tuple(range(7)))
    assert not ft.premise_table(runs).premise.any()


def test_paired_speedup_is_per_seed():
    runs = main_runs({"full": 5, "lora": 20, "lora_ga": 5, "lora_plus": 10}, jitter=0.0)
    sp = ft.paired(ft.method_table(runs), "lora", "full", "steps")
    assert len(sp) == 2 * 2 * 3 and np.allclose(sp.value, sp.value.iloc[0]) and sp.value.iloc[0] == pytest.approx(4.0, rel=0.1)


def test_experiment_rejects_unknown_parts_and_tasks(tmp_path):
    with pytest.raises(ValueError, match="parts"):
        ft.experiment(True, ("mian",), store=tmp_path / "s.sqlite")
    with pytest.raises(ValueError, match="tasks"):
        ft.experiment(True, ("main",), store=tmp_path / "s.sqlite", tasks=("sst2",))
