"""Figures for LoRA-GA (registered in the figure registry).

The fine-tuning figures of LoRA-GA's claims (``finetune_curves``, ``finetune_steps``,
``finetune_ablation``) live in :mod:`lora_theory.studies.finetune`, shared with LoRA+.
"""
from __future__ import annotations
