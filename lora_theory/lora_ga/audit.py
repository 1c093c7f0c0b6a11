"""Audit LoRA-GA implementations against Thm 3.1 on a real model: alignment, scale, output at step 0.

For each implementation, direction and scale: initialize the LoRA layers of a fresh copy of the
model from the gradient of K batches, then measure per layer, with the gradient G estimated by
:func:`~lora_theory.lora_ga.model.estimate_gradients` on the same batches:

- the alignment of the first step eta^2 (G A^T A + B B^T G) with G_2r
  (:func:`~lora_theory.lora_ga.init.alignment_report`: relative residual, best multiple vs zeta);
- the forward second moment E||eta B A x||^2 / m for x ~ N(0, I_n) vs alpha^2 / gamma^2;
- the change of the model's output at step 0 (max |y_after - y_before| / max |y_before|).

Implementations: ``"lora_theory"`` (this toolkit's :func:`~lora_theory.lora_ga.model.apply_lora_ga`
on PEFT-wrapped or toolkit-wrapped layers) and ``"peft"`` (PEFT's own
``init_lora_weights="lora_ga"`` with ``preprocess_loraga``, every direction and scale PEFT offers).

Reference: Wang et al. (2024), Thm 3.1, Def. 3.1; claim ``audit.peft_lora_ga``.
"""
from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._validate import check_choice
from ..lora.layer import add_lora
from ..lora.peft_bridge import find_lora_layers
from .init import alignment_report
from .model import apply_lora_ga, estimate_gradients

__all__ = ["PEFT_DIRECTIONS", "PEFT_SCALES", "audit_lora_ga"]

PEFT_DIRECTIONS = ("ArB2r", "A2rBr", "ArBr", "random")
PEFT_SCALES = ("stable", "weight_svd", "gd_scale", "unit")
_TOOLKIT_SCALE = {"stable": "stable", "weight_svd": "weight_svd", "gd_scale": "gd", "unit": "unit"}


def _forward_moment(A: torch.Tensor, B: torch.Tensor, eta: float, samples: int, gen: torch.Generator) -> float:
    x = torch.randn(samples, A.shape[1], generator=gen, dtype=torch.float64)
    y = eta * (x @ A.double().T) @ B.double().T  # (samples, m)
    return float(y.pow(2).sum(1).mean()) / B.shape[0]


def _output(model: nn.Module, batch: Any, forward: Callable[[nn.Module, Any], torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return forward(model, batch).detach().double()


def audit_lora_ga(
    implementation: str,
    model: nn.Module,
    batches: Sequence[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    forward: Callable[[nn.Module, Any], torch.Tensor],
    target_modules: list[str],
    *,
    r: int = 8,
    alpha: float = 16.0,
    gamma: int = 16,
    directions: Sequence[str] = PEFT_DIRECTIONS,
    scales: Sequence[str] = PEFT_SCALES,
    seed: int = 0,
    samples: int = 1024,
) -> pd.DataFrame:
    """One row per (implementation, direction, scale, layer) with the measurements above.

    Args:
        implementation: "peft" or "lora_theory".
        model: the pretrained model (left untouched; each configuration uses a deep copy).
        batches: the K batches both the gradient estimate and the implementation see.
        loss_fn: ``loss_fn(model, batch) -> scalar``; forward: ``forward(model, batch) -> output``.
        target_modules: layer name suffixes, e.g. ["query", "value"].
        r, alpha, gamma: LoRA rank, alpha (rsLoRA: eta = alpha / sqrt(r)) and the stable gamma.
        directions, scales: PEFT's names (``"gd_scale"`` maps to this toolkit's ``"gd"``).

    Returns:
        DataFrame: implementation, direction, scale, layer, m, n, rel_residual, multiple, zeta_pred,
        multiple_over_zeta, cosine, captured, eckart_young, fwd_moment, fwd_pred, output_change.
    """
    check_choice("implementation", implementation, ("peft", "lora_theory"))
    for s in scales:
        check_choice("scales", s, PEFT_SCALES)
    for dname in directions:
        check_choice("directions", dname, PEFT_DIRECTIONS)
    # eval mode: dropout off, so this estimate and the implementation's see the same gradient
    G = estimate_gradients(model, batches, loss_fn, target_modules, dtype=torch.float64, mode="eval")
    y0 = _output(model, batches[0], forward)
    eta = alpha / math.sqrt(r)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "loraga_grads.pt")
        for direction in directions:
            for scale in scales:
                m = copy.deepcopy(model)
                torch.manual_seed(seed)  # PEFT's randomized SVD and random split draw from the global RNG
                if implementation == "peft":
                    from peft import LoraConfig, get_peft_model
                    from peft.tuners.lora.config import LoraGAConfig
                    from peft.tuners.lora.loraga import preprocess_loraga

                    cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=True, target_modules=list(target_modules), init_lora_weights="lora_ga",
                                     lora_ga_config=LoraGAConfig(direction=direction, scale=scale, stable_gamma=gamma))

                    def train_step(m=m):
                        m.eval()  # PEFT switches to train mode first; dropout off to match G
                        for b in batches:
                            loss_fn(m, b).backward()

                    preprocess_loraga(m, cfg, train_step, cache_file=cache)
                    m = get_peft_model(m, cfg)
                else:
                    add_lora(m, target_modules, r=r, alpha=alpha, rslora=True, init="none")
                    apply_lora_ga(m, G, direction=direction, scale=_TOOLKIT_SCALE[scale], gamma=gamma, seed=seed)
                y1 = _output(m, batches[0], forward)
                change = float((y1 - y0).abs().max() / y0.abs().max())
                for h in find_lora_layers(m):
                    name, A, B, eta_l = h.name, h.A.detach(), h.B.detach(), h.scaling
                    g = G[name]
                    rep = alignment_report(g, A, B, eta_l)
                    mm, nn_ = g.shape
                    c_stable = mm**0.25 / math.sqrt(gamma)
                    zeta = {"stable": eta**2 * c_stable**2, "gd_scale": 1.0, "unit": eta**2, "weight_svd": math.nan}[scale]
                    rows.append({
                        "implementation": implementation, "direction": direction, "scale": scale, "layer": name, "m": mm, "n": nn_,
                        "rel_residual": rep.rel_residual, "multiple": rep.multiple, "zeta_pred": zeta,
                        "multiple_over_zeta": rep.multiple / zeta if zeta == zeta else math.nan,
                        "cosine": rep.cosine, "captured": rep.captured, "eckart_young": rep.eckart_young,
                        "fwd_moment": _forward_moment(A, B, eta_l, samples, gen), "fwd_pred": alpha**2 / gamma**2 if scale == "stable" else math.nan,
                        "output_change": change,
                    })
    return pd.DataFrame(rows)
