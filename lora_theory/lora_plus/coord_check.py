"""Coordinate check (mup style) for LoRA layers of real torch models: Z_A and Z_B sizes over steps and widths.

For every :class:`~lora_theory.lora_layer.LoRALinear` (or PEFT ``lora.Linear``) module, a forward
hook records the mean absolute coordinate of Z_A = A z and of the adapter output
Z_B = eta B (A z) on a fixed batch, after each of ``steps`` optimizer steps, for every width.
Flat lines in width mean the parametrization keeps both O(1) (Def. 3 stability); Z_B growing
with width means instability, shrinking means the adapter learns nothing at large width.

Reference: Hayou et al. (2024), Def. 3 and 5, Sec. 4; mup's coord_check (Yang et al. 2022);
claim ``lora_plus.thm1``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from .._validate import InvalidArgumentError, check_int
from ..lora_layer import LoRALinear

__all__ = ["coord_check"]


def _lora_modules(model: nn.Module):
    for name, mod in model.named_modules():
        if isinstance(mod, LoRALinear):
            yield name, (lambda z, m=mod: z @ m.lora_A.T), (lambda za, m=mod: m.eta * (za @ m.lora_B.T))
            continue
        try:
            from peft.tuners.lora.layer import Linear as PeftLinear
        except ImportError:
            continue
        if isinstance(mod, PeftLinear):
            k = next(iter(mod.lora_A))
            yield name, (lambda z, m=mod, k=k: m.lora_A[k](z)), (lambda za, m=mod, k=k: m.scaling[k] * m.lora_B[k](za))


def coord_check(model_factory: Callable[[int], tuple[nn.Module, Callable[[nn.Module], torch.Tensor], Callable[[nn.Module], torch.optim.Optimizer]]],
                widths: Sequence[int], *, steps: int = 5, seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Train each width for ``steps`` steps and record mean |Z_A| and mean |Z_B| per LoRA module.

    Args:
        model_factory: ``width -> (model, loss_fn(model) -> scalar on a fixed batch, make_optimizer(model))``;
            it is called once per (width, seed) after ``torch.manual_seed(seed)``.
        widths: positive widths.
        steps: optimizer steps (the step-0 values are recorded too).

    Returns:
        Tidy DataFrame: width, seed, step, module, z_a, z_b, loss.
    """
    steps = check_int("steps", steps, low=1)
    if not widths or any(int(w) <= 0 for w in widths):
        raise InvalidArgumentError(f"widths: expected positive integers, got {list(widths)}")
    rows = []
    for width in widths:
        for seed in seeds:
            torch.manual_seed(seed)
            model, loss_fn, make_opt = model_factory(int(width))
            mods = list(_lora_modules(model))
            if not mods:
                raise InvalidArgumentError("model_factory: expected a model with LoRA layers (add_lora or PEFT), found none")
            inputs: dict[str, torch.Tensor] = {}
            hooks = [dict(model.named_modules())[n].register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0].detach())) for n, _, _ in mods]
            opt = make_opt(model)
            for step in range(steps + 1):
                loss = loss_fn(model)
                with torch.no_grad():
                    for name, fa, fb in mods:
                        za = fa(inputs[name])
                        rows.append({"width": int(width), "seed": seed, "step": step, "module": name, "z_a": float(za.abs().mean()),
                                     "z_b": float(fb(za).abs().mean()), "loss": float(loss)})
                if step < steps:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            for h in hooks:
                h.remove()
    return pd.DataFrame(rows)
