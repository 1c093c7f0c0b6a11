"""LoRA-GA (Wang, Yu, Li 2024; claims ``lora_ga.*``): initialize A, B from the SVD of the full gradient.

- ``init``: :func:`lora_ga_init` (directions, scales, the weight offset), :func:`first_step_update`,
  :func:`alignment_report`, :func:`stable_scale_report` on matrices;
- ``model``: :func:`estimate_gradients` and :func:`apply_lora_ga` on real torch / PEFT models;
- ``audit``: third-party LoRA-GA implementations (PEFT is one adapter) measured against Thm 3.1.
"""
