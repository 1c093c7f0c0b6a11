"""Coordinate check (mup style) for LoRA layers of real torch models: sizes of Z_A, Z_B and delta1..3 over steps and widths.

For every :class:`~lora_theory.lora.layer.LoRALinear` (or PEFT ``lora.Linear``) module with input
z (the batch it sees in the forward pass that computes the loss), Z_A = A z, Z_B = s B Z_A
(s = alpha / r) and, for each optimizer step t, the paper's split of the adapter-output change on
that same input,

    delta1 = s B_{t-1} Delta Z_A,   delta2 = s Delta B Z_A^{t-1},   delta3 = s Delta B Delta Z_A,
    Delta Z_A = (A_t - A_{t-1}) z,  Delta B = B_t - B_{t-1},

each summarised by its mean absolute coordinate. Flat lines in width mean the parametrization
keeps the term Theta(1) (Def. 3 stability, Def. 5 efficiency); growing means instability,
shrinking means the factor learns nothing at large width.

Reference: Hayou et al. (2024), Def. 3 and 5, Sec. 4; mup's coord_check (Yang et al. 2022);
claim ``lora_plus.thm1``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from .._validate import InvalidArgumentError, check_int
from ..lora.peft_bridge import find_lora_layers

__all__ = ["coord_check"]


def coord_check(model_factory: Callable[[int], tuple[nn.Module, Callable[[nn.Module], torch.Tensor], Callable[[nn.Module], torch.optim.Optimizer]]],
                widths: Sequence[int], *, steps: int = 5, seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """mean |Z_A|, |Z_B|, |delta1|, |delta2|, |delta3| per LoRA module, width, seed and step, for real training runs.

    Args:
        model_factory: ``width -> (model, loss_fn(model) -> scalar on a fixed batch, make_optimizer(model))``;
            it is called once per (width, seed) after ``torch.manual_seed(seed)``.
        widths: positive widths.
        steps: optimizer steps (the step-0 values are recorded too). seeds: non-empty.

    Returns:
        Tidy DataFrame: width, seed, step, module, z_a, z_b, delta1, delta2, delta3 (NaN at step 0:
        the update of step t is on the row of step t), loss (before that row's update).
    """
    steps = check_int("steps", steps, low=1)
    if not widths or any(int(w) <= 0 for w in widths):
        raise InvalidArgumentError(f"widths: expected positive integers, got {list(widths)}")
    if len(seeds) == 0:
        raise InvalidArgumentError("seeds: expected at least one seed, got none")
    rows = []
    nan = float("nan")
    for width in widths:
        for seed in seeds:
            torch.manual_seed(seed)
            model, loss_fn, make_opt = model_factory(int(width))
            mods = [(h.name, h.module, h.A, h.B, h.scaling) for h in find_lora_layers(model)]
            if not mods:
                raise InvalidArgumentError("model_factory: expected a model with LoRA layers (add_lora or PEFT), found none")
            inputs: dict[str, torch.Tensor] = {}

            def hook(mod, args, out, name, inputs=inputs):
                inputs[name] = args[0].detach()

            hooks = [mod.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n)) for name, mod, _, _, _ in mods]
            opt = make_opt(model)
            deltas = {name: (nan, nan, nan) for name, *_ in mods}  # step 0 has no update
            for step in range(steps + 1):
                loss = loss_fn(model)
                with torch.no_grad():
                    snap = {name: (inputs[name], A.detach().clone(), B.detach().clone()) for name, _, A, B, _ in mods}
                    for name, _, A, B, sc in mods:
                        za = inputs[name] @ A.T  # (..., r)
                        d1, d2, d3 = deltas[name]
                        rows.append({"width": int(width), "seed": seed, "step": step, "module": name, "z_a": float(za.abs().mean()),
                                     "z_b": float((sc * za @ B.T).abs().mean()), "delta1": d1, "delta2": d2, "delta3": d3, "loss": float(loss)})
                if step == steps:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for name, _, A, B, sc in mods:
                        z, A0, B0 = snap[name]
                        za0, dza, dB = z @ A0.T, z @ (A - A0).T, B - B0  # (..., r), (..., r), (m, r)
                        deltas[name] = (float((sc * dza @ B0.T).abs().mean()), float((sc * za0 @ dB.T).abs().mean()),
                                        float((sc * dza @ dB.T).abs().mean()))
            for h in hooks:
                h.remove()
    return pd.DataFrame(rows)
