"""LoRA+ (Hayou, Ghosh, Yu 2024): width-scaling dynamics of LoRA and the learning-rate ratio eta_B / eta_A.

Modules: ``toy`` (the eq. 2 toy model, simulated for GD / SignSGD / Adam and both inits),
``layer`` (the Sec. 4 general LoRA layer, same optimizers and inits),
``gammas`` (the paper's exponent recursions, evaluated exactly), ``sweep`` (width sweeps and
fitted slopes), ``optim`` (LoRA+ parameter groups, equal to PEFT's), ``ratio`` (the Fig. 2 toy
network over a learning-rate grid), ``coord_check`` (mup-style coordinate checks of real models).
"""
from .coord_check import coord_check
from .gammas import predict_exponents
from .layer import simulate_layer
from .optim import loraplus_param_groups, make_loraplus_optimizer
from .ratio import ratio_grid
from .sweep import fit_exponents, width_sweep
from .toy import simulate_toy

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
