"""Synthetic runs of the masked-token experiment in the layout of ``lora_theory.finetune.mlm.mlm_experiment`` (tests of the claims).

Curve of a run: L(s) = end + (L0 - end) exp(-s / tau) + noise; a method twice as fast has half the tau.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lora_theory.finetune.mlm import MLMConfig, runs_table

STEPS = list(range(0, 81, 10))
CFG = MLMConfig("synthetic", steps=80, seeds=(0, 1, 2, 3, 4, 5, 6), ratios=(1.0, 4.0, 16.0, 64.0, 256.0), warmup=0)
LRS = {"full": 3e-4, "lora": 1e-3, "lora_ga": 3e-4, "lora_plus": 1e-3}


def run(method: str, seed: int, *, tau: float, end: float, lr: float, L0: float = 6.7, noise: float = 0.005, test_loss: float | None = None,
        test_acc: float = 0.2, init_steps: int = 0, init_cpu: float = 0.0, step_cpu: float = 0.5, rng=None, **extra) -> dict:
    rng = rng or np.random.default_rng(seed)
    vals = [end + (L0 - end) * math.exp(-s / tau) + noise * rng.standard_normal() for s in STEPS]
    row = {"task": "cpython_mlm", "method": method, "lr": lr, "seed": seed, "r": 8, "curve_step": STEPS, "curve_val": vals,
           "curve_cpu": [step_cpu * s for s in STEPS], "init_steps": init_steps, "init_cpu": init_cpu, "step_cpu": step_cpu,
           "val_loss": vals[-1], "test_loss": vals[-1] if test_loss is None else test_loss, "test_metric": test_acc, "diverged": False,
           "ga_source": None, "scale": "stable" if method == "lora_ga" else None, "direction": "ArB2r" if method == "lora_ga" else None,
           "ratio": 16.0 if method == "lora_plus" else None}
    row.update(extra)
    row["_hash"] = f"{method}-{seed}-{lr}-{sorted((k, str(v)) for k, v in extra.items())}"
    return row


def experiment(arms: dict[str, dict], seeds=(1, 2, 3, 4, 5, 6), jitter: float = 0.05) -> dict:
    """{"runs", "lrs", "edge", "cfg"} with one run per arm and seed; ``arms[name]`` = run() keyword arguments (tau, end, ...)."""
    rng = np.random.default_rng(0)
    rows = []
    for name, base in arms.items():
        for s in seeds:
            kw = dict(base)
            method = kw.pop("method", name)
            lr = kw.pop("lr", LRS.get(method, 1e-3))
            tau = kw.pop("tau") * (1 + jitter * rng.standard_normal())
            test = kw.pop("test_loss", None)
            test = None if test is None else test + 0.003 * rng.standard_normal()
            acc = kw.pop("test_acc", 0.2) + 0.001 * rng.standard_normal()
            rows.append(run(method, s, tau=tau, lr=lr, test_loss=test, test_acc=acc, rng=rng, **kw))
    runs = runs_table(pd.DataFrame(rows))
    runs["tuning"] = False
    return {"runs": runs, "lrs": dict(LRS), "edge": {m: False for m in LRS}, "cfg": CFG}
