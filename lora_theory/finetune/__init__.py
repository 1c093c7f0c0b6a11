"""Fine-tuning experiments on real models comparing full fine-tuning, LoRA, LoRA-GA and LoRA+.

Shared by the LoRA-GA and LoRA+ claims (``lora_theory.claims.finetune``), read in this order:
``data`` (human-labelled tasks: ``load_task(name, split)``), ``tasks`` (the probe-head model and
its losses; the random-token teacher-student fixture), ``protocol`` (one run = one sweep point),
``stats`` (steps to a target, bootstrap intervals, interval verdicts) and ``experiment`` (grids,
protocols, the premise check). ``python -m lora_theory.finetune`` runs the experiment.
"""
from .data import TASKS, load_task

__all__ = ["TASKS", "load_task"]
