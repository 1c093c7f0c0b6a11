"""Synthetic stored runs in the layout of ``lora_theory.finetune.protocol.run_point`` (for tests of the statistics and claims).

Curve of a run: L(s) = L0 - (L0 - L_end) (1 - exp(-s / tau)); a method twice as fast has half the tau.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

STEPS = list(range(41))


def run(task: str, method: str, lr: float, seed: int, *, tau: float, end: float, L0: float = 1.0, test: float | None = None,
        init_steps: int = 0, init_cpu: float = 0.0, step_cpu: float = 0.1, metric: str = "mse", **extra) -> dict:
    vals = [L0 - (L0 - end) * (1 - math.exp(-s / tau)) for s in STEPS]
    return {"task": task, "method": method, "lr": lr, "seed": seed, "curve_step": STEPS, "curve_val": vals,
            "curve_cpu": [step_cpu * s for s in STEPS], "init_steps": init_steps, "init_cpu": init_cpu, "step_cpu": step_cpu,
            "val_loss": vals[-1], "val_metric": math.nan, "test_loss": vals[-1], "test_metric": vals[-1] if test is None else test,
            "diverged": False, "metric": metric, **extra}


def main_runs(taus: dict[str, float], *, tasks=("vader_valence", "vader_polarity"), seeds=(0, 1, 2), jitter: float = 0.03,
              tests: dict[str, float] | None = None, lr_grid: dict[str, tuple[float, ...]] | None = None,
              ends: dict[str, float] | None = None) -> pd.DataFrame:
    """Every task x method x lr x seed; the lr 1e-4 runs follow ``taus``, other lrs are slower (tau x 3)."""
    from lora_theory.finetune.experiment import LR_GRID

    grid = lr_grid or LR_GRID
    rng = np.random.default_rng(0)
    rows = []
    for task in tasks:
        for method, tau in taus.items():
            for lr in grid[method]:
                for seed in seeds:
                    t = tau * (1 if math.isclose(lr, 1e-4) else 3) * (1 + jitter * rng.standard_normal())
                    test = None if tests is None else tests[method] + 0.001 * rng.standard_normal()
                    rows.append(run(task, method, lr, seed, tau=t, end=(ends or {}).get(method, 0.5), test=test, init_steps=4 if method == "lora_ga" else 0,
                                    init_cpu=0.8 if method == "lora_ga" else 0.0, ratio=16.0 if method == "lora_plus" else None,
                                    metric="accuracy" if task == "vader_polarity" else "mse"))
    return pd.DataFrame(rows)
