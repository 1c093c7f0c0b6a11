"""Point functions for sweeps (module-level, so worker processes can import them)."""
from __future__ import annotations

import time

__all__ = ["approx_error", "sleepy_square"]


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
