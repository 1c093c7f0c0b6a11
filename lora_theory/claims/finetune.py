"""Fine-tuning claims of LoRA-GA (``lora_ga.*``) and LoRA+ (``lora_plus.*``) on real human-labelled tasks.

Every check reads (or runs, in process) the sweep points of :mod:`lora_theory.finetune.experiment`:
MiniLM-L6 under a frozen linear-probe head, VADER valence (regression) and VADER polarity
(classification), full FT / LoRA / LoRA-GA / LoRA+ at the papers' learning rate and at each
method's tuned learning rate, >= 3 seeds, steps to half of full fine-tuning's validation
improvement. Verdicts come from percentile bootstrap intervals over seeds
(:func:`lora_theory.finetune.stats.interval_verdict`) and use the tuned protocol; the paper
protocol is reported beside it. The speed-up and gap claims are "inconclusive" on a task where the
premise (full FT clearly beats LoRA) does not hold.

Negative controls corrupt the code under test through its module attributes
(``lora_theory.lora_ga.model``, ``lora_theory.lora_plus.optim``); the runs' code fingerprints
change with them, so a control recomputes the affected runs in process instead of reading the
uncorrupted ones from the store.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..finetune import experiment as ft
from ..finetune.stats import bootstrap_ci, interval_verdict
from . import Margin, Measurement, claim, control, patch

_PROTOCOL = "tuned"  # the verdicts' protocol; "paper" is reported beside it


def _tables(quick: bool, parts: tuple[str, ...] = ("main",), tasks: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    out = ft.experiment(quick, parts, jobs=1, tasks=tasks)  # in process: a control's patch must reach the runs
    table = ft.method_table(out["main"])
    return {**out, "table": table, "premise": ft.premise_table(table)}


def _combine(per_task: dict[str, bool | None], premise: dict[str, bool]) -> bool | None:
    """Tasks whose premise holds decide: any False -> False, all True -> True; none (or mixed with None) -> None."""
    votes = [v for t, v in per_task.items() if premise.get(t, True)]
    if any(v is False for v in votes):
        return False
    if votes and all(v is True for v in votes):
        return True
    return None


def _fmt(x: float) -> str:
    return "inf" if x == math.inf else ("n/a" if math.isnan(x) else f"{x:.2f}")


def _speedup(quick: bool, method: str, threshold: float, label: str) -> Measurement:
    d = _tables(quick)
    table, prem = d["table"], d["premise"]
    figures, margins, per_task, premise, parts = {}, {}, {}, {}, []
    for task in sorted(table.task.unique()):
        p = prem[(prem.task == task) & (prem.protocol == _PROTOCOL)].iloc[0]
        premise[task] = bool(p.premise)
        for proto in ("tuned", "paper"):
            sp = ft.paired(table, "lora", method, "steps_charged")
            sp = sp[(sp.task == task) & (sp.protocol == proto)]
            med, lo, hi = bootstrap_ci(sp.value)
            cpu = ft.paired(table, "lora", method, "cpu_charged")
            cpu = cpu[(cpu.task == task) & (cpu.protocol == proto)]
            cmed, clo, chi = bootstrap_ci(cpu.value)
            figures[f"{task}/{proto}"] = {"speedup_steps": [med, lo, hi], "speedup_cpu": [cmed, clo, chi], "per_seed": sp.value.tolist()}
            if proto == _PROTOCOL:
                v = interval_verdict(lo, hi, threshold)
                per_task[task] = v if premise[task] else None
                margins[f"{task}: speed-up interval low"] = Margin(lo, threshold, ">=")
                parts.append(f"{task}: {_fmt(med)}x [{_fmt(lo)}, {_fmt(hi)}] (CPU s {_fmt(cmed)}x), premise "
                             f"{'holds' if premise[task] else 'fails'} (full FT {_fmt(p.full_speedup_median)}x LoRA)")
        figures[f"{task}/premise"] = {"full_speedup_over_lora": [p.full_speedup_median, p.full_speedup_lo, p.full_speedup_hi],
                                      "best_loss_separated": bool(p.separated), "holds": premise[task]}
    return Measurement(_combine(per_task, premise), figures, f"{label} (tuned lr, steps to half of full FT's improvement, median "
                       f"[95% bootstrap] over seeds): " + "; ".join(parts), margins)


@claim(
    "lora_ga.speedup",
    statement="LoRA-GA (ArB2r, stable scale) converges up to 2-4x faster than vanilla LoRA: it reaches the target validation loss in at most half of LoRA's steps, its gradient-estimation batches charged.",
    reference="Wang et al. 2024, abstract and Sec. 4 (Fig. 1, training-loss curves)",
    figure="finetune_steps",
    test="tests/claims/test_finetune.py::test_speedup_verdicts_follow_intervals_and_premise",
    experiment=True,
)
def _ga_speedup(quick: bool) -> Measurement:
    return _speedup(quick, "lora_ga", 2.0, "LoRA-GA speed-up over LoRA")


@claim(
    "lora_plus.speedup",
    statement="LoRA+ (eta_B / eta_A = 2^4, Adam) fine-tunes about 2x faster than LoRA: it reaches the target validation loss in at most 1/1.5 of LoRA's steps (about 2x, with 25% tolerance).",
    reference="Hayou et al. 2024, abstract and Fig. 7 (steps to LoRA's final accuracy)",
    figure="finetune_steps",
    test="tests/claims/test_finetune.py::test_speedup_verdicts_follow_intervals_and_premise",
    experiment=True,
)
def _plus_speedup(quick: bool) -> Measurement:
    return _speedup(quick, "lora_plus", 1.5, "LoRA+ speed-up over LoRA")


def _gap(idx: np.ndarray, full: np.ndarray, lora: np.ndarray, ga: np.ndarray) -> float:
    f, lo, g = np.median(full[idx]), np.median(lora[idx]), np.median(ga[idx])
    return float((g - lo) / (f - lo)) if f != lo else math.nan


@claim(
    "lora_ga.gap_to_full",
    statement="LoRA-GA closes most of the gap between LoRA and full fine-tuning in the final test metric: (m_GA - m_LoRA) / (m_full - m_LoRA) >= 0.5 (T5 GLUE average in the paper: 97.6%).",
    reference="Wang et al. 2024, Table 1 (T5-base: full 87.91, LoRA 82.08, LoRA-GA 87.77)",
    figure="finetune_steps",
    test="tests/claims/test_finetune.py::test_gap_closed_fraction",
    experiment=True,
)
def _ga_gap(quick: bool) -> Measurement:
    d = _tables(quick)
    table, prem = d["table"], d["premise"]
    t = table[table.protocol == _PROTOCOL]
    figures, margins, per_task, premise, parts = {}, {}, {}, {}, []
    for task, g in t.groupby("task"):
        premise[task] = bool(prem[(prem.task == task) & (prem.protocol == _PROTOCOL)].premise.iloc[0])
        by = {m: g[g.method == m].sort_values("seed").test_metric.to_numpy(float) for m in ("full", "lora", "lora_ga")}
        n = min(len(v) for v in by.values())
        med, lo, hi = bootstrap_ci(np.arange(n), stat=lambda ix, by=by, n=n: _gap(ix.astype(int), by["full"][:n], by["lora"][:n], by["lora_ga"][:n]))
        per_task[task] = interval_verdict(lo, hi, 0.5) if premise[task] else None
        margins[f"{task}: gap closed, interval low"] = Margin(lo, 0.5, ">=")
        metric = g.metric.iloc[0]
        figures[task] = {"gap_closed": [med, lo, hi], "metric": metric, **{f"{m}_test_median": float(np.median(v)) for m, v in by.items()}}
        parts.append(f"{task} ({metric}: full {np.median(by['full']):.4g}, LoRA {np.median(by['lora']):.4g}, LoRA-GA {np.median(by['lora_ga']):.4g}): "
                     f"closes {_fmt(med)} [{_fmt(lo)}, {_fmt(hi)}] of the gap, premise {'holds' if premise[task] else 'fails'}")
    return Measurement(_combine(per_task, premise), figures, "LoRA-GA's share of the LoRA -> full FT gap (tuned lr, test metric medians over seeds): "
                       + "; ".join(parts), margins)


@claim(
    "lora_ga.ablation",
    statement="The paper's LoRA-GA configuration (direction ArB2r, stable scale) is not beaten by another direction (A2rBr, ArBr, random) or scale (gd, unit, weight_svd): no alternative has a lower final validation loss beyond the seed interval.",
    reference="Wang et al. 2024, Table 3 and the NeurIPS direction ablation (ArB2r / A2rBr / random)",
    figure="finetune_ablation",
    test="tests/claims/test_finetune.py::test_ablation_verdict",
    experiment=True,
)
def _ga_ablation(quick: bool) -> Measurement:
    d = _tables(quick, ("ablation",), tasks=(ft.ABLATION_TASK,))
    abl = d["ablation"].assign(final=lambda x: [v[-1] for v in x.curve_val])
    default = abl[(abl.direction == "ArB2r") & (abl.scale == "stable")].set_index("seed").final
    figures, margins, beaten, beats = {}, {}, [], []
    for (direction, scale), g in abl.groupby(["direction", "scale"]):
        if (direction, scale) == ("ArB2r", "stable"):
            figures["ArB2r/stable"] = {"final_val_median": float(default.median())}
            continue
        diff = (g.set_index("seed").final - default).dropna()  # alternative - default, paired by seed
        med, lo, hi = bootstrap_ci(diff)
        figures[f"{direction}/{scale}"] = {"minus_default": [med, lo, hi], "final_val_median": float(g.final.median())}
        margins[f"{direction}/{scale} - default, interval high"] = Margin(hi, 0.0, ">=")
        if interval_verdict(lo, hi, 0.0) is False:  # the whole interval below 0: the alternative beats the default
            beaten.append(f"{direction}/{scale} by {-med:.3g}")
        if lo > 0:  # the whole interval above 0: the default beats the alternative
            beats.append(f"{direction}/{scale}")
    lr = float(abl.lr.iloc[0])
    return Measurement(not beaten, figures, f"{ft.ABLATION_TASK}, LoRA-GA at its tuned lr {lr:g}, final validation loss vs ArB2r/stable "
                       f"(median {default.median():.4g}): " + (f"beaten by {', '.join(beaten)}" if beaten else "no alternative beats it beyond the interval")
                       + f"; it beats {len(beats)} of {len(figures) - 1} beyond the interval" + (f" ({', '.join(beats)})" if beats else ""), margins)


#: the init may cost at most this fraction of one epoch of training steps (the papers train >= 1 epoch)
INIT_BUDGET = 0.1


@claim(
    "lora_ga.init_cost",
    statement="LoRA-GA's initialization (K gradient batches, one SVD per layer, the weight offset) costs little against training: at most 10% of one epoch in LoRA-step equivalents (CPU seconds / one LoRA step's CPU seconds).",
    reference="Wang et al. 2024, Sec. 4 (memory and time of the initialization)",
    figure="finetune_steps",
    test="tests/claims/test_finetune.py::test_init_cost_units",
    experiment=True,
)
def _ga_init_cost(quick: bool) -> Measurement:
    from ..finetune.data import load_task

    task = ft.ABLATION_TASK
    d = _tables(quick, tasks=(task,))
    m = d["main"]
    m = m[m.task == task]
    lora_step = m[m.method == "lora"].groupby("seed").step_cpu.median()
    ga = m[m.method == "lora_ga"]
    c = [r.init_cpu / lora_step[r.seed] for r in ga.itertuples()]  # step equivalents per run
    med, lo, hi = bootstrap_ci(c)
    cfg = ft.QUICK if quick else ft.FULL
    epoch = len(load_task(task, "train")) / cfg.batch_size
    limit = INIT_BUDGET * epoch
    ok = interval_verdict(lo, hi, limit, "<=")
    return Measurement(ok, {"init_in_lora_steps": [med, lo, hi], "epoch_steps": epoch, "limit_steps": limit, "budget_steps": cfg.steps,
                            "K": cfg.ga_batches, "init_cpu_median": float(np.median(ga.init_cpu))},
                       f"LoRA-GA init = {_fmt(med)} [{_fmt(lo)}, {_fmt(hi)}] LoRA steps (K = {cfg.ga_batches} gradient batches + SVDs), "
                       f"{med / epoch:.1%} of an epoch ({epoch:.0f} steps; limit {INIT_BUDGET:.0%}); {med / cfg.steps:.0%} of this run's {cfg.steps}-step budget",
                       {"init cost (LoRA steps), interval high": Margin(hi, limit, "<=")})


@claim(
    "lora_plus.accuracy_gain",
    statement="LoRA+ (ratio 2^4) improves test accuracy over LoRA by 1-2 percentage points (each at its tuned learning rate); holds if the interval of the gain is >= 1 point.",
    reference="Hayou et al. 2024, abstract and Fig. 3 (RoBERTa GLUE: MNLI 86.5 vs 84.5, SST2 94.7 vs 93.1)",
    figure="finetune_steps",
    test="tests/claims/test_finetune.py::test_speedup_verdicts_follow_intervals_and_premise",
    experiment=True,
)
def _plus_accuracy(quick: bool) -> Measurement:
    d = _tables(quick, tasks=("vader_polarity",))
    t = d["table"]
    figures = {}
    for proto in ("tuned", "paper"):
        x = t[(t.task == "vader_polarity") & (t.protocol == proto)]
        a = x[x.method == "lora_plus"].set_index("seed").test_metric
        b = x[x.method == "lora"].set_index("seed").test_metric
        diff = (100 * (a - b)).dropna()  # percentage points, paired by seed
        figures[proto] = {"gain_pp": list(bootstrap_ci(diff)), "lora_plus_acc": float(a.median()), "lora_acc": float(b.median()),
                          "lr_lora_plus": float(x[x.method == "lora_plus"].lr.iloc[0]), "lr_lora": float(x[x.method == "lora"].lr.iloc[0])}
    med, lo, hi = figures[_PROTOCOL]["gain_pp"]
    f = figures[_PROTOCOL]
    return Measurement(interval_verdict(lo, hi, 1.0), figures,
                       f"vader_polarity test accuracy, tuned lr: LoRA+ {f['lora_plus_acc']:.2%} vs LoRA {f['lora_acc']:.2%}, gain "
                       f"{_fmt(med)} [{_fmt(lo)}, {_fmt(hi)}] points (paper protocol: {_fmt(figures['paper']['gain_pp'][0])})",
                       {"gain (points), interval low": Margin(lo, 1.0, ">=")})


def best_ratios(ratio_runs: pd.DataFrame, rel_tie: float = 1e-6) -> pd.Series:
    """Per seed: the ratio whose best eta_A gives the lowest final validation loss; ties (within ``rel_tie``) go to the smaller ratio."""
    r = ratio_runs.assign(final=[v[-1] if math.isfinite(v[-1]) else math.inf for v in ratio_runs.curve_val])
    per = r.groupby(["seed", "ratio"]).final.min().reset_index()
    out = {}
    for seed, g in per.groupby("seed"):
        g = g.sort_values("ratio")
        lowest = g.final.min()
        out[seed] = float(g[g.final <= lowest + rel_tie * abs(lowest)].ratio.iloc[0])
    return pd.Series(out, name="best_ratio")


@claim(
    "lora_plus.best_ratio",
    statement="The best learning-rate ratio eta_B / eta_A is about 2^4: log2 of the best ratio (each at its best eta_A) lies in [2, 6].",
    reference="Hayou et al. 2024, Sec. 5 and Fig. 3 (RoBERTa: ratio ~2^4; 2^2-2^3 with Init[1])",
    figure="finetune_ratio_heatmap",
    test="tests/claims/test_finetune.py::test_best_ratio_ties_go_to_the_smaller_ratio",
    experiment=True,
)
def _plus_best_ratio(quick: bool) -> Measurement:
    d = _tables(quick, ("ratio",), tasks=(ft.RATIO_TASK,))
    best = best_ratios(d["ratio"])
    logs = np.log2(best.to_numpy())
    med, lo, hi = bootstrap_ci(logs)
    inside = True if (lo >= 2 and hi <= 6) else (False if (hi < 2 or lo > 6) else None)
    return Measurement(inside, {"log2_best_ratio": [med, lo, hi], "per_seed": best.tolist(), "ratios": sorted(d["ratio"].ratio.unique().tolist())},
                       f"{ft.RATIO_TASK}, final validation loss over (eta_A, ratio): best ratio per seed {[f'2^{x:g}' for x in logs]}, "
                       f"log2 median {_fmt(med)} [{_fmt(lo)}, {_fmt(hi)}] (claimed 2..6)",
                       {"log2 best ratio, interval low": Margin(lo, 2.0, ">="), "log2 best ratio, interval high": Margin(hi, 6.0, "<=")})


# ---- negative controls: corruptions of the code under test -------------------------------------------------------------


def _no_ga_init(model, grads, **kwargs):
    """LoRA-GA whose init leaves PEFT's plain LoRA init in place (no SVD, no offset)."""
    return {}


@control("lora_ga.speedup", "plain_init", "apply_lora_ga replaced by a no-op: 'LoRA-GA' keeps the plain LoRA init and pays its gradient batches")
def _():
    return patch("lora_theory.lora_ga.model", "apply_lora_ga", _no_ga_init)


@control("lora_ga.gap_to_full", "plain_init", "apply_lora_ga replaced by a no-op: 'LoRA-GA' keeps the plain LoRA init")
def _():
    return patch("lora_theory.lora_ga.model", "apply_lora_ga", _no_ga_init)


def _ratio_one_patch():
    from ..lora_plus import optim

    original = optim.loraplus_param_groups

    def forced(model, lr, ratio, **kwargs):
        return original(model, lr, 1.0, **kwargs)

    return patch("lora_theory.lora_plus.optim", "loraplus_param_groups", forced)


@control("lora_plus.speedup", "ratio_one", "LoRA+ parameter groups with the ratio forced to 1 (eta_B = eta_A)")
def _():
    return _ratio_one_patch()


@control("lora_plus.accuracy_gain", "ratio_one", "LoRA+ parameter groups with the ratio forced to 1 (eta_B = eta_A)")
def _():
    return _ratio_one_patch()


@control("lora_plus.best_ratio", "ratio_one", "LoRA+ parameter groups with the ratio forced to 1: every ratio of the grid is plain LoRA")
def _():
    return _ratio_one_patch()


@control("lora_ga.ablation", "stable_scale_x1000", "the stable scale's factors A, B multiplied by 1000 (the offset still cancels them at step 0)")
def _():
    from ..lora_ga import model as ga_model

    original = ga_model.lora_ga_init

    def scaled(G, r, **kwargs):
        init = original(G, r, **kwargs)
        if kwargs.get("scale") != "stable":
            return init
        k = 1000.0
        return dataclasses.replace(init, A=init.A * k, B=init.B * k, c=init.c * k, zeta=init.zeta * k * k, offset=init.offset * k * k)

    return patch("lora_theory.lora_ga.model", "lora_ga_init", scaled)


@control("lora_ga.init_cost", "gradients_recomputed", "estimate_gradients run 8 times over (a re-estimate per call site): the init costs 8x")
def _():
    from ..lora_ga import model as ga_model

    original = ga_model.estimate_gradients

    def repeated(*args, **kwargs):
        batches = list(args[1])
        for _ in range(7):
            original(args[0], batches, *args[2:], **kwargs)
        return original(args[0], batches, *args[2:], **kwargs)

    return patch("lora_theory.lora_ga.model", "estimate_gradients", repeated)
