"""Fine-tuning experiments on real models comparing full fine-tuning, LoRA, LoRA-GA and LoRA+.

Shared by the LoRA-GA and LoRA+ claims (``lora_theory.claims.finetune``), read in this order:
``data`` (human-labelled tasks: ``load_task(name, split)``), ``tasks`` (the probe-head model and
its losses; the random-token teacher-student fixture), ``protocol`` (one run = one sweep point),
``stats`` (steps to a target, smoothed losses, decision rules with measured false-"holds" rates),
``experiment`` (the VADER grids and protocols) and ``mlm`` (the masked-token experiment on
``cpython_mlm`` that decides the claims). ``python -m lora_theory.finetune --task cpython_mlm`` runs it.
"""
from .data import TASKS, load_task

__all__ = ["TASKS", "load_task"]
