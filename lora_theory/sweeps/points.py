"""Point functions for sweeps (module-level, so worker processes can import them)."""
from __future__ import annotations

import time

__all__ = ["approx_error", "cpu_bound", "noisy_mean", "sleepy_square"]


def approx_error(L: int, gamma: float, d: int = 4, degree: int = 8, kind: str = "random", seed: int = 0) -> dict:
    """Relative gradient error of approx_gradients at a fixed degree (one point of gradient_error_vs_bound)."""
    from ..phase import gradient_error_sweep

    row = gradient_error_sweep(Ls=(L,), gammas=(gamma,), kinds=(kind,), seeds=(seed,), d=d, degree=degree).iloc[0]
    return {"R": float(row.R), "rel_err": float(row.rel_err), "valid": bool(row.valid), "k": int(row.k)}


def sleepy_square(x: float, delay: float = 0.0) -> dict:
    """x^2 after ``delay`` seconds (for tests and the engine benchmark); raises for x < 0."""
    if delay:
        time.sleep(delay)
    if x < 0:
        raise ValueError(f"x: expected >= 0, got {x}")
    return {"y": x * x}


def noisy_mean(n: int, scale: float = 1.0) -> dict:
    """scale * mean of n draws from torch's global RNG (seeded per point by run_sweep): a determinism probe."""
    import torch

    x = scale * torch.randn(n, dtype=torch.float64)
    return {"mean": float(x.mean()), "first": float(x[0])}


def cpu_bound(i: int, work: int = 2_000_000) -> dict:
    """Pure-Python arithmetic (holds the GIL: processes help, threads would not); the pool benchmark's point."""
    s = 0
    for k in range(work):
        s += (k * i) % 7
    return {"s": s}
