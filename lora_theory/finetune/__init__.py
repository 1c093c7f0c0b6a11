"""Fine-tuning experiments on real models comparing full fine-tuning, LoRA, LoRA-GA and LoRA+.

Shared by the LoRA-GA and LoRA+ claims: ``tasks`` (the tasks and their losses) and
``convergence`` (the runs, learning-rate grids and steps-to-target).
"""
