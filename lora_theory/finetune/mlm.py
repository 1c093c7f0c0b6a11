"""The masked-token experiment (``cpython_mlm``): budgets, stages of sweep points, tuned learning rates, per-run tables.

Continued pretraining of the pretrained MiniLM-L6 on CPython's documentation prose (the task
where LoRA is known to trail full fine-tuning), every linear layer of the 6 blocks adapted, the
tied decoder frozen for every method (:mod:`lora_theory.finetune.tasks`). Each run is one
:func:`lora_theory.finetune.protocol.run_point` sweep point, written durably to the store by
``lora_theory.sweeps.run_sweep`` (resumable, ``jobs`` processes, or the Dask executor).

Stages (run in this order, so an interrupted budget has decided the most important claims first):

1. ``tune_core``: the tuning seed (``seeds[0]``, never used by a verdict) over the learning-rate
   grids of full FT and LoRA r = 8;
2. ``core``: full FT and LoRA r = 8 at their tuned lr on every verdict seed (the premise);
3. ``tune_methods``: the tuning seed over the grids of LoRA-GA and LoRA+ (ratio 2^4);
4. ``methods``: LoRA-GA and LoRA+ at their tuned lr; LoRA+ at LoRA's tuned lr (the paper's
   shared-lr protocol: eta_A = LoRA's lr, ratio 2^4);
5. ``arms``: LoRA r = 2 at LoRA r = 8's tuned lr; LoRA-GA's Table 3 arms at LoRA-GA's tuned lr: "+SO" (stable scale and offset on
   random directions: ``ga_source="random"``) and "+GA" (gradient directions ArB2r, ``scale="unit"``);
   the direction ablation (A2rBr, ArBr; stable scale);
6. ``ratio``: LoRA+ at eta_A = LoRA's tuned lr over the ratio grid ``ratios`` (2^0 = LoRA itself).

Tuning: the lr whose run has the lowest smoothed final validation loss
(:func:`lora_theory.finetune.stats.smoothed_final`); a tuned lr at an edge of its grid extends the
grid by one point (x sqrt(10)) up to ``extend`` times; if it is still at the edge the tables say so
(``lr_at_edge``).

Reference: issue 19; Wang et al. (2024) LoRA-GA Sec. 4 and Table 3; Hayou et al. (2024) LoRA+ Fig. 3, Fig. 7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .._validate import check_choice
from . import protocol
from .stats import smoothed_final

__all__ = ["BUDGETS", "MLM_FULL", "MLM_LR_GRID", "MLM_QUICK", "MLM_SMOKE", "MLM_TINY", "STAGES", "TASK", "MLMConfig", "budget", "by_seed", "cpu_to", "mlm_experiment",
           "planned_runs", "ratio_order", "runs_table", "speedup_pair", "steps_to", "stored", "tune"]

TASK = "cpython_mlm"
#: learning-rate grids of the tuning seed (the issue's pilot: full FT 3e-4, LoRA 1e-3 at 140 steps)
MLM_LR_GRID = {"full": (1e-4, 3e-4, 1e-3), "lora": (3e-4, 1e-3, 3e-3), "lora_ga": (1e-4, 3e-4, 1e-3), "lora_plus": (1e-4, 3e-4, 1e-3)}
STAGES = ("tune_core", "core", "tune_methods", "methods", "arms", "ratio")


@dataclass(frozen=True)
class MLMConfig:
    """A budget of the masked-token experiment. ``seeds[0]`` tunes the learning rates; the others give the verdicts."""

    name: str
    steps: int
    seeds: tuple[int, ...]
    ratios: tuple[float, ...]
    batch_size: int = 16
    warmup: int = 10
    eval_every: int = 10
    ga_batches: int = 4
    r: int = 8
    r_small: int = 2
    alpha: float = 16.0
    extend: int = 1
    lr_grid: tuple[tuple[str, tuple[float, ...]], ...] | None = None  # None: MLM_LR_GRID; a one-point grid is not tuned (no tuning run)
    device: str = "cpu"  # "cuda": every run on the GPU (a different sweep point from its CPU twin)
    directions: tuple[str, ...] = ("A2rBr", "ArBr")  # the direction ablation beside ArB2r (() leaves it out)
    val_curve: int = 100_000  # validation windows of each curve evaluation (100_000: all of them)
    final_val: bool = True  # evaluate the whole validation split once more at the end (val_loss, val_metric)

    def grid(self, method: str) -> tuple[float, ...]:
        return dict(self.lr_grid)[method] if self.lr_grid is not None else MLM_LR_GRID[method]

    @property
    def verdict_seeds(self) -> tuple[int, ...]:
        return self.seeds[1:]


#: the quick budget, sized to ~60 CPU-minutes from the measured cost of an 80-step run (~45 CPU-s of steps + ~25 of
#: evaluations): 12 tuning runs + 5 seeds x (full, LoRA r=8, r=2, LoRA-GA, LoRA+, LoRA+ shared lr, +SO, +GA) <= 52 runs;
#: no direction ablation and no ratio grid (those need the full budget: their claims say so)
MLM_QUICK = MLMConfig("mlm-quick", steps=80, seeds=(0, 1, 2, 3, 4, 5), ratios=(1.0, 16.0), warmup=8, directions=())
#: the full budget: 200 steps, 5 verdict seeds (the fewest with which the relabelling test can reject at 5 %: 2^-5),
#: the ratio grid 2^0..2^8 in steps of 2^1. More verdict seeds: add them to ``seeds`` (finished points are reused).
MLM_FULL = MLMConfig("mlm-full", steps=200, seeds=tuple(range(6)), ratios=tuple(2.0 ** k for k in range(9)), extend=2)
#: the reduced scale that ran on the shared, loaded 2-core machine of issue 19: 80 steps, 5 verdict seeds, the issue's pilot
#: learning rates for full FT (3e-4) and LoRA (1e-3), not re-tuned here; LoRA-GA and LoRA+ at LoRA's lr (the papers' shared-lr protocol)
MLM_SMOKE = MLMConfig("mlm-smoke", steps=80, seeds=(0, 1, 2, 3, 4, 5), ratios=(1.0, 4.0, 16.0, 64.0, 256.0), warmup=8, extend=0,
                      lr_grid=(("full", (3e-4,)), ("lora", (1e-3,)), ("lora_ga", (1e-3,)), ("lora_plus", (1e-3,))))
#: the negative controls' scale in the test suite (tests/claims/test_controls.py, slow): 10 steps, 5 verdict seeds, fixed lrs.
#: Every control makes the corrupted arm identical to another arm (or its init 8x), which the rules call "fails" at any scale.
#: Its curves read the first 48 validation windows and it skips the final whole-split evaluation (the controls' verdicts read
#: the curves and the test split): an evaluation of all 197 windows costs as much as 7 training steps.
MLM_TINY = MLMConfig("mlm-tiny", steps=10, seeds=(0, 1, 2, 3, 4, 5), ratios=(1.0, 16.0, 256.0), warmup=2, eval_every=5, extend=0,
                     val_curve=48, final_val=False,
                     lr_grid=(("full", (3e-4,)), ("lora", (1e-3,)), ("lora_ga", (1e-3,)), ("lora_plus", (1e-3,))))
BUDGETS = {c.name: c for c in (MLM_QUICK, MLM_FULL, MLM_SMOKE, MLM_TINY)}


def budget(quick: bool) -> MLMConfig:
    """The budget the claims read: ``$LORA_THEORY_FINETUNE_BUDGET`` (a key of :data:`BUDGETS`) if set, else MLM_QUICK / MLM_FULL."""
    import os

    name = os.environ.get("LORA_THEORY_FINETUNE_BUDGET")
    if name:
        check_choice("LORA_THEORY_FINETUNE_BUDGET", name, tuple(BUDGETS))
        return BUDGETS[name]
    return MLM_QUICK if quick else MLM_FULL


def planned_runs(cfg: MLMConfig) -> dict[str, int]:
    """How many runs the budget makes: {"tuning": runs of the tuning seed (before any grid extension), "verdict": the other seeds' runs}.

    Verdict runs per seed: full FT and LoRA r = 8; LoRA-GA, LoRA+ and LoRA+ at LoRA's lr (the shared-lr
    protocol, counted as a separate run unless both lrs are fixed and equal: tuned lrs are not known in advance); LoRA r = 2, +SO, +GA and
    the directions; the ratio grid except 2^0 (LoRA) and 2^4 (the shared-lr LoRA+ run).
    """
    tuning = sum(len(cfg.grid(m)) for m in MLM_LR_GRID if len(cfg.grid(m)) > 1)
    ratios = [x for x in cfg.ratios if x not in (1.0, 16.0)]
    fixed_same = len(cfg.grid("lora")) == len(cfg.grid("lora_plus")) == 1 and math.isclose(cfg.grid("lora")[0], cfg.grid("lora_plus")[0])
    per_seed = 2 + (2 if fixed_same else 3) + 3 + len(cfg.directions) + len(ratios)  # fixed_same: the shared-lr run is the tuned one
    return {"tuning": tuning, "verdict": per_seed * len(cfg.verdict_seeds)}


def ratio_order(ratios: tuple[float, ...]) -> list[float]:
    """The ratio grid in the order it runs: every other point first (a coarse grid spanning the whole range), then the points between.

    An interrupted budget then leaves a coarser grid over the whole range 2^0..2^8 (which the best-ratio
    rule can still read), not a dense grid over part of it. E.g. 2^0..2^8 -> 2^0, 2^2, 2^4, 2^6, 2^8, 2^1, 2^3, 2^5, 2^7.
    """
    xs = sorted(ratios)
    return xs[::2] + xs[1::2]


def _point(cfg: MLMConfig, method: str, lr: float, seed: int, *, arm: str | None = None, **extra: Any) -> dict[str, Any]:
    """One run's parameters; ``arm`` names the run's role ("full", "lora", "lora_r2", "lora_ga", "lora_plus", "+SO", ...)."""
    p = {"task": TASK, "method": method, "lr": lr, "seed": seed, "steps": cfg.steps, "batch_size": cfg.batch_size, "warmup": cfg.warmup,
         "eval_every": cfg.eval_every, "val_curve": cfg.val_curve, "r": cfg.r, "alpha": cfg.alpha, "final_val": cfg.final_val}
    if method == "lora_ga":
        p |= {"ga_batches": cfg.ga_batches, "direction": "ArB2r", "scale": "stable", "gamma": 16.0}
    if method == "lora_plus":
        p |= {"ratio": 16.0}
    p |= extra
    if cfg.device != "cpu":
        p["device"] = cfg.device
    p["code"] = protocol.code_fingerprint(method)
    return p


def _arm(row: pd.Series) -> str:
    if row.method == "lora":
        return "lora_r2" if int(row.r) == 2 else "lora"
    if row.method == "lora_ga":
        if row.get("ga_source") == "random":
            return "+SO"
        if row.get("scale") == "unit":
            return "+GA"
        return "lora_ga" if row.get("direction") == "ArB2r" else f"dir_{row.direction}"
    return row.method


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """Stored rows -> one row per run with ``arm`` and ``final`` (the smoothed final validation loss)."""
    if df.empty:
        return df.assign(arm=[], final=[])
    out = df.copy()
    for col in ("ga_source", "scale", "direction", "ratio"):
        if col not in out:
            out[col] = None
    out["arm"] = [_arm(r) for _, r in out.iterrows()]
    out["final"] = [smoothed_final(v) for v in out.curve_val]
    return out


def tune(runs: pd.DataFrame, method: str, grid: tuple[float, ...]) -> tuple[float, bool]:
    """(lr, at_edge): the grid lr with the lowest smoothed final validation loss on the tuning runs of ``method``.

    Raises:
        IndexError: no run of the grid is in ``runs``.
    """
    if not len(runs):
        raise IndexError(f"no finished tuning run of {method}")
    g = runs[[any(math.isclose(x, y) for y in grid) for x in runs.lr]]
    best = g.sort_values(["final", "lr"]).iloc[0]
    lr = float(best.lr)
    return lr, (math.isclose(lr, min(grid)) or math.isclose(lr, max(grid)))


def _tuned(cfg: MLMConfig, methods: list[str], run, tune_seed: int) -> tuple[dict[str, tuple[float, bool]], list[pd.DataFrame]]:
    """Tune ``methods`` together on the tuning seed ({method: (lr, at_edge)}, the tuning rows), extending each grid at an edge up to ``cfg.extend`` times.

    Every method's grid runs in one batch of sweep points (and each extension round in one more), so
    ``jobs`` workers stay busy. A method with no finished tuning run (``stored_only``) is left out
    of the result. A one-point grid is not tuned (no run) and is reported as at the edge.
    """
    grids = {m: tuple(cfg.grid(m)) for m in methods}
    out = {m: (g[0], True) for m, g in grids.items() if len(g) == 1}
    todo = [m for m in methods if m not in out]
    frames = []
    for k in range(cfg.extend + 1):
        if not todo:
            break
        rows = runs_table(run([_point(cfg, m, lr, tune_seed) for m in todo for lr in grids[m]]))
        frames.append(rows)
        step, again = math.sqrt(10.0), []
        for m in todo:
            try:
                lr, edge = tune(rows[rows.arm == m] if len(rows) else rows, m, grids[m])
            except IndexError:  # stored_only and no finished tuning run of m
                continue
            out[m] = (lr, edge)
            if edge and k < cfg.extend:
                grids[m] = tuple(sorted(set(grids[m]) | {lr * step if math.isclose(lr, max(grids[m])) else lr / step}))
                again.append(m)
        todo = again
    return out, frames


def mlm_experiment(cfg: MLMConfig = MLM_QUICK, stages: tuple[str, ...] = STAGES, *, store: str | Path | None = None, jobs: int = 1,
                   executor: str | None = None, progress: bool = False, stored_only: bool | None = None) -> dict[str, Any]:
    """Run (or read back) the stages; returns {"runs": every run's row (with ``arm``, ``final``), "lrs": {method: lr}, "edge": {...}, "cfg": cfg}.

    Stages later in :data:`STAGES` need the tuned learning rates of earlier ones, so asking for a
    later stage runs (or reads back) the tuning it depends on. ``stored_only`` (default:
    ``$LORA_THEORY_FINETUNE_STORED_ONLY`` == "1") runs nothing: only the finished points of exactly
    these parameters and code fingerprints are read (so a negative control's corrupted runs are
    never replaced by uncorrupted ones); a tuning with no finished run leaves the later stages out.
    """
    import os

    from ..sweeps import point_hash
    from .experiment import _run, store_path

    for s in stages:
        check_choice("stages", s, STAGES)
    store = Path(store) if store is not None else store_path()
    if stored_only is None:
        stored_only = os.environ.get("LORA_THEORY_FINETUNE_STORED_ONLY") == "1"
    have = stored(cfg, store) if stored_only else None

    def run(points):
        if not stored_only:
            return _run(points, cfg, store, jobs, executor, progress)
        want = {point_hash(f"finetune-{cfg.name}", p, 0) for p in points}
        return have[have._hash.isin(want)] if len(have) else have

    t0, seeds = cfg.seeds[0], cfg.verdict_seeds
    want = set(stages)
    need_core = want & {"tune_core", "core", "methods", "arms", "ratio"}
    need_methods = want & {"tune_methods", "methods", "arms"}
    methods = (["full", "lora"] if need_core else []) + (["lora_ga", "lora_plus"] if need_methods else [])
    tuned, frames = _tuned(cfg, methods, run, t0)
    lrs = {m: v[0] for m, v in tuned.items()}
    edge = {m: v[1] for m, v in tuned.items()}
    if need_core and not {"full", "lora"} <= set(tuned):
        want = set()
    if need_methods and not {"lora_ga", "lora_plus"} <= set(tuned):
        want -= {"methods", "arms"}
    # every verdict point in one batch, in the stages' order of importance (the pool takes them in order,
    # so an interrupted budget has decided the premise first, the ratio grid last, and no worker idles between stages)
    pts = []
    if want & {"core", "methods", "arms", "ratio"}:
        pts += [_point(cfg, m, lrs[m], s) for s in seeds for m in ("full", "lora")]
    if "methods" in want or "arms" in want:
        for s in seeds:
            pts += [_point(cfg, "lora_ga", lrs["lora_ga"], s), _point(cfg, "lora_plus", lrs["lora_plus"], s)]
            if not math.isclose(lrs["lora_plus"], lrs["lora"]):
                pts.append(_point(cfg, "lora_plus", lrs["lora"], s))  # the shared-lr protocol (same point when the tuned lr is LoRA's)
    if "arms" in want:
        lr = lrs["lora_ga"]
        for s in seeds:
            pts += [_point(cfg, "lora", lrs["lora"], s, r=cfg.r_small)]
            pts += [_point(cfg, "lora_ga", lr, s, ga_source="random"), _point(cfg, "lora_ga", lr, s, scale="unit")]
            pts += [_point(cfg, "lora_ga", lr, s, direction=d) for d in cfg.directions]
    if "ratio" in want:
        pts += [_point(cfg, "lora_plus", lrs["lora"], s, ratio=x) for x in ratio_order(cfg.ratios) if x != 1.0 for s in seeds]
    if pts:
        frames.append(run(pts))
    frames = [f for f in frames if len(f)]
    runs = runs_table(pd.concat(frames, ignore_index=True)) if frames else runs_table(pd.DataFrame())
    runs["tuning"] = False
    if len(runs):
        runs = runs.drop_duplicates("_hash").reset_index(drop=True)
        runs["tuning"] = runs.seed == t0
    return {"runs": runs, "lrs": lrs, "edge": edge, "cfg": cfg}


def stored(cfg: MLMConfig, store: str | Path | None = None) -> pd.DataFrame:
    """Every finished run of budget ``cfg`` in the store (read-only; nothing is run), as :func:`runs_table` rows."""
    from ..sweeps import ResultStore
    from .experiment import store_path

    path = Path(store) if store is not None else store_path()
    if not path.exists():
        return runs_table(pd.DataFrame())
    with ResultStore(path, readonly=True) as st:
        df = st.load(f"finetune-{cfg.name}")
    if df.empty:
        return runs_table(df)
    df = df[df._error.isna()] if "_error" in df else df
    return runs_table(df.reset_index(drop=True))


def by_seed(runs: pd.DataFrame, arm: str, *, lr: float | None = None, ratio: float | None = None) -> pd.DataFrame:
    """The verdict-seed runs (``tuning`` False) of one arm (at ``lr`` / ``ratio`` when given), one row per seed, indexed by seed."""
    import numpy as np

    if not len(runs):
        return runs.assign(seed=[]).set_index("seed")
    r = runs[(runs.arm == arm) & ~runs.tuning]
    if lr is not None:
        r = r.loc[np.array([math.isclose(x, lr) for x in r.lr], dtype=bool)]  # a bool array: an empty list would select columns
    if ratio is not None:
        r = r.loc[np.array([x is not None and not (isinstance(x, float) and math.isnan(x)) and math.isclose(float(x), ratio) for x in r.ratio],
                           dtype=bool)]
    return r.drop_duplicates("seed").set_index("seed").sort_index()


def steps_to(row: pd.Series, target: float, *, charged: bool = True, budget_censor: bool = True) -> float:
    """Steps for a run's smoothed validation curve to reach ``target`` (plus its charged init steps).

    Not reached within the budget: the budget (a lower bound on the steps, so the speed-up it
    gives the other arm is an upper bound: never in the claim's favour when the claim is that this
    arm is faster), or inf with ``budget_censor`` False.
    """
    from .stats import crossing, smoothed_curve

    s = crossing(row.curve_step, smoothed_curve(row.curve_val), target)
    if math.isinf(s) and budget_censor:
        s = float(row.curve_step[-1])
    return s + (float(row.init_steps) if charged else 0.0)


def cpu_to(row: pd.Series, target: float) -> float:
    """CPU seconds to reach ``target`` on the smoothed curve (interpolated), plus the init's CPU seconds; censored at the budget."""
    import numpy as np

    s = steps_to(row, target, charged=False)
    return float(np.interp(s, row.curve_step, row.curve_cpu)) + float(row.init_cpu)


def speedup_pair(ref: pd.Series, x: pd.Series) -> tuple[float, float, float, float]:
    """(steps of ``ref`` to its own final loss T, steps of ``x`` to T, the speed-up steps_ref / steps_x, its CPU-seconds twin).

    T = ref's smoothed final validation loss (the papers' "steps to LoRA's final loss"); ``x`` is charged
    its init steps and, when it never reaches T within the budget, gets inf steps (speed-up 0: never
    in the claim's favour, where censoring at the budget would give it an upper bound). Equal step
    counts (e.g. both at T from step 0) are speed-up 1. A reference that diverged (T not finite): nan.
    """
    from .stats import ratio

    T = float(ref.final)
    if not math.isfinite(T):
        return math.nan, math.nan, math.nan, math.nan
    a = steps_to(ref, T)  # reaches its own smoothed final at the last evaluation at the latest
    b = steps_to(x, T, budget_censor=False)
    sp = 1.0 if a == b else ratio(a, b)
    ca, cb = (cpu_to(ref, T), cpu_to(x, T)) if math.isfinite(b) else (1.0, math.inf)
    cpu = 1.0 if ca == cb else ratio(ca, cb)  # as the steps: equal (e.g. 0 and 0 at the target from step 0) is no speed-up
    return a, b, sp, cpu
