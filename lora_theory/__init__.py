"""lora-theory: the theory of LoRA fine-tuning as executable, measured checks.

Public API (re-exported here; the code lives in one subpackage per paper, one module per object):

- ``lora_theory.limits`` (Hu et al. 2024, computational limits): instances (:func:`make_instance`,
  :func:`hard_instance`, :func:`norm_bounds`, :class:`AttentionLoRAInstance`), the exact gradient
  (:func:`loss`, :func:`exact_gradients`, :func:`autograd_gradients`, :func:`weight_gradients`,
  :func:`dense_terms`, :func:`lora_chain`), the polynomial method (:func:`exp_polynomial`,
  :func:`degree_bound`, :func:`polynomial_features`, :func:`approx_gradients`) and its FAVOR+ peer
  (:func:`random_feature_gradients`); norm-bound sweeps in ``lora_theory.limits.norm_sweeps``; real
  models on the phase diagram (:func:`attention_regime`, :func:`regime_summary`,
  :func:`regime_trajectory`, :func:`instance_from_attention`, :func:`adapter_gradients`)
- ``lora_theory.lora_ga`` (Wang et al. 2024): :func:`lora_ga_init`, :func:`first_step_update`,
  :func:`alignment_report`, :func:`stable_scale_report`; :func:`estimate_gradients`,
  :func:`apply_lora_ga` on real models; :func:`audit_lora_ga`
- ``lora_theory.lora_plus`` (Hayou et al. 2024): :func:`simulate_toy`, :func:`simulate_layer`,
  :func:`predict_exponents`, :func:`width_sweep`, :func:`fit_exponents`, :func:`coord_check`,
  :func:`loraplus_param_groups`, :func:`make_loraplus_optimizer`, :func:`ratio_grid`
- ``lora_theory.lora`` (shared): :func:`add_lora`, :class:`LoRALinear`, :func:`merge_lora`,
  :func:`lora_parameters`; the PEFT bridge ``lora_theory.lora.peft_bridge``; attention inputs of
  Hugging Face models (:func:`capture_attention`, :func:`find_attention_layers`); offline real text
  (:func:`reference_text`, :func:`text_batches`)
- claims: :func:`all_claims`, :func:`get_claim`, :func:`run_checks` (``lora_theory.claims``)

See ARCHITECTURE.md for the map of the package.
"""
from __future__ import annotations

from ._validate import InvalidArgumentError
from ._version import __version__  # noqa: F401  (re-exported)
from .claims import all_claims, get_claim, run_checks
from .limits.approx import ApproximationError, ApproxInfo, approx_gradients, score_range_bound
from .limits.exact import autograd_gradients, default_block_size, dense_terms, exact_gradients, lora_chain, loss, weight_gradients
from .limits.features import feature_rank, polynomial_features
from .limits.forward import ForwardInfo, approx_forward, attention_forward
from .limits.module import LoRAAttention, replace_bert_attention
from .limits.instance import AttentionLoRAInstance, hard_instance, make_instance, norm_bounds, score_range
from .limits.plan import ApproxPlan, approx_plan
from .limits.polynomial import ExpPolynomial, degree_bound, exp_polynomial
from .limits.random_features import random_feature_gradients
from .limits.regime import adapter_gradients, attention_regime, instance_from_attention, regime_summary, regime_trajectory
from .lora.attention import capture_attention, find_attention_layers
from .lora.layer import LoRALinear, add_lora, lora_parameters, merge_lora
from .finetune.data import load_task
from .lora.pretrained import load_minilm, load_tokenizer
from .lora.text import reference_text, text_batches
from .lora_ga.audit import audit_lora_ga
from .lora_ga.init import AlignmentReport, LoraGAInit, alignment_report, first_step_update, lora_ga_init, stable_scale_report
from .lora_ga.model import apply_lora_ga, estimate_gradients
from .lora_plus import (
    coord_check,
    fit_exponents,
    loraplus_param_groups,
    make_loraplus_optimizer,
    predict_exponents,
    ratio_grid,
    simulate_layer,
    simulate_toy,
    width_sweep,
)
from .tolerances import TOLERANCES, max_rel_error

__all__ = [
    "TOLERANCES",
    "AlignmentReport",
    "ApproxInfo",
    "ApproxPlan",
    "ApproximationError",
    "AttentionLoRAInstance",
    "ExpPolynomial",
    "ForwardInfo",
    "LoRAAttention",
    "InvalidArgumentError",
    "LoRALinear",
    "LoraGAInit",
    "adapter_gradients",
    "add_lora",
    "alignment_report",
    "all_claims",
    "apply_lora_ga",
    "approx_forward",
    "approx_gradients",
    "approx_plan",
    "attention_forward",
    "attention_regime",
    "audit_lora_ga",
    "autograd_gradients",
    "capture_attention",
    "coord_check",
    "default_block_size",
    "degree_bound",
    "dense_terms",
    "estimate_gradients",
    "exact_gradients",
    "exp_polynomial",
    "feature_rank",
    "find_attention_layers",
    "first_step_update",
    "fit_exponents",
    "get_claim",
    "hard_instance",
    "instance_from_attention",
    "lora_chain",
    "lora_ga_init",
    "load_minilm",
    "load_task",
    "load_tokenizer",
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
    "reference_text",
    "regime_summary",
    "replace_bert_attention",
    "regime_trajectory",
    "run_checks",
    "score_range",
    "score_range_bound",
    "simulate_layer",
    "simulate_toy",
    "stable_scale_report",
    "text_batches",
    "weight_gradients",
    "width_sweep",
]
