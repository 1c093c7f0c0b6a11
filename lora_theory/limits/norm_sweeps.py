"""Sweeps for the norm-bound phase transition (claims ``limits.thm3.1``, ``limits.thmA.1``,
``limits.thm4.1_regime``, ``limits.degree_bound``); each returns a tidy DataFrame.

- :func:`degree_sweep`: minimal degree g(R, eps) of the Chebyshev / Taylor fit vs the
  Aggarwal-Alman order.
- :func:`phase_transition_sweep`: the cost exponent log_L(flops of the approximate gradient)
  against the exact algorithm's, on a grid of x = Gamma / sqrt(ln L), with eps = 1 / L.
  Scores are normalised as in AS23 (beta = 1/d, so entries bounded by Gamma give R <= Gamma^2).
  Two regimes: "log" with d = max(2, round(log2(L) / 4)) (d = Theta(log L), the theorem's), and
  "fixed" with d = 4.
- :func:`gradient_error_sweep`: measured relative gradient error at a fixed degree budget vs
  Gamma, random and hard (AS23 Lemma 4.7) instances.
- :func:`runtime_sweep`: wall time of exact vs approximate gradients vs L, with fitted log-log
  exponents (:func:`fit_loglog`) and the crossover length (:func:`crossover`).
- :func:`transition_gamma` / :func:`threshold_sweep`: the norm Gamma* at which the polynomial
  method stops being low rank (its rank C(g + d, d) at eps = 1/L reaches L), per L, in the
  regime d = Theta(log L) (claim ``limits.threshold``).

Plotting is in :mod:`lora_theory.plotting.limits`.
"""
from __future__ import annotations

import itertools
import math
import statistics
import time

import numpy as np
import pandas as pd
import torch

from .._threads import torch_threads
from .._validate import check_choice
from .approx import approx_gradients
from .exact import exact_gradients
from .features import feature_rank
from .instance import hard_instance, make_instance, norm_bounds
from .plan import approx_flops, exact_flops
from .polynomial import degree_bound, degree_order, exp_polynomial
from .random_features import random_feature_gradients

__all__ = [
    "approx_error",
    "approx_flops",
    "crossover",
    "degree_sweep",
    "exact_flops",
    "fit_degree_constant",
    "fit_loglog",
    "gradient_error_sweep",
    "phase_transition_sweep",
    "regime_dimension",
    "runtime_sweep",
    "threshold_sweep",
    "threshold_table",
    "transition_gamma",
]


def degree_sweep(Rs=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16), epss=(1e-2, 1e-4, 1e-6, 1e-8), methods=("chebyshev", "taylor"), max_degree: int = 40) -> pd.DataFrame:
    """Rows: R, eps, method, degree, rel_error, certified, order, bound (= degree_bound)."""
    rows = []
    for R, eps, method in itertools.product(Rs, epss, methods):
        p = exp_polynomial(R, eps, method=method, max_degree=max_degree)
        rows.append({"R": R, "eps": eps, "method": method, "degree": p.degree, "rel_error": p.rel_error,
                     "certified": p.certified, "order": degree_order(R, eps), "bound": degree_bound(R, eps)})
    return pd.DataFrame(rows)


def fit_degree_constant(df: pd.DataFrame) -> float:
    """max degree / order over the certified Chebyshev rows: the C of ``degree_bound``."""
    ok = df[(df.method == "chebyshev") & df.certified]
    return float((ok.degree / ok.order).max())


def regime_dimension(L: int, regime: str, d_fixed: int = 4) -> int:
    """d for a regime: "log" -> max(2, round(log2(L) / 4)) and "half_log" -> max(2, round(log2(L) / 2))
    (both Theta(log L), the theorems' regime); "fixed" -> d_fixed."""
    check_choice("regime", regime, ("log", "half_log", "fixed"))
    if regime == "fixed":
        return d_fixed
    return max(2, round(math.log2(L) / (4 if regime == "log" else 2)))


def phase_transition_sweep(Ls=tuple(2**j for j in range(8, 17)), xs=tuple(np.round(np.arange(0.05, 1.51, 0.05), 3)), regimes=("log", "fixed"), d_fixed: int = 4) -> pd.DataFrame:
    """Cost exponents on the (L, x = Gamma / sqrt(ln L)) grid, eps = 1/L, R = Gamma^2 (AS23 scaling).

    Rows: regime, L, d, x, Gamma, R, eps, degree, k, certified, approx_exponent, exact_exponent.
    """
    rows = []
    for regime, L, x in itertools.product(regimes, Ls, xs):
        d = regime_dimension(L, regime, d_fixed)
        gamma = x * math.sqrt(math.log(L))
        R = gamma**2
        eps = 1.0 / L
        p = exp_polynomial(R, eps, max_degree=40)
        k = feature_rank(p.degree, d)
        rows.append({"regime": regime, "L": L, "d": d, "x": x, "Gamma": gamma, "R": R, "eps": eps, "degree": p.degree,
                     "k": k, "certified": p.certified, "approx_exponent": math.log(approx_flops(L, d, k)) / math.log(L),
                     "exact_exponent": math.log(exact_flops(L, d)) / math.log(L)})
    return pd.DataFrame(rows)


def threshold_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (regime, L): x* = the smallest x at which the approximate exponent reaches the exact one
    (linear interpolation between grid points; NaN if it never does, or the approximation is not
    certified before)."""
    rows = []
    for (regime, L), g in df.groupby(["regime", "L"]):
        g = g.sort_values("x")
        gap = (g.approx_exponent - g.exact_exponent).to_numpy()
        xs = g.x.to_numpy()
        x_star = math.nan
        cross = np.nonzero(gap >= 0)[0]
        if len(cross):
            i = cross[0]
            x_star = xs[0] if i == 0 else xs[i - 1] + (xs[i] - xs[i - 1]) * (-gap[i - 1]) / (gap[i] - gap[i - 1])
        rows.append({"regime": regime, "L": L, "d": int(g.d.iloc[0]), "x_star": x_star, "Gamma_star": x_star * math.sqrt(math.log(L))})
    return pd.DataFrame(rows)


def transition_gamma(L: int, d: int, *, eps: float | None = None, r_scale: str = "as23", tol: float = 1e-6) -> dict:
    """Gamma* at which the polynomial method's rank k = C(g + d, d) reaches L (it stops being low rank).

    g is the degree :func:`~lora_theory.limits.plan.approx_plan` gives for the score range R and
    eps (default 1/L, the theorems' eps = 1/poly(L)); in AS23's scaling (beta = 1/d inside exp) entries
    bounded by Gamma give R = Gamma^2. The rank is non-decreasing in R, so Gamma* is found by
    bisection on R (to a relative ``tol``). Reference: Hu et al. (2024), Thm 3.1 / 4.1 (the
    transition at Gamma = Theta(sqrt(log L)) when d = Theta(log L)); claim ``limits.threshold``.

    Returns:
        {"L", "d", "eps", "Gamma_star", "R_star", "degree", "k"}: degree and k just above the transition.
        Gamma_star is 0 when even R -> 0 needs rank >= L, inf when R = 300 still does not.
    """
    from . import plan  # the cost model under test (module attribute, so a negative control can patch it)

    eps = 1.0 / L if eps is None else eps
    check_choice("r_scale", r_scale, ("as23",))

    def rank(R: float) -> int:
        return plan.approx_plan(L=L, d=d, R=R, eps=eps).k

    lo, hi = 1e-9, 300.0  # R = 300: e^{2R} is still finite in float64; beyond it no degree can be measured
    if rank(lo) >= L:
        return {"L": L, "d": d, "eps": eps, "Gamma_star": 0.0, "R_star": 0.0, "degree": math.nan, "k": rank(lo)}
    if rank(hi) < L:
        return {"L": L, "d": d, "eps": eps, "Gamma_star": math.inf, "R_star": math.inf, "degree": math.nan, "k": rank(hi)}
    while hi - lo > tol * hi:
        mid = math.sqrt(lo * hi) if hi / lo > 4 else 0.5 * (lo + hi)  # geometric steps while the bracket spans decades
        if rank(mid) >= L:
            hi = mid
        else:
            lo = mid
    p = plan.approx_plan(L=L, d=d, R=hi, eps=eps)
    return {"L": L, "d": d, "eps": eps, "Gamma_star": math.sqrt(hi), "R_star": hi, "degree": p.degree, "k": p.k}


def threshold_sweep(Ls=tuple(2**j for j in range(8, 17, 2)), regime: str = "half_log", d_fixed: int = 4) -> pd.DataFrame:
    """:func:`transition_gamma` per L, with d = :func:`regime_dimension` (L, regime) and eps = 1/L.

    Rows: L, d, eps, Gamma_star, R_star, degree, k, x_star (= Gamma* / sqrt(ln L)), regime.
    """
    rows = []
    for L in Ls:
        d = regime_dimension(L, regime, d_fixed)
        row = transition_gamma(L, d)
        rows.append({**row, "x_star": row["Gamma_star"] / math.sqrt(math.log(L)), "regime": regime})
    return pd.DataFrame(rows)


def gradient_error_sweep(Ls=(256, 1024, 4096), gammas=(0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0), *, d: int = 4, degree: int = 8,
                         kinds=("random", "hard"), seeds=(0,), adapt: str = "qv", peer: bool = False, peer_seeds: int = 3) -> pd.DataFrame:
    """Max relative error (over the gradients) of approx_gradients at a fixed degree vs Gamma.

    Random instances: ``make_instance(L, d, 2, bound=Gamma)`` (beta = 1/d); hard instances:
    ``hard_instance(L, d, 2, bound=Gamma)`` (beta = 1; scores up to Gamma^2 ceil(d/2)).
    With ``peer``, each point also gets a row for FAVOR+ random features at the same feature
    count k = C(degree + d, d) (median error over ``peer_seeds`` seeds; claim
    ``toolkit.poly_vs_random_features``).

    Rows: method ("polynomial" | "favor+"), kind, L, d, Gamma, x (= Gamma / sqrt(ln L)), seed, R,
    degree, k, poly_rel_error, valid, rel_err (max over gradients of max|err| / max over gradients
    of max|grad|).
    """

    rows = []
    for kind, L, gamma, seed in itertools.product(kinds, Ls, gammas, seeds):
        if kind == "random":
            inst = make_instance(L, d, 2, adapt=adapt, bound=gamma, beta=1.0 / d, seed=seed)
        else:
            inst = hard_instance(L, d, 2, bound=gamma, adapt=adapt, seed=seed)
        ex = exact_gradients(inst)
        scale = max(float(v.abs().max()) for v in ex.values())  # relative to the gradient set's scale

        def rel(g):
            err = max(float((g[k] - ex[k]).abs().max()) for k in ex) / scale
            return err if math.isfinite(err) else math.inf

        g, info = approx_gradients(inst, degree=degree, on_invalid="flag")
        base = {"kind": kind, "L": L, "d": d, "Gamma": gamma, "x": gamma / math.sqrt(math.log(L)), "seed": seed,
                "R": norm_bounds(inst)["R"], "degree": info.degree, "k": info.rank}
        rows.append({"method": "polynomial", **base, "poly_rel_error": info.poly_rel_error, "valid": info.valid, "rel_err": rel(g)})
        if peer:
            runs = [random_feature_gradients(inst, info.rank, seed=s, on_invalid="flag") for s in range(peer_seeds)]
            rows.append({"method": "favor+", **base, "poly_rel_error": math.nan, "valid": all(i.valid for _, i in runs),
                         "rel_err": statistics.median(rel(gr) for gr, _ in runs)})
    return pd.DataFrame(rows)


def _time(fn, repeats: int, warmup: bool = True, clock=time.perf_counter) -> float:
    if warmup:  # first-call costs (allocator growth, thread pool start); skipped for runs of seconds
        fn()
    ts = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return min(ts)


def runtime_sweep(Ls=tuple(2**j for j in range(6, 17)), *, d: int = 4, bound: float = 2.0, eps: float = 1e-3, adapt: str = "qkv",
                  dtype: torch.dtype = torch.float64, repeats: int = 2, exact_max_L: int = 1 << 16, device=None,
                  clock: str = "wall", threads: int | None = None) -> pd.DataFrame:
    """Time (min of ``repeats`` after a warm-up) of exact and approximate gradients vs L.

    Instances: ``make_instance(L, d, 2, bound=bound, beta=1/d)``; the default bound 2 keeps the
    score range R below 2 (the benchmark's setting). The exact gradient at L >= 2^14 runs once,
    without a warm-up (it takes seconds to minutes).

    Args:
        clock: "wall" (``time.perf_counter``; with CUDA synchronised) or "cpu" (this process's CPU
            time, ``time.process_time``: unaffected by other work sharing the cores; use it with
            ``threads=1``, where it equals the single-thread compute time).
        threads: torch intra-op threads during the sweep (restored after); None leaves them.

    Rows: L, method ("exact" | "approx"), seconds, clock, threads, R, degree, k, device, rel_err
    (approx rows: max over the gradients of the relative error vs exact, where exact ran).
    """
    check_choice("clock", clock, ("wall", "cpu"))
    tick = time.perf_counter if clock == "wall" else time.process_time
    with torch_threads(threads):
        return _runtime_rows(Ls, d, bound, eps, adapt, dtype, repeats, exact_max_L, device, clock, tick)


def _runtime_rows(Ls, d, bound, eps, adapt, dtype, repeats, exact_max_L, device, clock, tick) -> pd.DataFrame:
    def synced(fn):
        def run():
            out = fn()
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            return out
        return run

    rows = []
    for L in Ls:
        inst = make_instance(L, d, 2, adapt=adapt, bound=bound, beta=1.0 / d, seed=0, dtype=dtype, device=device)
        g, info = approx_gradients(inst, eps=eps)
        ta = _time(synced(lambda: approx_gradients(inst, eps=eps)), repeats, clock=tick)
        row = {"L": L, "R": info.R, "degree": info.degree, "k": info.rank, "device": str(inst.Xq.device), "clock": clock,
               "threads": torch.get_num_threads()}
        rows.append({**row, "method": "approx", "seconds": ta, "rel_err": math.nan})
        if L <= exact_max_L:
            long = L >= 1 << 14
            out = {}
            te = _time(synced(lambda: out.setdefault("ex", exact_gradients(inst)) if long else exact_gradients(inst)), 1 if long else repeats,
                       warmup=not long, clock=tick)
            ex = out["ex"] if long else exact_gradients(inst)
            rows[-1]["rel_err"] = max(float((g[k] - ex[k]).abs().max()) / float(ex[k].abs().max()) for k in ex)
            rows.append({**row, "method": "exact", "seconds": te, "rel_err": 0.0})
    return pd.DataFrame(rows)


def fit_loglog(df: pd.DataFrame, method: str, L_min: int = 0) -> float:
    """Slope of log(seconds) vs log(L) for one method (least squares), over L >= L_min."""
    g = df[(df.method == method) & (df.L >= L_min)]
    return float(np.polyfit(np.log(g.L), np.log(g.seconds), 1)[0])


def crossover(df: pd.DataFrame) -> float:
    """L* beyond which the approximate gradient stays faster than the exact one.

    Log-log interpolation between the last L where exact <= approx and the next L; the smallest
    L measured if approx is faster everywhere; NaN if approx is slower at the largest L.
    """
    e = df[df.method == "exact"].set_index("L").seconds
    a = df[df.method == "approx"].set_index("L").seconds
    Ls = sorted(set(e.index) & set(a.index))
    ratio = [math.log(e[L] / a[L]) for L in Ls]  # > 0: approx faster
    if not ratio or ratio[-1] <= 0:
        return math.nan
    i = len(ratio) - 1
    while i > 0 and ratio[i - 1] > 0:
        i -= 1
    if i == 0:
        return float(Ls[0])
    lo, hi = math.log(Ls[i - 1]), math.log(Ls[i])
    return float(math.exp(lo + (hi - lo) * (-ratio[i - 1]) / (ratio[i] - ratio[i - 1])))


def _median(xs):
    return statistics.median(xs) if xs else math.nan


if __name__ == "__main__":  # re-fit DEGREE_BOUND_C
    df = degree_sweep(Rs=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16), epss=(1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12), methods=("chebyshev",))
    print(f"DEGREE_BOUND_C = {fit_degree_constant(df):.3f}")


def approx_error(L: int, gamma: float, d: int = 4, degree: int = 8, kind: str = "random", seed: int = 0, adapt: str = "qv") -> dict:
    """One point of :func:`gradient_error_sweep` as a sweep-engine point: R, rel_err, valid, k.

    Module-level so that worker processes can import it (``lora-theory sweep norms`` and TOML
    sweeps: ``function = "lora_theory.limits.norm_sweeps:approx_error"``).
    """
    row = gradient_error_sweep(Ls=(L,), gammas=(gamma,), kinds=(kind,), seeds=(seed,), d=d, degree=degree, adapt=adapt).iloc[0]
    return {"R": float(row.R), "rel_err": float(row.rel_err), "valid": bool(row.valid), "k": int(row.k)}
