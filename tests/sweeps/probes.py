"""Sweep point probes for the engine's tests and benchmark (module-level, so worker processes can import them)."""
from __future__ import annotations

import os
import signal
import time

__all__ = ["chaos_point", "cpu_bound", "dies_first", "hangs", "logged_square", "noisy_mean", "sleepy_square"]


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


def _log(path: str | None, line: str) -> None:
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # O_APPEND: one atomic line per write, across processes
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def logged_square(x: float, delay: float = 0.0, log: str | None = None) -> dict:
    """x^2 after ``delay`` seconds; appends "x pid start|end" lines to ``log`` (who computed what, how often)."""
    _log(log, f"{x} {os.getpid()} start")
    if delay:
        time.sleep(delay)
    _log(log, f"{x} {os.getpid()} end")
    return {"y": x * x}


def dies_first(x: float, deaths: int, marker_dir: str) -> dict:
    """Kills its own worker with SIGKILL the first ``deaths`` times it runs (counted in marker files), then returns x^2."""
    seen = len(os.listdir(marker_dir)) if os.path.isdir(marker_dir) else 0
    mine = [f for f in os.listdir(marker_dir) if f.startswith(f"{x}-")] if seen else []
    if len(mine) < deaths:
        open(os.path.join(marker_dir, f"{x}-{len(mine)}"), "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": x * x}


def hangs(x: float, seconds: float = 3600.0) -> dict:
    """Sleeps ``seconds`` (a hung point) when x < 0; x^2 at once otherwise."""
    if x < 0:
        time.sleep(seconds)
    return {"y": x * x}


def chaos_point(i: int, delay: float, fate: str = "ok") -> dict:
    """The chaos test's point: after ``delay`` seconds, deterministic metrics (fate "ok"), a ValueError
    (fate "raise") or a SIGKILL of its own worker, every time (fate "die")."""
    time.sleep(delay)
    if fate == "raise":
        raise ValueError(f"i: expected a point that works, got {i} (fate 'raise')")
    if fate == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": i * i, "z": (i * 2654435761) % 2**32}
