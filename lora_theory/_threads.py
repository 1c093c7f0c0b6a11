"""torch intra-op threads for a block of code: the one helper that sets and restores them."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: leave them) and restore the count after.

    Used for single-thread CPU-time measurements (a time exponent must not change when other work
    shares the cores) and for simulators of tiny tensors, where intra-op threads only add
    synchronization (see ``lora_theory.lora_plus._update``).
    """
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
