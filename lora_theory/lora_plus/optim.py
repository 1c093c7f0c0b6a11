"""LoRA+ optimizer parameter groups: eta_B = ratio * eta_A (eta_A = lr).

Groups, as PEFT's ``create_loraplus_optimizer`` builds them (and the authors' code):
A (every trainable parameter that is not a LoRA B factor and not 1-D) at ``lr``; LoRA embedding
factors at ``lr_embedding`` (PEFT's default 1e-6); B at ``lr * ratio``, split into a group with
weight decay and one without (1-D parameters, biases and LayerNorm weights get no decay).

PEFT and the authors also put every *1-D* trainable parameter (biases, LayerNorm weights) in
the B group at ``lr * ratio``. The theory says nothing about them (they are not LoRA factors),
and it makes LoRA+ with ratio 1 differ from plain LoRA only through the embedding lr, but a
large ratio (2^4 .. 2^6) then multiplies the learning rate of every trainable bias and norm as
well. ``one_d="base"`` keeps them at ``lr`` instead, so that only B gets the ratio.

Reference: Hayou et al. (2024), Sec. 5 and the authors' lora_plus.py; PEFT
``peft.optimizers.create_loraplus_optimizer``; claim ``lora_plus.ratio``.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .._validate import InvalidArgumentError, check_choice, check_positive
from ..lora.peft_bridge import find_lora_layers

__all__ = ["loraplus_param_groups", "make_loraplus_optimizer"]


def _no_decay_names(model: nn.Module) -> set[str]:
    """Parameters inside LayerNorm modules or named like biases (PEFT's rule for weight decay)."""
    names = set()
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if isinstance(mod, nn.LayerNorm) or "bias" in full:
                names.add(full)
    return names


def loraplus_param_groups(model: nn.Module, lr: float, ratio: float, *, lr_embedding: float | None = None, weight_decay: float = 0.0,
                          one_d: Literal["ratio", "base"] = "ratio") -> list[dict]:
    """Optimizer parameter groups [A, embedding, B (decay), B (no decay)] with LoRA+ learning rates.

    Args:
        model: a PEFT model or a torch model with :class:`~lora_theory.lora.layer.LoRALinear` layers.
        lr: eta_A (> 0). ratio: eta_B / eta_A (> 0).
        lr_embedding: lr of LoRA embedding factors (default 1e-6, as PEFT).
        weight_decay: for the A, embedding and B groups (the B no-decay group gets 0).
        one_d: "ratio" (PEFT / authors: 1-D params with B) or "base" (1-D params with A, at lr).

    Returns:
        A list of param-group dicts for any torch optimizer; empty groups are kept (as PEFT does)
        so group indices are stable.
    """
    lr = check_positive("lr", lr)
    ratio = check_positive("ratio", ratio)
    check_choice("one_d", one_d, ("ratio", "base"))
    lr_embedding = 1e-6 if lr_embedding is None else check_positive("lr_embedding", lr_embedding)
    no_decay = _no_decay_names(model)
    # every adapter's factors of PEFT's LoRA embedding layers (PEFT's rule: the module is a lora.Embedding)
    embedding = {id(p) for h in find_lora_layers(model, embeddings=True) if h.kind == "peft_embedding"
                 for p in (*h.module.lora_embedding_A.values(), *h.module.lora_embedding_B.values())}
    groups: dict[str, list] = {"A": [], "embedding": [], "B": [], "B_no_decay": []}
    has_lora = False
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        has_lora |= "lora_" in name
        if id(p) in embedding:
            groups["embedding"].append(p)
        elif "lora_B" in name or (p.ndim == 1 and one_d == "ratio"):
            groups["B_no_decay" if name in no_decay else "B"].append(p)
        else:
            groups["A"].append(p)
    if not has_lora:
        raise InvalidArgumentError("model: expected trainable LoRA parameters (names containing 'lora_A' / 'lora_B'), found none; add adapters first (add_lora or PEFT)")
    return [
        {"params": groups["A"], "lr": lr, "weight_decay": weight_decay},
        {"params": groups["embedding"], "lr": lr_embedding, "weight_decay": weight_decay},
        {"params": groups["B"], "lr": lr * ratio, "weight_decay": weight_decay},
        {"params": groups["B_no_decay"], "lr": lr * ratio, "weight_decay": 0.0},
    ]


def make_loraplus_optimizer(model: nn.Module, optimizer_cls=torch.optim.AdamW, *, lr: float, ratio: float, lr_embedding: float | None = None,
                            weight_decay: float = 0.0, one_d: Literal["ratio", "base"] = "ratio", **kwargs) -> torch.optim.Optimizer:
    """``optimizer_cls(loraplus_param_groups(...), lr=lr, **kwargs)``."""
    groups = loraplus_param_groups(model, lr, ratio, lr_embedding=lr_embedding, weight_decay=weight_decay, one_d=one_d)
    return optimizer_cls(groups, lr=lr, **kwargs)
