"""The one place that finds LoRA layers in a model: W = W0 + s B A, for the toolkit's and PEFT's layers.

Every caller that needs a model's LoRA factors (LoRA-GA's init and audit, LoRA+'s optimizer
groups and coordinate check, the fine-tuning experiments) goes through :func:`find_lora_layers`,
so a new LoRA implementation is supported by teaching this module about it once.

Conventions (PEFT's): W0 (m, n) in the base ``nn.Linear``, A (r, n), B (m, r), s the scaling
(alpha / r, or alpha / sqrt(r) with rsLoRA); module names lose PEFT's ``base_model.model.``
prefix, so the same names work before and after wrapping a model with PEFT.

Reference: PEFT ``tuners/lora/layer.py`` (``lora_A``, ``lora_B``, ``scaling``, ``get_base_layer``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from .._validate import InvalidArgumentError
from .layer import LoRALinear, _matches

__all__ = ["LoRAHandle", "clean_name", "find_lora_layers", "lora_factors", "peft_lora_types", "target_linears"]


def peft_lora_types() -> tuple[type, ...]:
    """PEFT's LoRA ``Linear`` and ``Embedding`` layer classes, or () when PEFT is not installed."""
    try:
        from peft.tuners.lora.layer import Embedding, Linear  # optional dependency
    except ImportError:
        return ()
    return Linear, Embedding


def clean_name(name: str) -> str:
    """A module name without PEFT's ``base_model.model.`` prefix."""
    return name.removeprefix("base_model.model.")


@dataclass(frozen=True)
class LoRAHandle:
    """One LoRA layer: its (clean) name, the module, the live factors A (r, n) and B (m, r), s, r, W0's layer."""

    name: str
    module: nn.Module
    A: nn.Parameter
    B: nn.Parameter
    scaling: float
    r: int
    base: nn.Module
    kind: Literal["toolkit", "peft", "peft_embedding"]


def find_lora_layers(model: nn.Module, adapter: str | None = None, *, embeddings: bool = False) -> list[LoRAHandle]:
    """Every LoRA layer of ``model`` (toolkit :class:`LoRALinear` or PEFT ``lora.Linear``), in module order.

    Args:
        model: any torch module (plain, with toolkit adapters, or a PEFT model).
        adapter: PEFT adapter name; ``None`` takes each PEFT layer's first (active) adapter. A PEFT
            layer without the named adapter is an error (a typo must not silently select nothing).
        embeddings: include PEFT's LoRA embedding layers (A (r, vocab), B (dim, r) as
            ``lora_embedding_A`` / ``lora_embedding_B``).

    Returns:
        A list of :class:`LoRAHandle` (empty when the model has no LoRA layer).
    """
    peft_types = peft_lora_types()
    out: list[LoRAHandle] = []
    for name, mod in model.named_modules():
        if isinstance(mod, LoRALinear):
            out.append(LoRAHandle(clean_name(name), mod, mod.lora_A, mod.lora_B, float(mod.eta), mod.r, mod.base, "toolkit"))
            continue
        if not peft_types or not isinstance(mod, peft_types):
            continue
        is_emb = isinstance(mod, peft_types[1])
        if is_emb and not embeddings:
            continue
        factors_A = mod.lora_embedding_A if is_emb else mod.lora_A
        if not len(factors_A):
            continue
        key = next(iter(factors_A)) if adapter is None else adapter
        if key not in factors_A:
            raise InvalidArgumentError(f"adapter: expected one of {list(factors_A)} in {name}, got {adapter!r}")
        if is_emb:
            A, B = mod.lora_embedding_A[key], mod.lora_embedding_B[key]
        else:
            A, B = mod.lora_A[key].weight, mod.lora_B[key].weight
        out.append(LoRAHandle(clean_name(name), mod, A, B, float(mod.scaling[key]), int(mod.r[key]), mod.get_base_layer(),
                              "peft_embedding" if is_emb else "peft"))
    return out


def lora_factors(model: nn.Module, adapter: str | None = None) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """([A of every LoRA linear layer], [B of every LoRA linear layer]), for optimizer groups."""
    layers = find_lora_layers(model, adapter)
    if not layers:
        raise InvalidArgumentError("model: expected LoRA layers (add_lora or PEFT), found none")
    return [h.A for h in layers], [h.B for h in layers]


def target_linears(model: nn.Module, target_modules: Iterable[str] | str) -> dict[str, nn.Linear]:
    """{clean name: nn.Linear holding W0} for the targets; sees through toolkit and PEFT LoRA layers.

    A LoRA layer counts under its own name (its base layer's name, ``.base`` / ``.base_layer``,
    is skipped), so the same names work before and after wrapping.
    """
    layers = find_lora_layers(model)
    out: dict[str, nn.Linear] = {h.name: h.base for h in layers if isinstance(h.base, nn.Linear)}
    inside = tuple(h.name + "." for h in layers)  # a LoRA layer's own submodules (its base, PEFT's lora_A / lora_B)
    for name, mod in model.named_modules():
        clean = clean_name(name)
        if isinstance(mod, nn.Linear) and not clean.startswith(inside):
            out.setdefault(clean, mod)
    out = {k: v for k, v in out.items() if _matches(k, target_modules)}
    if not out:
        raise InvalidArgumentError(f"target_modules: expected to match at least one linear layer, got {target_modules!r}")
    return out
