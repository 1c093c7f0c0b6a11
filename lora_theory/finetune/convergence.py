"""Convergence of full fine-tuning, LoRA, LoRA-GA and LoRA+ on a real pretrained model (CPU, minutes).

The task is :func:`~lora_theory.lora.pretrained.teacher_student_task` on the pretrained MiniLM: the
student (pretrained weights) must match the embeddings of a teacher whose query and value
weights carry a fixed random rank-8 change; inputs are seeded random token sequences
(:func:`~lora_theory.lora.pretrained.token_batches`), a fresh batch each step, and the loss is measured
on fixed held-out batches every ``eval_every`` steps. All methods use AdamW, the same batches,
the same number of steps and their best learning rate from a small grid (``lrs``), with dropout
off (eval mode) so that the curves reflect the methods and not the dropout noise.

Methods: "full" (all weights), "lora" (PEFT-style init B = 0, A uniform; rsLoRA scaling),
"lora_ga" (LoRA-GA, ArB2r, stable scale, gradient from ``ga_batches`` batches), and "lora_plus"
(the standard init with eta_B = ratio * eta_A).

Reference: Wang et al. (2024), Sec. 4 (convergence 2-4x faster than LoRA); Hayou et al.
(2024) (LoRA+); claim ``lora_ga.convergence``.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import pandas as pd
import torch

from ..lora.layer import add_lora
from ..lora.peft_bridge import lora_factors
from ..lora.pretrained import load_minilm, token_batches
from ..lora_ga.model import apply_lora_ga, estimate_gradients
from .tasks import teacher_student_task

__all__ = ["DEFAULT_LRS", "convergence_experiment", "loraplus_ratio_sweep", "steps_to_target"]

DEFAULT_LRS = {
    "full": (3e-5, 1e-4, 3e-4),
    "lora": (3e-4, 1e-3, 3e-3),
    "lora_ga": (3e-5, 1e-4, 3e-4, 1e-3),
    "lora_plus": (1e-4, 3e-4, 1e-3),
}


def _optimizer(model, method: str, lr: float, ratio: float):
    if method == "full":
        return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    A, B = lora_factors(model)
    lr_B = lr * ratio if method == "lora_plus" else lr
    return torch.optim.AdamW([{"params": A, "lr": lr}, {"params": B, "lr": lr_B}], lr=lr, weight_decay=0.0)


def _run(base, task, method: str, lr: float, *, steps: int, train, held_out, eval_every: int, r: int, alpha: float,
         ga_batches: int, ratio: float, seed: int) -> list[dict]:
    model = copy.deepcopy(base)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        add_lora(model, ["query", "value"], r=r, alpha=alpha, rslora=True, init="lora", seed=seed)
        if method == "lora_ga":
            G = estimate_gradients(model, train[:ga_batches], task.loss, ["query", "value"], mode="eval")
            apply_lora_ga(model, G, direction="ArB2r", scale="stable", gamma=16, seed=seed)
    model.eval()  # dropout off for every method (see the module docstring)
    opt = _optimizer(model, method, lr, ratio)

    def evaluate() -> float:
        with torch.no_grad():
            return float(sum(task.loss(model, b) for b in held_out) / len(held_out))

    rows = [{"method": method, "lr": lr, "step": 0, "eval_loss": evaluate()}]
    for step in range(1, steps + 1):
        loss = task.loss(model, train[step - 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            rows.append({"method": method, "lr": lr, "step": step, "eval_loss": evaluate(), "train_loss": float(loss.detach())})
    return rows


def convergence_experiment(
    methods: Sequence[str] = ("full", "lora", "lora_ga", "lora_plus"),
    *,
    steps: int = 60,
    batch_size: int = 8,
    seq_len: int = 32,
    r: int = 8,
    alpha: float = 16.0,
    ratio: float = 16.0,
    lrs: dict[str, Sequence[float]] | None = None,
    eval_every: int = 5,
    ga_batches: int = 4,
    seed: int = 0,
    threads: int | None = None,
) -> pd.DataFrame:
    """Eval-loss curves for every (method, lr); rows: method, lr, step, eval_loss, train_loss, best.

    ``best`` marks, per method, the learning rate with the lowest final eval loss.
    """
    if threads:
        torch.set_num_threads(threads)
    lrs = {**DEFAULT_LRS, **(lrs or {})}
    torch.manual_seed(seed)
    base = load_minilm()
    task = teacher_student_task(base, seed=seed)
    train = token_batches(steps, batch_size, seq_len, seed=seed + 1)
    held_out = token_batches(4, batch_size, seq_len, seed=seed + 2)
    rows = []
    for method in methods:
        for lr in lrs[method]:
            t0 = time.perf_counter()
            part = _run(base, task, method, lr, steps=steps, train=train, held_out=held_out, eval_every=eval_every, r=r, alpha=alpha,
                        ga_batches=ga_batches, ratio=ratio, seed=seed)
            for row in part:
                row["seconds"] = time.perf_counter() - t0
            rows += part
    df = pd.DataFrame(rows)
    final = df[df.step == df.step.max()].sort_values("eval_loss").groupby("method").head(1)
    best = set(zip(final.method, final.lr, strict=True))
    df["best"] = [(m, lr) in best for m, lr in zip(df.method, df.lr, strict=True)]
    return df


def steps_to_target(df: pd.DataFrame, target: float | None = None, reference: str = "lora") -> pd.DataFrame:
    """Per method (best lr): the first evaluated step with eval loss <= target, and the speed-up vs ``reference``.

    ``target`` defaults to the reference method's final eval loss.
    """
    best = df[df.best]
    if target is None:
        ref = best[best.method == reference]
        target = float(ref[ref.step == ref.step.max()].eval_loss.iloc[0])
    rows = []
    for method, g in best.groupby("method"):
        hit = g[g.eval_loss <= target].step
        rows.append({"method": method, "lr": float(g.lr.iloc[0]), "final_loss": float(g.eval_loss.iloc[-1]),
                     "steps_to_target": int(hit.min()) if len(hit) else math.nan, "target": target})
    out = pd.DataFrame(rows)
    ref_steps = out.set_index("method").steps_to_target.get(reference, math.nan)
    out["speedup_vs_" + reference] = ref_steps / out.steps_to_target
    return out


def loraplus_ratio_sweep(ratios: Sequence[float] = tuple(2.0**k for k in range(7)), *, lr: float = 1e-4, steps: int = 60, eval_every: int = 5,
                         seed: int = 0) -> pd.DataFrame:
    """LoRA+ on the MiniLM teacher-student task for eta_B / eta_A in ``ratios`` (2^0 .. 2^6) at a fixed eta_A = lr.

    Returns:
        Rows: ratio, step, eval_loss (and the method columns of :func:`convergence_experiment`).
    """
    parts = []
    for ratio in ratios:
        df = convergence_experiment(("lora_plus",), steps=steps, ratio=ratio, lrs={"lora_plus": (lr,)}, eval_every=eval_every, seed=seed)
        parts.append(df.assign(ratio=ratio))
    return pd.concat(parts, ignore_index=True)
