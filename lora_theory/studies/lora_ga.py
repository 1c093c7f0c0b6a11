"""Figures for LoRA-GA (registered in the figure registry)."""
from __future__ import annotations

from ..finetune.convergence import convergence_experiment
from . import lazy_plot, register_figure


def _compute(quick: bool):

    if quick:
        return convergence_experiment(("full", "lora", "lora_ga", "lora_plus"), steps=20, eval_every=2,
                                      lrs={"full": (1e-4,), "lora": (1e-3,), "lora_ga": (1e-4,), "lora_plus": (3e-4,)})
    return convergence_experiment(steps=60, eval_every=3)


register_figure(
    "lora_ga_convergence",
    claims=("lora_ga.convergence",),
    description="Held-out loss vs step on a MiniLM teacher-student task: full fine-tuning, LoRA, LoRA-GA and LoRA+ at matched steps, each at its best learning rate from a small grid.",
    compute=_compute,
    plot=lazy_plot("lora_ga", "plot_convergence"),
)
