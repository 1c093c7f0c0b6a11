"""A minimal LoRA layer for plain torch models: y = W0 x + b + eta B (A x), eta = alpha / r.

PEFT's conventions and parameter names: the frozen base ``nn.Linear`` keeps W0 (m, n) and bias;
``lora_A`` (r, n) and ``lora_B`` (m, r) are the trainable factors; ``eta`` = alpha / r, or
alpha / sqrt(r) with rsLoRA. Parameter names contain ``lora_A`` / ``lora_B`` as in PEFT, so the
toolkit's LoRA-GA initialization and LoRA+ parameter groups treat both the same way.

Inits: ``"lora"`` (Init[1] of LoRA+: B = 0, A ~ U(-1/sqrt(n), 1/sqrt(n)), PEFT's default
family), ``"init2"`` (Init[2]: A = 0, B ~ N(0, 1), so B = Theta(1)), ``"gaussian"``
(B = 0, A ~ N(0, 1/r)), ``"none"`` (leave as allocated: zeros, for an external initializer).

Reference: Hu et al. (2021), LoRA; Kalajdzievski (2023), rsLoRA; PEFT ``tuners/lora``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Literal

import torch
from torch import nn

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive

__all__ = ["LoRALinear", "add_lora", "lora_modules", "lora_parameters", "merge_lora"]

Init = Literal["lora", "init2", "gaussian", "none"]


class LoRALinear(nn.Module):
    """y = base(x) + eta * (x A^T) B^T with base frozen; A (r, n), B (m, r), eta = alpha/r (or /sqrt(r))."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, *, rslora: bool = False, init: Init = "lora",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise InvalidArgumentError(f"base: expected an nn.Linear, got {type(base).__name__}")
        m, n = base.out_features, base.in_features
        r = check_int("r", r, low=1, high=min(m, n))
        self.alpha = check_positive("alpha", alpha)
        self.r = r
        self.rslora = bool(rslora)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        dd = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.zeros(r, n, **dd))
        self.lora_B = nn.Parameter(torch.zeros(m, r, **dd))
        self.reset_lora(init, generator=generator)

    @property
    def eta(self) -> float:
        """The LoRA multiplier: alpha / sqrt(r) with rsLoRA, else alpha / r."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @torch.no_grad()
    def reset_lora(self, init: Init = "lora", *, generator: torch.Generator | None = None) -> None:
        """(Re)initialize A and B; see the module docstring for the schemes."""
        check_choice("init", init, ("lora", "init2", "gaussian", "none"))
        n, r = self.in_features, self.r

        def rand(shape, std):  # draw in float32 on CPU from the generator, then move
            return (torch.randn(shape, generator=generator) * std).to(self.lora_A)

        if init == "lora":
            bound = 1.0 / math.sqrt(n)
            self.lora_A.copy_((torch.rand(self.lora_A.shape, generator=generator) * 2 - 1).mul_(bound).to(self.lora_A))
            self.lora_B.zero_()
        elif init == "gaussian":
            self.lora_A.copy_(rand(self.lora_A.shape, 1.0 / r))
            self.lora_B.zero_()
        elif init == "init2":
            self.lora_A.zero_()
            self.lora_B.copy_(rand(self.lora_B.shape, 1.0))
        # "none": leave the factors as they are

    def delta_weight(self) -> torch.Tensor:
        """eta B A, (m, n)."""
        return self.eta * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.eta * ((x @ self.lora_A.T) @ self.lora_B.T)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha:g}, rslora={self.rslora}"


def _matches(name: str, targets: Iterable[str] | str) -> bool:
    if isinstance(targets, str):  # a regex over the full module name, as in PEFT
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def add_lora(model: nn.Module, target_modules: Iterable[str] | str, r: int, alpha: float, *, rslora: bool = False,
             init: Init = "lora", seed: int | None = 0, freeze_base: bool = True) -> nn.Module:
    """Replace every ``nn.Linear`` whose name matches ``target_modules`` by a :class:`LoRALinear`, in place.

    Args:
        model: any torch module.
        target_modules: names or name suffixes (``["query", "value"]``), or a regex string over
            full module names, as PEFT's ``target_modules``.
        r, alpha, rslora, init: the adapter's rank, alpha, scaling rule and init.
        seed: seed of the adapters' init (one generator for all, in module order).
        freeze_base: freeze every parameter of the model that is not a LoRA factor.

    Returns:
        ``model`` (modified in place).

    Raises:
        ValueError: if no ``nn.Linear`` matches.
    """
    gen = torch.Generator().manual_seed(check_int("seed", seed, low=0)) if seed is not None else None
    if not isinstance(target_modules, str):
        try:
            names = list(target_modules)
        except TypeError:  # not iterable (a number, a 0-d tensor)
            names = None
        if names is None or not all(isinstance(t, str) for t in names):
            raise InvalidArgumentError(f"target_modules: expected a regex string or a list of module names, got {target_modules!r}")
        target_modules = names
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and _matches(name, target_modules)]
    if not targets:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise InvalidArgumentError(f"target_modules: expected to match at least one nn.Linear among {linear[:12]}{'...' if len(linear) > 12 else ''}, got {target_modules!r}")
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    for name, mod in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(mod, r, alpha, rslora=rslora, init=init, generator=gen))
    return model


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(name, module) for every :class:`LoRALinear` in ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, LoRALinear):
            yield name, mod


def lora_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) for every LoRA factor (names containing ``lora_A`` or ``lora_B``)."""
    for name, p in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            yield name, p


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold eta B A into W0 and put back plain ``nn.Linear`` layers, in place; returns ``model``."""
    for name, mod in list(lora_modules(model)):
        mod.base.weight += mod.delta_weight().to(mod.base.weight.dtype)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, mod.base)
    return model
