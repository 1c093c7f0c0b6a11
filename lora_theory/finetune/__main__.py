"""``python -m lora_theory.finetune``: run (or resume) the fine-tuning experiment into its store and print its tables.

Example: ``python -m lora_theory.finetune --quick --jobs 2 --part main --part ablation --part ratio``;
``--task vader_valence`` runs the quick budget on the regression task too.
"""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False)


@app.command()
def run(
    quick: bool = typer.Option(True, "--quick/--full", help="vader_polarity, 3 seeds x 40 steps; or both tasks, 5 seeds x 100 steps."),
    part: list[str] = typer.Option(["main"], "--part", help="main, ablation, ratio (repeatable)."),
    task: list[str] = typer.Option([], "--task", help="vader_valence and/or vader_polarity (repeatable; default: the budget's tasks)."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes (each runs torch single-threaded)."),
    store: Path | None = typer.Option(None, "--store", help="Results store (default: $LORA_THEORY_FINETUNE_STORE or ~/.cache/lora-theory/finetune.sqlite)."),
    budget: str | None = typer.Option(None, "--budget", help="cpython_mlm only: mlm-quick, mlm-full or mlm-smoke (default: --quick/--full)."),
    executor: str | None = typer.Option(None, "--executor", help="Sweep executor (process pool by default; 'dask' for a Dask cluster)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cpython_mlm only)."),
) -> None:
    """Run every missing point of the chosen parts, then print the premise and per-method tables."""
    import pandas as pd

    if "cpython_mlm" in task:
        from .mlm import BUDGETS, MLM_FULL, MLM_QUICK, mlm_experiment

        if budget is not None and budget not in BUDGETS:
            raise typer.BadParameter(f"expected one of {sorted(BUDGETS)}, got {budget!r}", param_hint="--budget")
        import dataclasses

        if device not in ("cpu", "cuda"):
            raise typer.BadParameter(f"expected cpu or cuda, got {device!r}", param_hint="--device")
        cfg = BUDGETS[budget] if budget else (MLM_QUICK if quick else MLM_FULL)
        cfg = dataclasses.replace(cfg, device=device) if device != "cpu" else cfg
        out = mlm_experiment(cfg, store=store, jobs=jobs, executor=executor, progress=True)
        runs = out["runs"]
        typer.echo(f"tuned lrs {out['lrs']}, at grid edge {out['edge']}")
        with pd.option_context("display.width", 200, "display.max_rows", 200):
            typer.echo(runs.groupby(["arm", "lr", "tuning"]).final.describe()[["count", "mean", "std", "min", "max"]].to_string())
        return

    from .experiment import experiment, method_table, premise_table

    try:
        out = experiment(quick, tuple(part), store=store, jobs=jobs, progress=True, tasks=tuple(task) or None)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    table = method_table(out["main"])
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 200):
        typer.echo(premise_table(out["main"]).to_string(index=False))
        agg = table.groupby(["task", "protocol", "method"]).agg(lr=("lr", "first"), steps=("steps_charged", "median"),
                                                                 test=("test_metric", "median"), best_val=("best_val", "median"))
        typer.echo(agg.to_string())


if __name__ == "__main__":
    app()
