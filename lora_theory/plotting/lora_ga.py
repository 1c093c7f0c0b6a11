"""Plots for LoRA-GA (claims ``lora_ga.*``); the fine-tuning plots are in :mod:`lora_theory.plotting.finetune`."""
from __future__ import annotations

__all__: list[str] = []
