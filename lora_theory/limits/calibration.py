"""Calibrating the cost model: seconds = coefficients x operation counts, fitted by timing small runs here.

:class:`lora_theory.limits.plan.CostModel` predicts seconds from the operation counts of
``approx_gradients`` and ``exact_gradients``; its coefficients come from :func:`calibrate_cost_model`,
which times both methods on a few small instances and fits them by non-negative least squares on
relative error. Calibration runs the methods the plan describes, so it is the one module that depends
on both (plan <- approx <- calibration): ``plan`` only reads the stored fit (:func:`plan.cost_model`).

Reference: Hu et al. (2024), Sec. 5 (the costs compared); claims ``limits.thm3.1``, ``limits.thmA.1``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import torch

from .._validate import check_int
from .approx import approx_gradients
from .exact import exact_gradients
from .instance import make_instance
from .plan import CostModel, _cache_path, _machine_key

__all__ = ["calibrate_cost_model", "clear_fit_caches"]


def _fit_nonneg(X: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error (each row divided by its measurement)."""
    from scipy.optimize import nnls  # heavy

    coef, _ = nnls(X / t[:, None], np.ones_like(t))
    return coef


def clear_fit_caches() -> None:
    """Forget fitted polynomials, so that a timed call pays its fit like a user's first call does."""
    from . import polynomial

    polynomial._fit.cache_clear()
    polynomial._range_table.cache_clear()


def calibrate_cost_model(*, threads: int = 1, device: str = "cpu", save: bool = True, repeats: int = 2) -> CostModel:
    """Time small runs of ``approx_gradients`` and ``exact_gradients`` and fit :class:`CostModel` (~5-10 s).

    CPU runs are timed with the process CPU clock on ``threads`` torch threads (robust to other work
    on shared cores); CUDA runs with synchronized wall time. Each approx run starts with cleared
    polynomial caches (its fit is part of its cost). With ``save``, the fit is stored in
    ``$LORA_THEORY_CACHE`` or ``~/.cache/lora_theory/cost_model.json``, keyed by machine, torch
    version, device and threads, where :func:`lora_theory.limits.plan.cost_model` finds it.
    """
    from .._threads import torch_threads

    threads = check_int("threads", threads, low=1)
    cuda = device.startswith("cuda")
    tick = time.perf_counter if cuda else time.process_time
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def best(fn, clear: bool = False) -> float:
        fn()
        sync()
        out = math.inf
        for _ in range(repeats):
            if clear:
                clear_fit_caches()
            t0 = tick()
            fn()
            sync()
            out = min(out, tick() - t0)
        return max(out, 1e-6)

    rows_a, ta, rows_e, te = [], [], [], []
    with torch_threads(threads):
        # small k at large L (per-row work), large k at small L (the contractions), several d
        for L, d, bound in ((16384, 2, 1.0), (8192, 4, 1.0), (2048, 2, 2.0), (4096, 8, 1.5), (1024, 8, 2.5), (2048, 6, 1.5), (512, 4, 3.0), (4096, 3, 2.0)):
            inst = make_instance(L, d, 2, adapt="qkv", bound=bound, beta=1.0 / d, seed=1, device=device)
            _, info = approx_gradients(inst, eps=1e-3, on_invalid="flag")
            rows_a.append(CostModel.approx_terms(L, d, info.rank, info.degree))
            ta.append(best(lambda inst=inst: approx_gradients(inst, eps=1e-3, on_invalid="flag"), clear=True))
        for L, d in ((256, 2), (1024, 2), (2048, 8), (512, 8), (4096, 4), (1024, 16)):
            inst = make_instance(L, d, 2, adapt="qkv", seed=1, device=device)
            rows_e.append(CostModel.exact_terms(L, d))
            te.append(best(lambda inst=inst: exact_gradients(inst)))
    a = _fit_nonneg(np.array(rows_a), np.array(ta))
    e = _fit_nonneg(np.array(rows_e), np.array(te))
    model = CostModel(*map(float, a), *map(float, e), threads=threads, device=device, source="calibrated")
    if save:
        path = _cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(path.read_text()) if path.exists() else {}
            data[_machine_key(threads, device)] = dataclasses.asdict(model)
            path.write_text(json.dumps(data, indent=2))
        except (OSError, ValueError):  # an unwritable cache or a corrupt file: keep the in-memory model
            pass
    return model
