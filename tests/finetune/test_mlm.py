"""The masked-token task (lora_theory.finetune.data ``cpython_mlm``, tasks.MLMModel) and its experiment helpers (finetune.mlm)."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lora_theory.finetune import mlm
from lora_theory.finetune.data import MLM_SEQ_LEN, SPLITS, load_task, mlm_windows


@pytest.fixture(scope="module")
def splits():
    pytest.importorskip("transformers")
    return {s: load_task("cpython_mlm", s) for s in SPLITS}


def test_windows_are_fixed_disjoint_and_masked_at_15_percent(splits):
    """cpython_mlm: 32-token windows, >= 600 masked validation tokens, ~15 % masked, no window in two splits, same masks on reload."""
    val = splits["val"]
    assert val.input_ids.shape[1] == MLM_SEQ_LEN and val.n_masked >= 600
    total = sum(d.n_masked for d in splits.values())
    body = sum(len(d) for d in splits.values()) * (MLM_SEQ_LEN - 2)
    assert 0.13 < total / body < 0.17
    rows = {s: {tuple(r) for r in torch.where(d.labels != -100, d.labels, d.input_ids).tolist()} for s, d in splits.items()}
    assert not (rows["train"] & rows["val"]) and not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    again = load_task("cpython_mlm", "val")
    assert torch.equal(again.input_ids, val.input_ids) and torch.equal(again.labels, val.labels)
    assert (val.input_ids[val.labels != -100] == 103).all()  # every scored token is hidden behind [MASK]
    assert ((val.labels != -100).sum(1) >= 1).all()


def test_other_split_seed_gives_other_windows():
    pytest.importorskip("transformers")
    a, b = mlm_windows(0)["val"][0], mlm_windows(1)["val"][0]
    assert not torch.equal(a, b)


def test_mlm_model_scores_exactly_the_masked_positions():
    """MLMModel returns one logit row per masked token, aligned with labels[labels != -100]; the decoder is frozen and tied."""
    from torch import nn

    from lora_theory.finetune.tasks import MLMDecoder, MLMModel

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.Module()
            self.embeddings.word_embeddings = nn.Embedding(50, 8)

        def forward(self, input_ids, attention_mask):
            return type("O", (), {"last_hidden_state": self.embeddings.word_embeddings(input_ids)})()

    enc = Enc()
    m = MLMModel(enc, MLMDecoder(enc.embeddings.word_embeddings))
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    labels = torch.tensor([[-100, 9, -100, -100], [10, -100, -100, 11]])
    out = m({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    assert out.shape == (3, 50)
    assert m.decoder.E is enc.embeddings.word_embeddings
    assert not any(p.requires_grad for p in m.decoder.norm.parameters()) and not m.decoder.bias.requires_grad


def _row(vals, steps=(0, 10, 20, 30, 40), init=0):
    return pd.Series({"curve_step": list(steps), "curve_val": list(vals), "curve_cpu": [0.5 * s for s in steps], "init_steps": init, "init_cpu": 1.0})


def test_steps_to_uses_the_smoothed_curve_and_charges_init():
    """A single noisy dip below the target is not a crossing: the trailing 3-point mean must reach it."""
    r = _row([5.0, 3.9, 5.0, 4.0, 3.9], init=4)
    assert mlm.steps_to(r, 4.0, charged=False) > 30  # the dip at step 10 does not count
    assert mlm.steps_to(r, 4.0) == mlm.steps_to(r, 4.0, charged=False) + 4
    assert mlm.steps_to(r, 1.0, charged=False) == 40  # never reached: censored at the budget
    assert math.isinf(mlm.steps_to(r, 1.0, charged=False, budget_censor=False))


def test_tune_picks_the_lowest_smoothed_final_and_flags_the_edge():
    runs = pd.DataFrame({"lr": [1e-4, 3e-4, 1e-3], "final": [5.0, 4.5, 4.7]})
    assert mlm.tune(runs, "full", (1e-4, 3e-4, 1e-3)) == (3e-4, False)
    assert mlm.tune(runs.assign(final=[4.0, 4.5, 4.7]), "full", (1e-4, 3e-4, 1e-3)) == (1e-4, True)
    with pytest.raises(IndexError):
        mlm.tune(runs.iloc[:0], "full", (1e-4,))


def test_budgets_hold_at_least_five_verdict_seeds_in_full():
    assert len(mlm.MLM_FULL.verdict_seeds) >= 5 and mlm.MLM_FULL.steps >= 200
    assert mlm.MLM_FULL.ratios == tuple(2.0 ** k for k in range(9))
    assert len(mlm.MLM_QUICK.verdict_seeds) >= 5 and len(mlm.MLM_SMOKE.verdict_seeds) >= 5


def test_stored_only_runs_nothing_on_an_empty_store(tmp_path):
    """stored_only: nothing is computed; with no finished tuning run the later stages are left out."""
    out = mlm.mlm_experiment(mlm.MLM_SMOKE, store=tmp_path / "s.sqlite", stored_only=True)
    assert len(out["runs"]) == 0 and out["lrs"]["full"] == 3e-4  # one-point grids need no tuning run


def test_notes_sections_are_rendered_from_the_stored_csvs(tmp_path):
    """docs_sync rewrites the generated:finetune/* spans from figures/finetune_*.csv (one source for every number)."""
    from lora_theory import docs_sync

    (tmp_path / "figures").mkdir()

    pd.DataFrame([{"claim": "lora_ga.speedup", "block": "premise", "part": "full FT speed-up over LoRA r=8", "estimate": 1.61, "low": 1.4,
                   "high": 1.8, "threshold": 1.0, "sense": ">=", "part_verdict": "holds", "seeds_to_decide": None, "verdict": "holds",
                   "claim_verdict": "inconclusive", "n_seeds": 5, "false_holds": 0.031, "n_null": 32}]).to_csv(tmp_path / "figures" / "finetune_steps.csv", index=False)
    pd.DataFrame([{"arm": "full", "lr": 3e-4, "ratio": math.nan, "seed": 1, "step": s, "val_loss": 6.0, "smoothed": 6.0, "budget": "mlm-smoke",
                   "step_cpu": 0.5, "init_cpu": 0.0, "train_cpu": 40.0, "test_loss": 5.7, "test_acc": 0.17} for s in (0, 10)]).to_csv(
        tmp_path / "figures" / "finetune_curves.csv", index=False)
    notes = tmp_path / "n.md"
    notes.write_text("head\n<!-- generated:finetune/finetune_verdicts -->\nold\n<!-- /generated:finetune/finetune_verdicts -->\nmiddle\n"
                     "<!-- generated:finetune/finetune_runs -->\nx\n<!-- /generated:finetune/finetune_runs -->\n")
    text, found = docs_sync.spans(notes.read_text(), "n.md", docs_sync.Stored(tmp_path))
    assert any(s.old != s.new for s in found)
    assert "1.61 [1.4, 1.8]" in text and "3.1%" in text and "\nold\n" not in text and text.startswith("head\n") and "middle" in text
    again, found = docs_sync.spans(text, "n.md", docs_sync.Stored(tmp_path))
    assert again == text and all(s.old == s.new for s in found)  # idempotent


def test_ratio_grid_runs_coarse_first():
    """An interrupted ratio stage leaves a coarse grid over the whole range (2^0, 2^2, ..., 2^8), then fills in between."""
    assert mlm.ratio_order(mlm.MLM_FULL.ratios) == [2.0 ** k for k in (0, 2, 4, 6, 8, 1, 3, 5, 7)]
    assert sorted(mlm.ratio_order((16.0, 1.0, 256.0))) == [1.0, 16.0, 256.0]


def test_planned_runs_counts_the_points_the_budget_builds(monkeypatch, tmp_path):
    """planned_runs (the cost table's run count) equals the distinct points mlm_experiment asks for (fixed-lr budgets: no tuning runs)."""
    import pandas as pd

    from lora_theory.finetune import experiment as ex
    from lora_theory.sweeps import point_hash

    for cfg in (mlm.MLM_TINY, mlm.MLM_SMOKE):
        asked = set()

        def fake_run(points, cfg_, store, jobs, executor, progress, asked=asked):
            asked.update(point_hash(f"finetune-{cfg_.name}", p, 0) for p in points)
            return pd.DataFrame()

        monkeypatch.setattr(ex, "_run", fake_run)
        mlm.mlm_experiment(cfg, store=tmp_path / "s.sqlite", stored_only=False)
        assert len(asked) == mlm.planned_runs(cfg)["verdict"] and mlm.planned_runs(cfg)["tuning"] == 0, cfg.name


def test_speedup_pair_at_the_target_from_step_zero():
    """Both runs at the reference's final loss from step 0 (a curve that does not move): speed-up 1 in steps and CPU, no division by zero."""
    import pandas as pd

    flat = pd.Series({"curve_step": [0, 5, 10], "curve_val": [6.0, 6.1, 6.2], "curve_cpu": [0.0, 2.0, 4.0], "init_steps": 0, "init_cpu": 0.0,
                      "final": 6.1})
    assert mlm.speedup_pair(flat, flat)[2:] == (1.0, 1.0)
    never = flat.copy()
    never["curve_val"] = [7.0, 7.0, 7.0]
    assert mlm.speedup_pair(flat, never)[1:] == (math.inf, 0.0, 0.0)
