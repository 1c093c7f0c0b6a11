"""Figures of the fine-tuning experiment on ``cpython_mlm`` (claims ``lora_ga.speedup``, ``lora_ga.gap_to_full``,
``lora_ga.table3``, ``lora_ga.ablation``, ``lora_ga.init_cost``, ``lora_plus.speedup``, ``lora_plus.accuracy_gain``,
``lora_plus.best_ratio``), and the generated tables of ``paper_notes/finetune.md``.

Each study reads (or runs) the sweep points of :mod:`lora_theory.finetune.mlm` (the budget of
:func:`lora_theory.finetune.mlm.budget`) and returns a tidy table:

- ``finetune_curves``: validation loss (raw and smoothed) vs step, one row per (arm, lr, seed, step);
- ``finetune_steps``: every fine-tuning verdict, one row per (claim, part) with the effect, its
  interval, the threshold, the verdict, the seeds, the false-"holds" rate and the seeds that would
  decide it; the premise (full FT's speed-up over LoRA) is the first rows (the premise panel);
- ``finetune_ablation``: LoRA-GA's Table 3 arms and directions: final and test loss per seed;
- ``finetune_ratio_heatmap``: LoRA+'s smoothed final validation loss per ratio and seed.

:func:`notes_tables` renders the markdown tables of ``paper_notes/finetune.md`` from the stored
CSVs (``figures/finetune_*.csv``); the spans ``<!-- generated:finetune/NAME -->`` are rewritten by
:mod:`lora_theory.docs_sync` (``lora-theory notes --write``), the one home of generated numbers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..finetune import mlm
from . import lazy_plot, register_figure

_CLAIMS = ("lora_ga.speedup", "lora_ga.gap_to_full", "lora_ga.table3", "lora_ga.ablation", "lora_ga.init_cost", "lora_plus.speedup",
           "lora_plus.accuracy_gain", "lora_plus.best_ratio")


def _runs(quick: bool, stages=mlm.STAGES) -> dict:
    return mlm.mlm_experiment(mlm.budget(quick), stages, jobs=1)


def curves_table(quick: bool) -> pd.DataFrame:
    """Validation curves of every run (tidy: arm, lr, ratio, seed, step, val_loss, smoothed, budget, costs; ``tuning`` marks the tuning seed's runs).

    ``run_seconds``: the run's wall seconds in its worker (one torch thread, one process per core: about its CPU seconds,
    evaluations and model loading included).
    """
    from ..finetune.stats import smoothed_curve

    out = _runs(quick)
    rows = []
    runs = out["runs"]
    secs = runs["_seconds"] if "_seconds" in runs else pd.Series(math.nan, index=runs.index)  # itertuples renames "_" columns
    for r, sec in zip(runs.itertuples(), secs, strict=True):
        sm = smoothed_curve(r.curve_val)
        ratio = float(r.ratio) if r.ratio is not None and not (isinstance(r.ratio, float) and math.isnan(r.ratio)) else math.nan
        for s, v, w in zip(r.curve_step, r.curve_val, sm, strict=True):
            rows.append({"arm": r.arm, "lr": float(r.lr), "ratio": ratio, "seed": int(r.seed), "step": int(s), "val_loss": float(v),
                         "smoothed": float(w), "budget": out["cfg"].name, "step_cpu": float(r.step_cpu), "init_cpu": float(r.init_cpu),
                         "train_cpu": float(r.curve_cpu[-1]), "test_loss": float(r.test_loss), "test_acc": float(r.test_metric),
                         "tuning": bool(r.tuning), "run_seconds": float(sec)})
    return pd.DataFrame(rows, columns=["arm", "lr", "ratio", "seed", "step", "val_loss", "smoothed", "budget", "step_cpu", "init_cpu", "train_cpu",
                                       "test_loss", "test_acc", "tuning", "run_seconds"])


def verdicts_table(quick: bool) -> pd.DataFrame:
    """Every fine-tuning verdict (one row per claim part): effect, 95 % interval, threshold, verdict, seeds, false-holds rate."""
    from ..claims import run_check

    rows = []
    for cid in _CLAIMS:
        row = run_check(cid, quick=quick)
        figs = row["figures"] or {}
        decisions = [(k, v) for k, v in figs.items() if isinstance(v, dict) and "parts" in v]
        if not decisions:
            rows.append({"claim": cid, "block": "", "part": "", "verdict": row["verdict"], "claim_verdict": row["verdict"], "summary": row["summary"]})
        for block, dec in decisions:
            for name, p in dec["parts"].items():
                rows.append({"claim": cid, "block": block, "part": name.strip(), "estimate": p["estimate"], "low": p["low"], "high": p["high"],
                             "threshold": p["threshold"], "sense": p["sense"],
                             "part_verdict": {True: "holds", False: "fails", None: "inconclusive"}[p["holds"]],
                             "seeds_to_decide": p["seeds_to_decide"], "verdict": dec["verdict"], "claim_verdict": row["verdict"],
                             "n_seeds": dec["n_seeds"], "false_holds": dec["false_holds"], "n_null": dec["n_null"], "summary": row["summary"]})
    df = pd.DataFrame(rows)
    df["budget"] = mlm.budget(quick).name
    return df


def steps_table(quick: bool) -> pd.DataFrame:
    """The verdict table, the premise rows first (the premise panel)."""
    df = verdicts_table(quick)
    first = (df.block == "premise").astype(int)
    return df.assign(_p=first).sort_values("_p", ascending=False, kind="stable").drop(columns="_p").drop_duplicates(
        subset=["claim", "block", "part"]).reset_index(drop=True)


def ablation_table(quick: bool) -> pd.DataFrame:
    """LoRA-GA's Table 3 arms (LoRA, +SO, +GA, LoRA-GA) and directions (A2rBr, ArBr): final (smoothed) and test loss per seed."""
    out = _runs(quick, ("core", "methods", "arms"))
    r = out["runs"]
    if not len(r):
        return pd.DataFrame(columns=["arm", "seed", "lr", "final_val", "test_loss"])
    lrs = out["lrs"]
    keep = r[~r.tuning & ((r.arm.isin(["+SO", "+GA", "dir_A2rBr", "dir_ArBr"])) | ((r.arm == "lora") & np.isclose(r.lr, lrs.get("lora", -1)))
                          | ((r.arm == "lora_ga") & np.isclose(r.lr, lrs.get("lora_ga", -1))))]
    return pd.DataFrame({"arm": keep.arm, "seed": keep.seed.astype(int), "lr": keep.lr, "final_val": keep.final, "test_loss": keep.test_loss,
                         "budget": out["cfg"].name}).reset_index(drop=True)


def ratio_heatmap_table(quick: bool) -> pd.DataFrame:
    """LoRA+ at eta_A = LoRA's tuned lr: smoothed final validation loss per (ratio, seed); ratio 1 is LoRA."""
    out = _runs(quick, ("core", "ratio"))
    r = out["runs"]
    if not len(r) or "lora" not in out["lrs"] or "ratio" not in r:
        return pd.DataFrame(columns=["ratio", "seed", "final_val", "eta_A"])
    lr = out["lrs"]["lora"]
    rows = []
    for x in r[~r.tuning & np.isclose(r.lr, lr)].itertuples():
        if x.arm == "lora" and int(x.r) == 8:
            rows.append({"ratio": 1.0, "seed": int(x.seed), "final_val": x.final, "eta_A": lr})
        elif x.arm == "lora_plus":
            rows.append({"ratio": float(x.ratio), "seed": int(x.seed), "final_val": x.final, "eta_A": lr})
    return pd.DataFrame(rows, columns=["ratio", "seed", "final_val", "eta_A"]).assign(budget=out["cfg"].name)


_SETUP = """
import copy
from lora_theory.finetune import protocol as P
from lora_theory.lora import layer as L
base, tok, splits = P._base("cpython_mlm", 0)
model = copy.deepcopy(base)
L.add_lora(model.encoder, P.TARGETS, r={r}, alpha=16.0, rslora=True, init="lora", seed=0)
model.eval()
loss_fn = P.ft_tasks.SupervisedTask("mlm")
bs = [P._batches(None, splits["train"], list(range(16 * k, 16 * (k + 1)))) for k in range({K})]
from lora_theory.lora.peft_bridge import lora_factors
A, B = lora_factors(model)
opt = torch.optim.AdamW([*A, *B], lr=1e-3)
"""
_INIT = """
from lora_theory.lora_ga import model as M
G = M.estimate_gradients(model, bs, loss_fn.loss, P.TARGETS, mode="eval")
M.apply_lora_ga(model, G, direction="ArB2r", scale="stable", gamma=16.0, svd="randomized", seed=0, compute_dtype=torch.float32)
"""
_STEP = """
loss = loss_fn.loss(model, bs[0])
opt.zero_grad(set_to_none=True)
loss.backward()
opt.step()
"""


def init_memory_table(quick: bool) -> pd.DataFrame:
    """LoRA-GA's initialization (K = 4 gradient batches, SVDs, offset) vs one LoRA training step: peak memory added and wall seconds.

    Each measured in a fresh process (``lora_theory._memory.peak_memory_bytes``, one thread) on the
    ``cpython_mlm`` model with r = 8 adapters on every linear layer (both halves of the paper's
    init-cost table: time and memory).
    """
    from .._memory import peak_memory_bytes

    K = mlm.budget(quick).ga_batches
    rows = []
    for what, run in (("lora_ga_init", _INIT), ("lora_step", _STEP)):
        m = peak_memory_bytes(_SETUP.format(r=8, K=K), run, threads=1)
        rows.append({"what": what, "peak_bytes": m["peak_bytes"], "seconds": m["seconds"], "K": K, "r": 8})
    return pd.DataFrame(rows)


# ---- generated tables of paper_notes/finetune.md -------------------------------------------------------------------------

_NAMES = {"full": "full FT", "lora": "LoRA r=8", "lora_r2": "LoRA r=2", "lora_ga": "LoRA-GA", "lora_plus": "LoRA+", "+SO": "+SO", "+GA": "+GA",
          "dir_A2rBr": "LoRA-GA A2rBr", "dir_ArBr": "LoRA-GA ArBr"}


def _f(x: float, d: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return "inf" if x == math.inf else f"{x:.{d}g}"


def notes_tables(figures_dir: str | Path = "figures") -> dict[str, str]:
    """{marker name: markdown} rendered from the stored CSVs ``finetune_steps.csv``, ``finetune_curves.csv``, ``finetune_ablation.csv``."""
    fig = Path(figures_dir)
    out = {}
    v = pd.read_csv(fig / "finetune_steps.csv")
    lines = ["| claim | part | effect [95 % interval] | interval half-width | threshold | part verdict | claim verdict | seeds | false-holds rate | "
             "seeds to decide |", "|---|---|---|---|---|---|---|---|---|---|"]
    gated = ", ".join(f"`{c}`" for c in v[v.block == "premise"].claim.unique())
    seen_premise = False
    for r in v.itertuples():
        if r.block == "premise":  # one premise, shared by the claims it gates: one row
            if seen_premise:
                continue
            seen_premise = True
        if not isinstance(r.part, str) or not r.part:
            lines.append(f"| `{r.claim}` | (not run) | | | | | {r.verdict} | | | |")
            continue
        half = _f((r.high - r.low) / 2)
        name = "premise: " + r.part if r.block == "premise" else (f"{r.block}: {r.part}" if r.block not in ("tuned",) else r.part)
        std = "" if pd.isna(r.seeds_to_decide) else _f(r.seeds_to_decide)
        who = f"premise of {gated}" if r.block == "premise" else f"`{r.claim}`"
        lines.append(f"| {who} | {name} | {_f(r.estimate)} [{_f(r.low)}, {_f(r.high)}] | {half} | {r.sense} {r.threshold:g} | {r.part_verdict} | "
                     f"{r.claim_verdict if r.block != 'premise' else '(the premise)'} | {int(r.n_seeds)} | {r.false_holds:.1%} ({int(r.n_null)} relabellings) | {std} |")
    if "summary" not in v:
        v = v.assign(summary="")
    prem = v[v.block == "premise"]
    if len(prem) and isinstance(prem.summary.iloc[0], str) and "premise (" in prem.summary.iloc[0]:
        lines += ["", "Premise, as the checks state it: " + prem.summary.iloc[0][prem.summary.iloc[0].index("premise ("):]]
    for r in v.drop_duplicates("claim").itertuples():
        if isinstance(r.summary, str):
            text = r.summary.split("; premise (")[0] if "; premise (" in r.summary else r.summary  # the premise is stated once, above
            lines += ["", f"`{r.claim}`: {text}"]
    out["finetune_verdicts"] = "\n".join(lines)
    cm = pd.read_csv(fig / "finetune_curves.csv")
    out["finetune_budgets"] = budgets_table(cm)
    mem = fig / "finetune_init_memory.csv"
    if mem.exists():
        m = pd.read_csv(mem).set_index("what")
        out["finetune_init_memory"] = ("| measured (fresh process, 1 thread) | peak memory added | wall seconds |\n|---|---|---|\n" + "\n".join(
            f"| {w} | {r.peak_bytes / 2**20:.0f} MiB | {r.seconds:.2f} |" for w, r in m.iterrows())
            + f"\n\nLoRA-GA's init takes {m.peak_bytes['lora_ga_init'] / max(m.peak_bytes['lora_step'], 1):.1f}x the peak memory and "
              f"{m.seconds['lora_ga_init'] / m.seconds['lora_step']:.1f}x the time of one LoRA training step.")
    else:  # no stored measurement: say so rather than leave an old number standing
        out["finetune_init_memory"] = "(not measured: `figures/finetune_init_memory.csv` is not stored; `lora-theory figures finetune_init_memory` makes it)"
    c = pd.read_csv(fig / "finetune_curves.csv")
    if "tuning" not in c:
        c = c.assign(tuning=False, run_seconds=math.nan)
    tune = c[c.tuning.astype(bool)]
    c = c[~c.tuning.astype(bool)]
    out["finetune_tuning"] = _tuning_table(tune) if len(tune) else "No tuning run in the store (the budget's learning rates are fixed)."
    if len(c):
        last = c[c.step == c.groupby(["arm", "lr", "ratio", "seed"], dropna=False).step.transform("max")]
        first = c[c.step == 0]
        rows = ["| arm | lr | ratio | seeds | start loss | smoothed final val loss, mean [min, max] |", "|---|---|---|---|---|---|"]
        for (arm, lr, ratio), g in last.groupby(["arm", "lr", "ratio"], dropna=False):
            f0 = first[(first.arm == arm) & np.isclose(first.lr, lr)].val_loss
            rows.append(f"| {_NAMES.get(arm, arm)} | {lr:g} | {'' if pd.isna(ratio) else f'{ratio:g}'} | {g.seed.nunique()} | {_f(f0.mean(), 4)} | "
                        f"{_f(g.smoothed.mean(), 4)} [{_f(g.smoothed.min(), 4)}, {_f(g.smoothed.max(), 4)}] |")
        runs = last.drop_duplicates(["arm", "lr", "ratio", "seed"])
        cost = ["| arm | runs | CPU s per step (median) | init CPU s (median) | training CPU s per run (median) | test loss mean | test accuracy mean |",
                "|---|---|---|---|---|---|---|"]
        for arm, g in runs.groupby("arm"):
            cost.append(f"| {_NAMES.get(arm, arm)} | {len(g)} | {g.step_cpu.median():.3f} | {g.init_cpu.median():.2f} | {g.train_cpu.median():.1f} | "
                        f"{g.test_loss.mean():.4f} | {g.test_acc.mean():.2%} |")
        tlast = tune[tune.step == tune.groupby(["arm", "lr", "ratio", "seed"], dropna=False).step.transform("max")] if len(tune) else tune
        allruns = pd.concat([runs, tlast.drop_duplicates(["arm", "lr", "ratio", "seed"])], ignore_index=True)
        diverged = int((~np.isfinite(allruns.smoothed.astype(float))).sum())
        wall = allruns.run_seconds.sum()
        out["finetune_runs"] = ("\n".join(rows) + f"\n\nBudget: `{c.budget.iloc[0]}`; steps per run: {int(c.step.max())}; verdict-seed runs: {len(runs)}; "
                                f"their training CPU: {runs.train_cpu.sum() / 60:.1f} CPU-minutes (+ evaluations, model loading)"
                                + (f"; all {len(allruns)} runs (tuning included), whole runs: {wall / 60:.0f} CPU-minutes "
                                   f"({wall / len(allruns):.0f} s per run, evaluations and model loading included; one thread per run)"
                                   if np.isfinite(wall) and wall > 0 else "") + f"; diverged runs: {diverged}.\n\n" + "\n".join(cost))
    else:
        out["finetune_runs"] = "No finished run in the store."
    return out


def budgets_table(measured: pd.DataFrame | None = None) -> str:
    """The budgets of :data:`lora_theory.finetune.mlm.BUDGETS` as a markdown table (from the code: one source for the settings).

    ``measured``: the stored curves (``finetune_curves.csv``, every run); when it has whole-run seconds,
    each budget's cost is estimated from them: per run, (steps x the median CPU seconds of a step) +
    (evaluations x the median seconds of one evaluation), the latter being what a measured run spent
    besides its steps and init, per evaluation (model loading counted in it).
    """
    est = None
    if measured is not None and len(measured) and "run_seconds" in measured and measured.run_seconds.notna().any():
        runs = measured.groupby(["arm", "lr", "ratio", "seed"], dropna=False).agg(
            n=("step", "size"), sec=("run_seconds", "first"), train=("train_cpu", "first"), init=("init_cpu", "first"), step=("step_cpu", "first"))
        per_eval = float(((runs.sec - runs.train - runs.init) / (runs.n + 2)).median())  # + the final validation and the test evaluation
        est = (float(runs.step.median()), per_eval, measured.budget.iloc[0])
    lines = ["| budget | steps | tuning seed + verdict seeds | lr grids (tuning seed) | Table 3 arms, directions | LoRA+ ratios | curve evaluations | runs"
             + (" | CPU estimate" if est else "") + " |", "|---|---|---|---|---|---|---|---|" + ("---|" if est else "")]
    for c in mlm.BUDGETS.values():
        grids = "; ".join(f"{m} {', '.join(f'{x:g}' for x in c.grid(m))}" for m in mlm.MLM_LR_GRID)
        grids += f" (an edge extends x sqrt(10), up to {c.extend}x)" if c.extend else " (fixed: not tuned)"
        val = "the whole validation split" if c.val_curve >= 100_000 else f"the first {c.val_curve} validation windows"
        lines.append(f"| `{c.name}` | {c.steps} (warm-up {c.warmup}) | 1 + {len(c.verdict_seeds)} | {grids} | +SO, +GA"
                     f"{', ' + ', '.join(c.directions) if c.directions else ' (no direction ablation)'} | "
                     f"{', '.join(f'2^{math.log2(x):g}' for x in c.ratios)} | every {c.eval_every} steps, {val} | "
                     + "{tuning} + {verdict}".format(**mlm.planned_runs(c)) + (f" | {_cost(c, est):.0f} CPU-min |" if est else " |"))
    if est:
        lines += ["", f"CPU estimate: per run, steps x {est[0]:.3f} CPU-s (the median step) + evaluations x {est[1]:.2f} s (the median "
                  f"evaluation, model loading included), both measured on the stored `{est[2]}` runs; grid extensions not counted."]
    return "\n".join(lines)


def _cost(c: mlm.MLMConfig, est: tuple[float, float, str]) -> float:
    """Estimated CPU minutes of budget ``c`` from (seconds per step, seconds per evaluation)."""
    n = mlm.planned_runs(c)
    evals = c.steps // c.eval_every + 1 + (1 if c.steps % c.eval_every else 0) + 1 + int(c.final_val)  # the curve, the test, the final val
    return (n["tuning"] + n["verdict"]) * (c.steps * est[0] + evals * est[1]) / 60


def controls_table(rows: list[dict]) -> str:
    """The stored negative controls of the fine-tuning claims (``lora-theory check --controls --json`` rows) as a markdown table.

    Each row: the claim, the control, the verdict under it, caught or not, and the check's first decided
    part under the corruption (its effect, interval and threshold, cut from the summary).
    """
    import re

    lines = ["| claim | control | verdict under the control | caught | measured under the control |", "|---|---|---|---|---|"]
    for r in rows:
        m = re.search(r"([^:;]*= \S+ \[[^\]]*\] \(claim [^)]*\))", r.get("summary") or "")
        what = m.group(1).strip() if m else (r.get("summary") or "")[:160]
        lines.append(f"| `{r['id']}` | `{r['control']}` | {r['verdict']} | {'yes' if r['caught'] else '**no**'} | {what.replace('|', '/')} |")
    n = sum(bool(r["caught"]) for r in rows)
    return "\n".join(lines) + f"\n\n{n} of {len(rows)} controls caught."


def _tuning_table(tune: pd.DataFrame) -> str:
    """The tuning seed's runs: smoothed final validation loss per (method, lr), the chosen lr marked, an lr at its grid's edge said."""
    last = tune[tune.step == tune.groupby(["arm", "lr", "ratio", "seed"], dropna=False).step.transform("max")]
    lines = ["| method | lr: smoothed final validation loss (tuning seed) | tuned lr |", "|---|---|---|"]
    for arm, g in last.groupby("arm", sort=False):
        g = g.sort_values("lr")
        best = g.loc[g.smoothed.idxmin()]
        edge = math.isclose(best.lr, g.lr.min()) or math.isclose(best.lr, g.lr.max())
        cells = ", ".join(("**" if math.isclose(x.lr, best.lr) else "") + f"{x.lr:g}: {x.smoothed:.3f}" + ("**" if math.isclose(x.lr, best.lr) else "")
                          for x in g.itertuples())
        lines.append(f"| {_NAMES.get(arm, arm)} | {cells} | {best.lr:g}{' (at the edge of its grid)' if edge else ''} |")
    return "\n".join(lines)


register_figure("finetune_curves", claims=_CLAIMS,
                description="Validation loss vs step of continued pretraining (masked tokens, MiniLM-L6 on CPython's documentation prose, all linear "
                            "layers adapted): full FT, LoRA r=8 and r=2, LoRA-GA, LoRA+, mean over the verdict seeds with a 95% bootstrap band.",
                compute=curves_table, plot=lazy_plot("finetune", "plot_curves"), experiment=True)
register_figure("finetune_steps", claims=_CLAIMS,
                description="Every fine-tuning verdict: effect with its 95% bootstrap interval over seeds against the claim's threshold (premise "
                            "panel first: full FT's speed-up over LoRA), the verdict and the rule's measured false-holds rate.",
                compute=steps_table, plot=lazy_plot("finetune", "plot_steps"), experiment=True)
register_figure("finetune_ablation", claims=("lora_ga.table3", "lora_ga.ablation"),
                description="LoRA-GA's Table 3 arms (LoRA, +SO, +GA, LoRA-GA) and directions (A2rBr, ArBr) on cpython_mlm: test loss per seed.",
                compute=ablation_table, plot=lazy_plot("finetune", "plot_ablation"), experiment=True)
register_figure("finetune_init_memory", claims=("lora_ga.init_cost",),
                description="LoRA-GA's initialization (4 gradient batches, SVDs, offset) vs one LoRA training step on cpython_mlm: peak memory "
                            "added and wall seconds, each in a fresh single-threaded process.",
                compute=init_memory_table, plot=lazy_plot("finetune", "plot_init_memory"), experiment=True)
register_figure("finetune_ratio_heatmap", claims=("lora_plus.best_ratio",),
                description="LoRA+ on cpython_mlm at eta_A = LoRA's lr: smoothed final validation loss vs the ratio eta_B / eta_A (2^0 = LoRA) per seed.",
                compute=ratio_heatmap_table, plot=lazy_plot("finetune", "plot_ratio_heatmap"), experiment=True)
