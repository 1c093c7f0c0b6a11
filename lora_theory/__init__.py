"""lora-theory: the theory of LoRA fine-tuning as executable, measured checks.

Public API (re-exported here; the code lives in one module per mathematical object):

- instances: :func:`make_instance`, :func:`hard_instance`, :func:`norm_bounds`,
  :class:`AttentionLoRAInstance` (``lora_theory.instance``)
- the exact gradient: :func:`loss`, :func:`exact_gradients`, :func:`autograd_gradients`,
  :func:`weight_gradients`, :func:`dense_terms`, :func:`lora_chain` (``lora_theory.exact``)
- the polynomial method: :func:`exp_polynomial`, :func:`degree_bound`,
  :func:`polynomial_features`, :func:`approx_gradients`, :func:`random_feature_gradients`
  (``lora_theory.polynomial``, ``lora_theory.features``, ``lora_theory.approx``,
  ``lora_theory.random_features``); sweeps in
  ``lora_theory.phase``
- LoRA-GA: :func:`lora_ga_init`, :func:`first_step_update`, :func:`alignment_report`,
  :func:`stable_scale_report` (``lora_theory.lora_ga``); :func:`estimate_gradients`,
  :func:`apply_lora_ga` for real models (``lora_theory.lora_ga_model``); :func:`audit_lora_ga`
- LoRA layers for plain torch models: :func:`add_lora`, :class:`LoRALinear` (``lora_theory.lora_layer``)
- LoRA+: :func:`simulate_toy`, :func:`simulate_layer`, :func:`predict_exponents`, :func:`width_sweep`,
  :func:`fit_exponents`, :func:`coord_check`, :func:`loraplus_param_groups`,
  :func:`make_loraplus_optimizer`, :func:`ratio_grid` (``lora_theory.lora_plus``)
- claims: :func:`all_claims`, :func:`get_claim`, :func:`run_checks` (``lora_theory.claims``)
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._validate import InvalidArgumentError
from .approx import ApproximationError, ApproxInfo, approx_gradients, score_range_bound
from .audit import audit_lora_ga
from .claims import all_claims, get_claim, run_checks
from .exact import autograd_gradients, default_block_size, dense_terms, exact_gradients, lora_chain, loss, weight_gradients
from .features import feature_rank, polynomial_features
from .lora_ga import AlignmentReport, LoraGAInit, alignment_report, first_step_update, lora_ga_init, stable_scale_report
from .lora_ga_model import apply_lora_ga, estimate_gradients
from .lora_layer import LoRALinear, add_lora, lora_parameters, merge_lora
from .lora_plus import (coord_check, fit_exponents, loraplus_param_groups, make_loraplus_optimizer, predict_exponents, ratio_grid, simulate_layer,
                        simulate_toy, width_sweep)
from .instance import AttentionLoRAInstance, hard_instance, make_instance, norm_bounds, score_range
from .polynomial import ExpPolynomial, degree_bound, exp_polynomial
from .random_features import random_feature_gradients
from .tolerances import TOLERANCES, max_rel_error

try:
    __version__ = version("lora-theory")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AlignmentReport",
    "ApproxInfo",
    "ApproximationError",
    "AttentionLoRAInstance",
    "ExpPolynomial",
    "InvalidArgumentError",
    "LoRALinear",
    "LoraGAInit",
    "TOLERANCES",
    "add_lora",
    "alignment_report",
    "all_claims",
    "apply_lora_ga",
    "approx_gradients",
    "audit_lora_ga",
    "autograd_gradients",
    "coord_check",
    "default_block_size",
    "degree_bound",
    "dense_terms",
    "estimate_gradients",
    "exact_gradients",
    "exp_polynomial",
    "feature_rank",
    "first_step_update",
    "fit_exponents",
    "get_claim",
    "hard_instance",
    "lora_chain",
    "lora_ga_init",
    "lora_parameters",
    "loraplus_param_groups",
    "loss",
    "make_instance",
    "make_loraplus_optimizer",
    "max_rel_error",
    "merge_lora",
    "norm_bounds",
    "polynomial_features",
    "predict_exponents",
    "random_feature_gradients",
    "ratio_grid",
    "run_checks",
    "score_range",
    "score_range_bound",
    "simulate_layer",
    "simulate_toy",
    "stable_scale_report",
    "weight_gradients",
    "width_sweep",
]
