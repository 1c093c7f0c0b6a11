"""LoRA+ (Hayou, Ghosh, Yu 2024): width-scaling dynamics of LoRA and the learning-rate ratio eta_B / eta_A.

Read in dependency order:

- ``exponents``: the paper's exponent recursions gamma[delta_i](t), evaluated exactly (Fractions);
- ``_update``: the processed-gradient updates (GD, SignSGD, Adam) the simulators share;
- ``toy_sim``: the eq. 2 toy model f = b a^T x, simulated over widths for every optimizer and init;
- ``layer_sim``: the Sec. 4 general LoRA layer Zbar = W* Z + (alpha/r) B A Z, likewise;
- ``width_sweep``: width sweeps of either simulator and the fitted slopes d log|delta| / d log n;
- ``optim``: LoRA+ optimizer parameter groups (eta_B = ratio eta_A), equal to PEFT's;
- ``ratio``: the Fig. 2 toy network over an (eta_A, eta_B) grid;
- ``coord_check``: mup-style coordinate checks of real torch / PEFT models.
"""
from .coord_check import coord_check
from .exponents import predict_exponents
from .layer_sim import simulate_layer
from .optim import loraplus_param_groups, make_loraplus_optimizer
from .ratio import ratio_grid
from .toy_sim import simulate_toy
from .width_sweep import fit_exponents, width_sweep

__all__ = [
    "coord_check",
    "fit_exponents",
    "loraplus_param_groups",
    "make_loraplus_optimizer",
    "predict_exponents",
    "ratio_grid",
    "simulate_layer",
    "simulate_toy",
    "width_sweep",
]
