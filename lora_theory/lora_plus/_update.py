"""The processed-gradient updates shared by the LoRA+ simulators (GD, SignSGD, Adam) and their argument checks."""
from __future__ import annotations

import numbers

import torch

from .._threads import torch_threads
from .._validate import InvalidArgumentError, check_choice

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


def one_thread():
    """Run torch single-threaded inside the block (unless SINGLE_THREAD is False); a decorator too.

    The simulators apply a few elementwise ops to tensors of at most 3 x 4 x 2^14 entries per
    step: intra-op threads only add synchronization, and when the cores are oversubscribed their
    spin-waits made the benchmark sweep 20x slower (measured: 0.04 s vs 0.94 s for one toy sweep).
    """
    return torch_threads(1 if SINGLE_THREAD else None)


OPTIMIZERS = ("gd", "signsgd", "adam")


def check_optimizer_init(optimizer: str, init: int) -> None:
    """The simulators' and recursions' shared arguments: optimizer in OPTIMIZERS, init 1 or 2."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if isinstance(init, bool) or not isinstance(init, numbers.Integral) or init not in (1, 2):  # a tensor or array has no truth value
        raise InvalidArgumentError(f"init: expected 1 (B = 0, A random) or 2 (B random, A = 0), got {init!r}")
