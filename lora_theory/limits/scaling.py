"""Measured cost of the polynomial method against its operation count: t(L, k, d) = a + b L + c approx_flops(L, d, k).

The almost-linear statements (Thm 3.1 / A.1) decompose as cost = c L k poly(d) times the rank the
theorem requires (:mod:`lora_theory.limits.asymptotics`). This module measures the first factor:
:func:`cost_sweep` times ``approx_gradients`` at a fixed degree (so a fixed rank k = C(g + d, d))
over a grid of (L, d, g), single-thread process CPU time, in interleaved rounds (a change of
machine load during the sweep meets every point alike) keeping each point's minimum;
:func:`fit_cost_form` fits the three machine constants (per call, per row, per counted
multiply-add of :func:`lora_theory.limits.plan.approx_flops`); :func:`fixed_rank_exponent` the
exponent e of t ~ a + b_k L^e shared by every k.

Reference: Hu et al. (2024), Thm 3.1 / A.1; claims ``limits.thm3.1``, ``limits.thmA.1``; figure
``runtime_scaling``.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from .._threads import torch_threads
from .._validate import InvalidArgumentError

__all__ = ["cost_grid", "cost_sweep", "fit_cost_form", "fixed_rank_exponent"]


def cost_grid(quick: bool) -> list[tuple[int, int, int]]:
    """(L, d, g) of ``limits.thm3.1``'s cost validation: d = 4 at fixed degrees over L = 2^10..2^14 (2^16 full), and d = 2, 8 (the poly(d) factor)."""
    Ls = [2**j for j in (range(10, 15) if quick else range(10, 17))]
    grid = [(L, 4, g) for g in ((8, 12) if quick else (4, 8, 12)) for L in Ls]
    return grid + [(L, d, 4) for d in (2, 8) for L in ((4096, 16384) if quick else (4096, 16384, 65536))]


def cost_sweep(grid, *, adapt: str = "qv", rounds: int = 5, bound: float = 2.0, seed: int = 0) -> pd.DataFrame:
    """CPU seconds of ``approx_gradients(inst, degree=g)`` per (L, d, g) of ``grid`` (one torch thread, min over ``rounds``).

    Instances: ``make_instance(L, d, 2, bound=bound, beta=1/d)`` (R <= bound^2: the bounded regime). Each timed
    run starts with cleared polynomial caches (the plan's cost model counts the fit, as its calibration does).

    Returns:
        Tidy DataFrame: L, d, degree, k, flops (= plan.approx_flops), plan_seconds (the plan's cost model), cpu_seconds.
    """
    from . import approx, plan  # module attributes: a control corrupting them reaches this sweep
    from .calibration import clear_fit_caches
    from .instance import make_instance

    if rounds < 1:
        raise InvalidArgumentError(f"rounds: expected an integer >= 1, got {rounds}")
    model = plan.cost_model(threads=1)
    rows, runs = [], []
    with torch_threads(1):
        for L, d, g in grid:
            inst = make_instance(L, d, 2, adapt=adapt, bound=bound, beta=1.0 / d, seed=seed)
            _, info = approx.approx_gradients(inst, degree=g, on_invalid="flag")  # also the warm-up run
            runs.append(lambda inst=inst, g=g: approx.approx_gradients(inst, degree=g, on_invalid="flag"))
            rows.append({"L": L, "d": d, "degree": g, "k": info.rank, "flops": plan.approx_flops(L, d, info.rank),
                         "plan_seconds": plan.CostModel.approx_seconds(model, L, d, info.rank, g), "cpu_seconds": math.inf})
        for _ in range(rounds):
            for r, fn in zip(rows, runs, strict=True):
                clear_fit_caches()  # the cost model counts the polynomial fit, as its calibration does
                t0 = time.process_time()
                fn()
                r["cpu_seconds"] = min(r["cpu_seconds"], time.process_time() - t0)
    return pd.DataFrame(rows)


def fit_cost_form(df: pd.DataFrame) -> tuple[float, float, float]:
    """(a, b, c) >= 0 of cpu_seconds ~ a + b L + c flops (non-negative least squares in relative error)."""
    from scipy.optimize import nnls  # heavy

    t = df.cpu_seconds.to_numpy(float)
    X = np.stack([np.ones_like(t), df.L.to_numpy(float), df.flops.to_numpy(float)], axis=1)
    coef, _ = nnls(X / t[:, None], np.ones_like(t))
    return float(coef[0]), float(coef[1]), float(coef[2])


def fixed_rank_exponent(L, k, t) -> tuple[float, float]:
    """(e, a) of t ~ a + b_k L^e: one exponent of L shared by every rank k, a per-call constant a >= 0 and b_k >= 0 per k.

    Least squares in relative error, e on a 0.005 grid in [0.3, 3] (for each e the rest is a
    non-negative linear fit). The constant is the per-call work that does not grow with L (the
    polynomial fit, small tables); sharing e over the ranks makes it a property of L at fixed k,
    fitted on all the points at once.
    """
    from scipy.optimize import nnls  # heavy

    L, k, t = np.asarray(L, float), np.asarray(k, float), np.asarray(t, float)
    if len(set(L.tolist())) < 3:
        raise InvalidArgumentError(f"L: expected >= 3 distinct lengths, got {sorted(set(L.tolist()))}")
    ks = sorted(set(k.tolist()))
    best = (math.inf, 1.0, 0.0)
    for e in np.arange(0.3, 3.0001, 0.005):
        x = (L / L.max()) ** e  # scaled: well conditioned
        X = np.stack([np.ones_like(L)] + [np.where(k == kk, x, 0.0) for kk in ks], axis=1) / t[:, None]
        coef, res = nnls(X, np.ones_like(t))
        if res < best[0]:
            best = (res, float(e), float(coef[0]))
    return best[1], best[2]
