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
from .instance import AttentionLoRAInstance, make_instance
from .plan import CostModel, _cache_path, _machine_key

__all__ = ["calibrate_cost_model", "clear_fit_caches", "shaped_instance"]


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


def shaped_instance(L: int, d: int, *, n: int | None = None, heads: int = 0, causal: bool = False, bound: float = 1.0, r: int = 2,
                    seed: int = 1, device: str = "cpu") -> AttentionLoRAInstance:
    """A random self-attention instance of any path the plan models: X (L, n), W* (n, d) (n != d), ``heads`` heads over
    one sequence (W*, A, Y per head, B shared), causal; Q and K scaled so that their largest entry is ``bound``."""
    n = d if n is None else n
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(device)

    lead = (heads,) if heads else ()
    X = rnd(L, n)
    r = min(r, n, d)
    W = {mu: rnd(*lead, n, d, std=n**-0.5) for mu in "qkv"}
    A = {mu: rnd(*lead, r, d, std=0.5) for mu in "qkv"}
    B = {mu: rnd(n, r, std=0.5) for mu in "qkv"}
    inst = AttentionLoRAInstance(X, X, X, W["q"], W["k"], W["v"], A, B, float(r), r, 1.0 / d, rnd(*lead, L, d), "self", causal)
    Q, K, _ = inst.projections()
    s = bound / max(float(Q.abs().max()), float(K.abs().max()))
    return inst.replace(Wq=inst.Wq * s, Wk=inst.Wk * s, B={mu: (v * s if mu in "qk" else v) for mu, v in inst.B.items()})


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
        # and every path the plan models: n != d (the bound's quadratic forms), causal (blocks of <= 128 rows), heads at once
        for L, d, bound, n, heads, causal in ((16384, 2, 1.0, None, 0, False), (8192, 4, 1.0, None, 0, False), (2048, 2, 2.0, None, 0, False),
                                              (4096, 8, 1.5, None, 0, False), (1024, 8, 2.5, None, 0, False), (2048, 6, 1.5, None, 0, False),
                                              (512, 4, 3.0, None, 0, False), (4096, 3, 2.0, None, 0, False), (4096, 2, 1.0, None, 0, True),
                                              (2048, 4, 1.0, None, 0, True), (256, 4, 0.5, 32, 0, False), (128, 2, 0.5, 24, 0, True), (64, 16, 0.05, 64, 0, False),
                                              (128, 8, 0.1, 48, 0, False),
                                              (2048, 4, 1.0, None, 6, False), (1024, 2, 1.0, None, 4, True)):
            inst = shaped_instance(L, d, n=n, heads=heads, causal=causal, bound=bound, device=device)
            _, info = approx_gradients(inst, eps=1e-3, on_invalid="flag")
            rows_a.append(CostModel.approx_terms(L, d, info.rank, info.degree, inst.n, n=inst.n, causal=causal, batch=max(heads, 1)))
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
