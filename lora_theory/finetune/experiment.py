"""The fine-tuning experiment: every run a sweep point, two protocols, steps-to-target over seeds, the premise check.

Parts (each a list of :func:`~lora_theory.finetune.protocol.run_point` points, run by
``lora_theory.sweeps.run_sweep`` into one store, resumable, parallel with ``jobs``):

- ``main``: every task x method x learning rate of ``LR_GRID[method]`` on the tuning seed (the
  first), then every other seed at the tuned and at the papers' learning rate;
- ``ablation`` (``ABLATION_TASK``): LoRA-GA's directions (ArB2r, A2rBr, ArBr, random) and scales
  (stable, gd, unit, weight_svd), one factor at a time, at LoRA-GA's tuned learning rate;
- ``ratio`` (``RATIO_TASK``): LoRA+ over (eta_A in ``LR_GRID["lora_plus"]``) x ``ratios`` x every
  seed; ratio 1 is plain LoRA (bit for bit: same init, same rate for A and B).

Protocols (both reported): ``paper`` every method at the papers' shared learning rate 1e-4
(LoRA-GA's T5 setting; LoRA+ with eta_A = 1e-4, ratio 2^4; LoRA-GA ArB2r, stable, gamma 16);
``tuned`` every method at its own best learning rate of a 4-point grid, chosen by the final
validation loss (the first ``val_curve`` validation entries) of the tuning seed.

Target: ``L0 - TARGET_FRACTION * (L0 - L_full)`` with L0 the validation loss at step 0 (the same
for every method: LoRA's B = 0 and LoRA-GA's offset keep the output) and L_full the median over
seeds of full fine-tuning's best validation loss under the same protocol. Steps to the target
are interpolated between evaluations; LoRA-GA is charged its ``ga_batches`` gradient batches in
steps and its initialization in CPU seconds.

Premise: :func:`premise_table`, the decision rule of issue 19 (full FT's speed-up over LoRA to
LoRA's smoothed final loss, interval above 1 and the exact relabelling test, its false-"holds"
rate reported), the same rule as on ``cpython_mlm``. The claims are decided on ``cpython_mlm``
(:mod:`lora_theory.finetune.mlm`); these VADER tasks keep running for comparison.

Reference: issue 14; Wang et al. (2024) Sec. 4; Hayou et al. (2024) Sec. 5, Fig. 3 and Fig. 7.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validate import InvalidArgumentError, check_choice
from ..sweeps import run_points
from . import protocol
from .data import TASKS
from .stats import crossing, ratio

__all__ = ["ABLATIONS", "ABLATION_TASK", "FULL", "LR_GRID", "PAPER", "QUICK", "RATIO_TASK", "TARGET_FRACTION", "Config", "experiment",
           "method_table", "paired", "premise_table", "protocol_rows", "store_path", "tuned_lrs"]

#: learning-rate grids (4 values each, every one holding the papers' 1e-4)
LR_GRID = {"full": (1e-5, 3e-5, 1e-4, 3e-4), "lora": (3e-5, 1e-4, 3e-4, 1e-3), "lora_ga": (1e-5, 3e-5, 1e-4, 3e-4),
           "lora_plus": (3e-5, 1e-4, 3e-4, 1e-3)}
#: the papers' hyper-parameters (LoRA-GA T5: lr 1e-4, ArB2r, stable, gamma 16; LoRA+: ratio 2^4)
PAPER = {"lr": 1e-4, "ratio": 16.0, "direction": "ArB2r", "scale": "stable", "gamma": 16.0}
#: LoRA-GA ablations: one factor at a time away from (ArB2r, stable)
ABLATIONS = (("ArB2r", "stable"), ("A2rBr", "stable"), ("ArBr", "stable"), ("random", "stable"), ("ArB2r", "gd"), ("ArB2r", "unit"),
             ("ArB2r", "weight_svd"))
#: the task of the LoRA-GA ablation and of the LoRA+ ratio grid (the classification task: the papers' GLUE setting)
ABLATION_TASK = RATIO_TASK = "vader_polarity"
#: the target is this fraction of full fine-tuning's improvement of the validation loss
TARGET_FRACTION = 0.5


@dataclass(frozen=True)
class Config:
    """A budget: steps of ``batch_size`` examples, evaluation cadence, seeds, and the LoRA+ ratio grid."""

    name: str
    steps: int
    seeds: tuple[int, ...]
    ratios: tuple[float, ...]
    batch_size: int = 32
    warmup: int = 6
    eval_every: int = 5
    val_curve: int = 200
    ga_batches: int = 4
    r: int = 8
    alpha: float = 16.0
    tasks: tuple[str, ...] = field(default=tuple(TASKS))


QUICK = Config("quick", steps=40, seeds=(0, 1, 2), ratios=(1.0, 4.0, 16.0, 64.0), warmup=4, val_curve=128, tasks=("vader_polarity",))
FULL = Config("full", steps=100, seeds=(0, 1, 2, 3, 4), ratios=(1.0, 4.0, 16.0, 64.0), warmup=10, eval_every=10)


def store_path() -> Path:
    """The experiment's results store: ``$LORA_THEORY_FINETUNE_STORE``, else ``~/.cache/lora-theory/finetune.sqlite``."""
    env = os.environ.get("LORA_THEORY_FINETUNE_STORE")
    return Path(env) if env else Path.home() / ".cache" / "lora-theory" / "finetune.sqlite"


def _point(cfg: Config, task: str, method: str, lr: float, seed: int, **extra: Any) -> dict[str, Any]:
    p = {"task": task, "method": method, "lr": lr, "seed": seed, "steps": cfg.steps, "batch_size": cfg.batch_size, "warmup": cfg.warmup,
         "eval_every": cfg.eval_every, "val_curve": cfg.val_curve, "r": cfg.r, "alpha": cfg.alpha}
    if method == "lora_ga":
        p |= {"ga_batches": cfg.ga_batches, "direction": PAPER["direction"], "scale": PAPER["scale"], "gamma": PAPER["gamma"]}
    if method == "lora_plus":
        p |= {"ratio": PAPER["ratio"]}
    p |= extra
    p["code"] = protocol.code_fingerprint(method)
    return p


def _run(points: list[dict], cfg: Config, store: Path, jobs: int, executor: str | None, progress: bool) -> pd.DataFrame:
    """Run the missing points; return the stored rows of exactly these points (one per point)."""
    return run_points(protocol.run_point, points, store, name=f"finetune-{cfg.name}", what="fine-tuning runs", jobs=jobs, executor=executor,
                      progress=progress, describe=lambda row: str(row[["task", "method", "lr", "seed"]].to_dict()))


def _steps(row, target: float) -> float:
    return crossing(row.curve_step, row.curve_val, target)


def tuned_lrs(main: pd.DataFrame) -> dict[tuple[str, str], float]:
    """{(task, method): lr} minimizing the final validation loss of the tuning seed (the lowest seed; a diverged run counts as inf).

    The grid runs on the tuning seed only; the other seeds run at the tuned and the papers' lr.
    """
    d = main[main.seed == main.seed.min()]
    d = d.assign(final=[v[-1] if math.isfinite(v[-1]) else math.inf for v in d.curve_val])
    med = d.groupby(["task", "method", "lr"]).final.median().reset_index()
    best = med.sort_values(["final", "lr"]).groupby(["task", "method"]).head(1)
    return {(t, m): float(lr) for t, m, lr in zip(best.task, best.method, best.lr, strict=True)}


def protocol_rows(main: pd.DataFrame) -> pd.DataFrame:
    """The runs of each protocol: rows of ``main`` with a ``protocol`` column ("paper" or "tuned")."""
    lrs = tuned_lrs(main)
    paper = main[np.isclose(main.lr, PAPER["lr"])].assign(protocol="paper")
    tuned = main[[math.isclose(lr, lrs[(t, m)]) for t, m, lr in zip(main.task, main.method, main.lr, strict=True)]].assign(protocol="tuned")
    return pd.concat([paper, tuned], ignore_index=True)


def method_table(main: pd.DataFrame, fraction: float = TARGET_FRACTION) -> pd.DataFrame:
    """Per (task, protocol, method, seed): lr, target, steps and CPU seconds to the target, best/final val loss, test metric.

    ``steps`` counts training steps; ``steps_charged`` adds LoRA-GA's gradient batches and
    ``cpu_charged`` its initialization CPU seconds (interpolated like the steps).
    """
    rows = []
    runs = protocol_rows(main)
    for (task, proto), g in runs.groupby(["task", "protocol"]):
        L0 = float(np.median([v[0] for v in g.curve_val]))
        full = g[g.method == "full"]
        L_full = float(np.median([min(v) for v in full.curve_val])) if len(full) else math.nan
        target = L0 - fraction * (L0 - L_full)
        for r in g.itertuples():
            s = _steps(r, target)
            cpu = float(np.interp(s, r.curve_step, r.curve_cpu)) if math.isfinite(s) else math.inf
            rows.append({"task": task, "protocol": proto, "method": r.method, "seed": int(r.seed), "lr": float(r.lr), "L0": L0, "target": target,
                         "steps": s, "steps_charged": s + r.init_steps, "cpu": cpu, "cpu_charged": cpu + r.init_cpu, "init_cpu": r.init_cpu,
                         "step_cpu": r.step_cpu, "best_val": float(min(r.curve_val)), "final_val": float(r.curve_val[-1]),
                         "test_loss": r.test_loss, "test_metric": r.test_metric, "metric": r.metric, "diverged": bool(r.diverged)})
    return pd.DataFrame(rows)


def paired(table: pd.DataFrame, num: str, den: str, column: str = "steps_charged") -> pd.DataFrame:
    """Per (task, protocol, seed): ratio(column of ``num``, column of ``den``), e.g. steps_LoRA / steps_LoRA-GA = LoRA-GA's speed-up."""
    a = table[table.method == num].set_index(["task", "protocol", "seed"])[column]
    b = table[table.method == den].set_index(["task", "protocol", "seed"])[column]
    j = pd.concat([a.rename("num"), b.rename("den")], axis=1).dropna(how="any").reset_index()
    return j.assign(value=[ratio(x, y) for x, y in zip(j.num, j.den, strict=True)])


def premise_table(main: pd.DataFrame) -> pd.DataFrame:
    """Per (task, protocol): full FT's speed-up over LoRA decided by the fine-tuning decision rule (issue 19), as on ``cpython_mlm``.

    Per seed: the speed-up of full FT over LoRA to LoRA's smoothed final validation loss
    (:func:`lora_theory.finetune.mlm.speedup_pair`: full FT never reaching it counts as speed-up 0), and
    the same with the roles swapped (the relabelling null); :func:`lora_theory.finetune.stats.decide` (bootstrap interval above 1 and
    the exact relabelling test; false-"holds" rate measured) gives ``premise``.
    """
    from .mlm import speedup_pair
    from .stats import Component, decide, geo_mean, smoothed_final

    rows = []
    runs = protocol_rows(main)
    runs = runs[runs.seed != main.seed.min()]  # the tuning seed chose the lrs: no verdict uses it
    for (task, proto), g in runs.groupby(["task", "protocol"]):
        a = g[g.method == "lora"].drop_duplicates("seed").set_index("seed")
        b = g[g.method == "full"].drop_duplicates("seed").set_index("seed")
        sp, sw = [], []
        for s in sorted(set(a.index) & set(b.index)):
            ra = a.loc[s].copy()
            rb = b.loc[s].copy()
            ra["final"], rb["final"] = smoothed_final(ra.curve_val), smoothed_final(rb.curve_val)
            sp.append(speedup_pair(ra, rb)[2])
            sw.append(speedup_pair(rb, ra)[2])
        if len(sp) < 2:
            continue
        d = decide({"speedup": sp, "swapped": sw}, [Component("full FT speed-up over LoRA", geo_mean("speedup"), 1.0)], ["speedup", "swapped"])
        p = d.parts[0]
        rows.append({"task": task, "protocol": proto, "full_speedup": p.estimate, "full_speedup_lo": p.low, "full_speedup_hi": p.high,
                     "verdict": d.verdict, "n_seeds": d.n, "false_holds": d.false_holds, "premise": d.holds is True})
    return pd.DataFrame(rows, columns=["task", "protocol", "full_speedup", "full_speedup_lo", "full_speedup_hi", "verdict", "n_seeds",
                                       "false_holds", "premise"])


def experiment(quick: bool = True, parts: tuple[str, ...] = ("main",), *, store: str | Path | None = None, jobs: int = 1,
               executor: str | None = None, progress: bool = False, tasks: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """Run (or read back) the parts of the experiment; returns {part: stored rows} (``main`` always).

    Args:
        quick: the QUICK budget (vader_polarity, 3 seeds, 40 steps) or FULL (both tasks, 5 seeds, 100 steps).
        parts: any of "main", "ablation", "ratio".
        store: results store (default :func:`store_path`); finished points are never recomputed.
        jobs, executor: as :func:`lora_theory.sweeps.run_sweep` (a negative control's patch only
            reaches the in-process executor: checks use ``jobs=1``).
        tasks: restrict "main" to these tasks (default: every task).
    """
    for p in parts:
        check_choice("parts", p, ("main", "ablation", "ratio"))
    cfg = QUICK if quick else FULL
    tasks = cfg.tasks if tasks is None else tasks
    for t in tasks:
        check_choice("tasks", t, tuple(TASKS))
    store = Path(store) if store is not None else store_path()
    for m, grid in LR_GRID.items():
        if not any(math.isclose(PAPER["lr"], x) for x in grid):  # the paper protocol reads its runs off the grid
            raise InvalidArgumentError(f"LR_GRID[{m!r}]: expected a grid holding the papers' lr {PAPER['lr']:g}, got {grid}")
    main_tasks = set(tasks) | ({ABLATION_TASK} if "ablation" in parts else set()) | ({RATIO_TASK} if "ratio" in parts else set())
    tune, rest = cfg.seeds[0], cfg.seeds[1:]
    runs = []
    for t in sorted(main_tasks):  # one task at a time: an interrupted run leaves whole tasks behind
        grid_runs = _run([_point(cfg, t, m, lr, tune) for m in protocol.METHODS for lr in LR_GRID[m]], cfg, store, jobs, executor, progress)
        lrs = tuned_lrs(grid_runs)
        pts = [_point(cfg, t, m, lr, s) for m in protocol.METHODS for lr in sorted({lrs[(t, m)], PAPER["lr"]}) for s in rest]
        runs += [grid_runs, _run(pts, cfg, store, jobs, executor, progress)]
    out = {"main": pd.concat(runs, ignore_index=True)}
    if "ablation" in parts:
        lr = tuned_lrs(out["main"])[(ABLATION_TASK, "lora_ga")]
        pts = [_point(cfg, ABLATION_TASK, "lora_ga", lr, s, direction=d, scale=sc) for d, sc in ABLATIONS[1:] for s in cfg.seeds]
        abl = _run(pts, cfg, store, jobs, executor, progress)
        m = out["main"]
        base = m[(m.task == ABLATION_TASK) & (m.method == "lora_ga") & np.isclose(m.lr, lr)]
        out["ablation"] = pd.concat([base, abl], ignore_index=True)
    if "ratio" in parts:
        # every (ratio, eta_A, seed); ratio 1 is plain LoRA (bit for bit: same init, same rate for A and B) and
        # ratio 16 the main part's LoRA+ points, so those are read back where main already ran them
        pts = [_point(cfg, RATIO_TASK, "lora", lr, s) if x == 1.0 else _point(cfg, RATIO_TASK, "lora_plus", lr, s, ratio=x)
               for x in cfg.ratios for lr in LR_GRID["lora_plus"] for s in cfg.seeds]
        rat = _run(pts, cfg, store, jobs, executor, progress)
        out["ratio"] = rat.assign(ratio=[1.0 if m == "lora" else float(x) for m, x in zip(rat.method, rat.ratio, strict=True)])
    return out
