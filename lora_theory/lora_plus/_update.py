"""The processed-gradient updates shared by the LoRA+ simulators: GD, SignSGD and Adam."""
from __future__ import annotations

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
