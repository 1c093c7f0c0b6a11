"""Figures for LoRA+ (claims ``lora_plus.*``): lora_plus_exponents, lora_plus_heatmap, lora_plus_coord_check."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..claims.lora_plus import PROP1_CONFIGS, PROP2_CONFIGS, THM1_CONFIGS, THM1_LAYER_CONFIGS, check_configs
from ..lora.layer import add_lora
from ..lora.peft_bridge import lora_factors
from ..lora_plus.coord_check import coord_check
from ..lora_plus.ratio import ratio_grid
from . import lazy_plot, register_figure


def _through_step4(configs):
    return [(o, i, a, b, 4) for o, i, a, b, _ in configs]


# every claim configuration, plotted through step 4 (the exploding ones past their onset too: the lag shows)
EXPONENT_CONFIGS = _through_step4(PROP1_CONFIGS + PROP2_CONFIGS + THM1_CONFIGS)
LAYER_CONFIGS = _through_step4(THM1_LAYER_CONFIGS)


def exponents_table(quick: bool) -> pd.DataFrame:

    """Measured vs predicted slopes of every claim configuration through step 4; ``checked`` marks the (config, step) rows the claims test."""
    _, toy = check_configs(EXPONENT_CONFIGS, quick)
    _, layer = check_configs(LAYER_CONFIGS, quick, model="layer")
    table = pd.concat([toy, layer], ignore_index=True)
    upto = {("toy", o, i, str(a), str(b)): u for o, i, a, b, u in PROP1_CONFIGS + PROP2_CONFIGS + THM1_CONFIGS}
    upto |= {("layer", o, i, str(a), str(b)): u for o, i, a, b, u in THM1_LAYER_CONFIGS}
    checked = [s <= upto[(m, o, i, a, b)] for m, o, i, a, b, s in zip(table.model, table.optimizer, table.init, table.a, table.b, table.step, strict=True)]
    return table.assign(gamma=table.gamma.astype(str), checked=checked)


def coord_check_table(quick: bool) -> pd.DataFrame:
    """Adam on a ReLU MLP with one LoRA layer (n x n), equal rates vs LoRA+ rates, Init[1]."""

    widths = (64, 128, 256, 512) if quick else (64, 128, 256, 512, 1024, 2048)
    parts = []
    for label, lr_a_fn, lr_b in (("equal rates (eta_A = eta_B = 1e-3)", lambda n: 1e-3, 1e-3), ("LoRA+ (eta_A = 1e-3 * 64/n, eta_B = 1e-3)", lambda n: 1e-3 * 64 / n, 1e-3)):
        def factory(n, lr_a_fn=lr_a_fn, lr_b=lr_b):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(64, 16, generator=gen)
            y = torch.sin(x.mean(1, keepdim=True))
            model = nn.Sequential(nn.Linear(16, n), nn.ReLU(), nn.Linear(n, n), nn.ReLU(), nn.Linear(n, 1))
            add_lora(model, ["2"], r=4, alpha=4.0)

            def loss_fn(m):
                return ((m(x) - y) ** 2).mean()

            def make_opt(m):
                A, B = lora_factors(m)
                return torch.optim.Adam([{"params": A, "lr": lr_a_fn(n)}, {"params": B, "lr": lr_b}])
            return model, loss_fn, make_opt

        parts.append(coord_check(factory, widths, steps=4).assign(param=label))
    return pd.concat(parts, ignore_index=True)


def _heatmap(quick: bool) -> pd.DataFrame:

    grid = tuple(np.logspace(-3, 1.5, 7 if quick else 10))
    return ratio_grid(grid, grid, steps=100 if quick else 200)


register_figure("lora_plus_exponents", claims=("lora_plus.prop1", "lora_plus.prop2", "lora_plus.thm1"),
                description="Measured slopes of log|delta_i| vs log n (toy model, widths 2^6..2^14) against the exponents predicted by the paper's recursions, for GD / SignSGD / Adam, both inits and several learning-rate exponents.",
                compute=exponents_table, plot=lazy_plot("lora_plus", "plot_exponents"))
register_figure("lora_plus_heatmap", claims=("lora_plus.ratio",),
                description="Test loss of the Fig. 2 toy network over an (eta_A, eta_B) grid (GD, 200 steps); the optimum sits far above the equal-rate diagonal.",
                compute=_heatmap, plot=lazy_plot("lora_plus", "plot_heatmap"))
register_figure("lora_plus_coord_check", claims=("lora_plus.thm1",),
                description="Coordinate check of a LoRA layer in a ReLU MLP trained by Adam: mean |Z_B| and |Z_A| vs width per step, equal rates vs LoRA+ rates.",
                compute=coord_check_table, plot=lazy_plot("lora_plus", "plot_coord_check"))
