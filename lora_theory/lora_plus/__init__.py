"""LoRA+ (Hayou, Ghosh, Yu 2024): width-scaling dynamics of LoRA and the learning-rate ratio eta_B / eta_A.

Modules: ``toy`` (the eq. 2 toy model, simulated for GD / SignSGD / Adam and both inits),
``gammas`` (the paper's exponent recursions, evaluated exactly), ``sweep`` (width sweeps and
fitted slopes), ``optim`` (LoRA+ parameter groups, equal to PEFT's), ``ratio`` (the Fig. 2 toy
network over a learning-rate grid), ``coord_check`` (mup-style coordinate checks of real models).
"""
from .gammas import predict_exponents
from .sweep import fit_exponents, width_sweep
from .toy import simulate_toy

__all__ = sorted(["fit_exponents", "predict_exponents", "simulate_toy", "width_sweep"])
