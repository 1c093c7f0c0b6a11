"""Figures for LoRA-GA (registered in the figure registry)."""
from __future__ import annotations

from ..figures import register_figure


def _compute(quick: bool):
    from ..convergence import convergence_experiment

    if quick:
        return convergence_experiment(("full", "lora", "lora_ga", "lora_plus"), steps=20, eval_every=2,
                                      lrs={"full": (1e-4,), "lora": (1e-3,), "lora_ga": (1e-4,), "lora_plus": (3e-4,)})
    return convergence_experiment(steps=60, eval_every=3)


def _plot(df):
    from ..plotting.lora_ga import plot_convergence

    return plot_convergence(df)


register_figure(
    "lora_ga_convergence",
    claims=("lora_ga.convergence",),
    description="Held-out loss vs step on a MiniLM teacher-student task: full fine-tuning, LoRA, LoRA-GA and LoRA+ at matched steps, each at its best learning rate from a small grid.",
    compute=_compute,
    plot=_plot,
)
