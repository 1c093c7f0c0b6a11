"""Tests for lora_theory.pretrain.experiment: tiny pretraining and fine-tuning points, resumability of the sweep."""
from __future__ import annotations

import pytest

from lora_theory.pretrain import experiment as ex


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_THEORY_POC_STORE", str(tmp_path / "poc.sqlite"))
    cfg = ex.Config("t", pre_steps=4, log_every=2, pre_batch=2, ft_Ls=(256,), ft_windows=2, ft_epochs=1, val_windows=1)
    monkeypatch.setattr(ex, "QUICK", cfg)
    return cfg


@pytest.mark.slow
def test_experiment_runs_and_resumes(tiny):
    """Both models pretrain and fine-tune on both paths; a second call reads the stored points (no recomputation)."""
    res = ex.experiment(quick=True)
    table = ex.summary_table(res)
    assert set(table.model) == {"standard", "controlled"} and set(table["mode"]) == {"auto", "exact"}
    assert (table[table["mode"] == "exact"].fast_forward_share == 0).all()
    assert table.final_val_loss.notna().all()
    calls = []
    orig = ex.finetune_point
    ex.finetune_point = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        again = ex.experiment(quick=True)
    finally:
        ex.finetune_point = orig
    assert not calls and len(again["finetune"]) == len(res["finetune"])


@pytest.mark.slow
def test_exact_and_auto_see_the_same_start(tiny):
    """The validation loss before fine-tuning is the same pretrained model's on both paths (same cached weights)."""
    res = ex.experiment(quick=True)
    ft = res["finetune"]
    for kind in ex.KINDS:
        v = ft[ft.kind == kind].val_loss_start
        assert v.max() - v.min() < 1e-6
