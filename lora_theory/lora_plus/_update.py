"""The processed-gradient updates shared by the LoRA+ simulators: GD, SignSGD and Adam."""
from __future__ import annotations

import contextlib

import torch

_B1, _B2 = 0.9, 0.999
_EPS = 1e-12  # far below every gradient simulated: Adam's processed gradients stay Theta(1), as Thm 1 assumes


class Updater:
    """delta = -eta * processed(g) for one parameter; keeps Adam's moments between steps."""

    def __init__(self, optimizer: str, like: torch.Tensor) -> None:
        self.optimizer = optimizer
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)

    def __call__(self, g: torch.Tensor, eta: float, t: int) -> torch.Tensor:
        if self.optimizer == "gd":
            return -eta * g
        if self.optimizer == "signsgd":
            return -eta * torch.sign(g)
        self.m = _B1 * self.m + (1 - _B1) * g
        self.v = _B2 * self.v + (1 - _B2) * g**2
        return -eta * (self.m / (1 - _B1**t)) / ((self.v / (1 - _B2**t)).sqrt() + _EPS)  # bias-corrected Adam


#: set False to let the simulators use torch's intra-op threads (benchmarks/bench_lora_plus.py compares)
SINGLE_THREAD = True


@contextlib.contextmanager
def one_thread():
    """Run torch single-threaded inside the block (and restore the setting after).

    The simulators apply a few elementwise ops to tensors of at most 3 x 4 x 2^14 entries per
    step: intra-op threads only add synchronization, and when the cores are oversubscribed their
    spin-waits made the benchmark sweep 20x slower (measured: 0.04 s vs 0.94 s for one toy sweep).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1 if SINGLE_THREAD else n)
    try:
        yield
    finally:
        torch.set_num_threads(n)
