"""Sweep point probes for the engine's tests and benchmark (module-level, so worker processes can import them)."""
from __future__ import annotations

import time

__all__ = ["cpu_bound", "noisy_mean", "sleepy_square"]


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
