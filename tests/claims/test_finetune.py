"""The fine-tuning claims (lora_theory.claims.finetune): verdicts from intervals and the premise, on synthetic runs.

``experiment`` is replaced by synthetic stored runs with known speeds (tests/finetune/synthetic.py), so
each verdict has a known answer; the real runs are exercised by ``python -m lora_theory.finetune``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lora_theory.claims import finetune as cf
from lora_theory.claims import get_claim, run_check
from lora_theory.finetune import experiment as ft
from tests.finetune.synthetic import main_runs, run


def _fake(monkeypatch, main: pd.DataFrame, **parts: pd.DataFrame) -> None:
    monkeypatch.setattr(ft, "experiment", lambda quick, parts_=("main",), **kw: {"main": main, **parts})


@pytest.mark.parametrize("tau_ga, tau_lora, end_lora, expected", [
    (2.0, 20.0, 0.5, "holds"),         # LoRA-GA 10x faster than LoRA before its 4 charged steps, ~2.3x after; premise holds
    (18.0, 20.0, 0.5, "fails"),        # LoRA-GA barely faster, premise holds
    (2.0, 6.0, 0.49, "inconclusive"),  # premise fails (full FT only 1.2x LoRA, LoRA ends lower): no verdict
])
def test_speedup_verdicts_follow_intervals_and_premise(monkeypatch, tau_ga, tau_lora, end_lora, expected):
    """lora_ga.speedup: holds / fails from the bootstrap interval vs 2x; inconclusive when full FT does not clearly beat LoRA.

    Fails if the premise gate is dropped (the third case would say "holds") or if the charged steps are
    ignored in the wrong direction.
    """
    _fake(monkeypatch, main_runs({"full": 5, "lora": tau_lora, "lora_ga": tau_ga, "lora_plus": tau_lora}, ends={"lora": end_lora}))
    row = run_check("lora_ga.speedup")
    assert row["verdict"] == expected, row["summary"]
    assert "premise" in row["summary"] and set(row["figures"]) >= {"vader_valence/tuned", "vader_valence/premise"}


def test_lora_plus_speedup_threshold_is_1_5(monkeypatch):
    _fake(monkeypatch, main_runs({"full": 5, "lora": 20, "lora_ga": 20, "lora_plus": 12}))
    assert run_check("lora_plus.speedup")["verdict"] == "holds"  # 20/12 = 1.67 >= 1.5
    _fake(monkeypatch, main_runs({"full": 5, "lora": 20, "lora_ga": 20, "lora_plus": 16}))
    assert run_check("lora_plus.speedup")["verdict"] == "fails"  # 1.25 < 1.5


@pytest.mark.parametrize("ga_test, expected", [(0.95, "holds"), (0.80, "fails")])
def test_gap_closed_fraction(monkeypatch, ga_test, expected):
    """Test metric full 1.0, LoRA 0.7: LoRA-GA at 0.95 closes 83% of the gap (holds), at 0.80 33% (fails)."""
    _fake(monkeypatch, main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10},
                                 tests={"full": 1.0, "lora": 0.7, "lora_ga": ga_test, "lora_plus": 0.7}))
    row = run_check("lora_ga.gap_to_full")
    assert row["verdict"] == expected, row["summary"]
    med = row["figures"]["vader_valence"]["gap_closed"][0]
    assert med == pytest.approx((ga_test - 0.7) / 0.3, abs=0.02)


@pytest.mark.parametrize("gain, expected", [(0.015, "holds"), (0.002, "fails"), (0.01, None)])
def test_accuracy_gain_in_points(monkeypatch, gain, expected):
    """LoRA+ test accuracy - LoRA's, in percentage points, against the paper's lower end of 1 point."""
    main = main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10}, tests={"full": 0.9, "lora": 0.85, "lora_ga": 0.86, "lora_plus": 0.85 + gain})
    _fake(monkeypatch, main)
    row = run_check("lora_plus.accuracy_gain")
    if expected is None:  # within 0.1 point of the threshold with seed noise: either side, never an error
        assert row["verdict"] in ("holds", "fails", "inconclusive")
    else:
        assert row["verdict"] == expected, row["summary"]


def _ratio_runs(best: dict[int, float], ratios=(1.0, 4.0, 16.0, 64.0)) -> pd.DataFrame:
    rows = []
    for seed, b in best.items():
        for ratio in ratios:
            for lr in (3e-5, 1e-4):
                end = 0.3 + 0.05 * abs(math.log2(ratio) - math.log2(b)) + (0.01 if lr == 3e-5 else 0)
                rows.append(run("vader_polarity", "lora_plus", lr, seed, tau=5, end=end, ratio=ratio))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("best, expected", [({0: 16.0, 1: 16.0, 2: 4.0}, "holds"), ({0: 1.0, 1: 1.0, 2: 1.0}, "fails"),
                                            ({0: 1.0, 1: 16.0, 2: 64.0}, "inconclusive")])
def test_best_ratio_verdict(monkeypatch, best, expected):
    _fake(monkeypatch, main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10}), ratio=_ratio_runs(best))
    row = run_check("lora_plus.best_ratio")
    assert row["verdict"] == expected, row["summary"]
    assert row["figures"]["per_seed"] == [best[s] for s in sorted(best)]


def test_best_ratio_ties_go_to_the_smaller_ratio():
    """Under the control 'ratio_one' every ratio is plain LoRA: identical losses must pick ratio 1 (caught), not a random one."""
    runs = pd.DataFrame([run("vader_polarity", "lora_plus", 1e-4, 0, tau=5, end=0.3, ratio=r) for r in (64.0, 4.0, 1.0, 16.0)])
    assert cf.best_ratios(runs).tolist() == [1.0]


def _ablation(default_end: float) -> pd.DataFrame:
    rows = []
    for d, s in ft.ABLATIONS:
        for seed in range(3):
            end = default_end if (d, s) == ("ArB2r", "stable") else 0.5 + 0.002 * seed
            rows.append(run(ft.ABLATION_TASK, "lora_ga", 1e-4, seed, tau=8, end=end, direction=d, scale=s))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("default_end, expected", [(0.49, "holds"), (0.6, "fails")])
def test_ablation_verdict(monkeypatch, default_end, expected):
    """The default must not be beaten beyond the interval: at 0.6 every alternative (0.5) beats it in every seed."""
    _fake(monkeypatch, main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10}), ablation=_ablation(default_end))
    assert run_check("lora_ga.ablation")["verdict"] == expected


@pytest.mark.parametrize("init_cpu, expected", [(0.8, "holds"), (3.0, "fails")])
def test_init_cost_units(monkeypatch, init_cpu, expected):
    """Init CPU seconds / LoRA step CPU seconds (0.1 s) vs 10% of an epoch (5254 / 32 = 164 steps -> 16.4): 8 steps holds, 30 fails."""
    pytest.importorskip("vaderSentiment")  # the epoch is the training split's size
    main = main_runs({"full": 5, "lora": 20, "lora_ga": 8, "lora_plus": 10})
    main.loc[main.method == "lora_ga", "init_cpu"] = init_cpu
    _fake(monkeypatch, main)
    row = run_check("lora_ga.init_cost")
    assert row["verdict"] == expected, row["summary"]
    assert row["figures"]["init_in_lora_steps"][0] == pytest.approx(init_cpu / 0.1)


def test_every_finetune_claim_has_a_control():
    for cid in ("lora_ga.speedup", "lora_ga.gap_to_full", "lora_ga.ablation", "lora_ga.init_cost", "lora_plus.speedup",
                "lora_plus.accuracy_gain", "lora_plus.best_ratio"):
        assert get_claim(cid).controls, cid


def test_controls_change_the_code_fingerprint_of_exactly_their_methods():
    """A control must make its runs new sweep points (else the check reads the uncorrupted runs back and cannot catch it)."""
    from lora_theory.finetune.protocol import METHODS, code_fingerprint

    for cid, method in (("lora_ga.speedup", "lora_ga"), ("lora_ga.ablation", "lora_ga"), ("lora_ga.init_cost", "lora_ga"),
                        ("lora_plus.speedup", "lora_plus")):
        before = {m: code_fingerprint(m) for m in METHODS}
        with get_claim(cid).controls[0].apply():
            during = {m: code_fingerprint(m) for m in METHODS}
        assert {m for m in METHODS if before[m] != during[m]} == {method}, cid
        assert {m: code_fingerprint(m) for m in METHODS} == before


def test_controls_corrupt_what_they_claim():
    """plain_init leaves the LoRA init (no change of A, B or W0); ratio_one gives B the rate of A."""
    import torch
    from torch import nn

    from lora_theory.lora.layer import add_lora
    from lora_theory.lora_ga import model as ga_model
    from lora_theory.lora_plus import optim

    net = nn.Sequential(nn.Linear(6, 5))
    add_lora(net, ["0"], r=2, alpha=2.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with get_claim("lora_ga.speedup").controls[0].apply():
        ga_model.apply_lora_ga(net, {"0": torch.randn(5, 6)})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with get_claim("lora_plus.speedup").controls[0].apply():
        groups = optim.loraplus_param_groups(net, 1e-3, 16.0)
    assert {g["lr"] for g in groups} == {1e-3, 1e-6}
    assert np.isclose(optim.loraplus_param_groups(net, 1e-3, 16.0)[2]["lr"], 1.6e-2)
