"""Your own sweep: the polynomial method's gradient error and time vs the norm bound Gamma, at a FIXED degree.

Hu et al. (2024), Thm 3.1 / 4.1: with ||X_Q W_Q||_max, ||X_K W_K||_max <= Gamma, the scores lie in
[-R, R] with R up to Gamma^2 d (Cauchy-Schwarz), and a polynomial of fixed degree g approximates
e^s well only while R is small (Gamma below about sqrt(ln L)); past it the error explodes. To see
that, the degree must stay fixed: by default ``approx_gradients`` raises the degree until it can
certify ``eps``, so the error would stay at eps and only the time would grow.

What this script uses (all public):

- ``make_instance(L, d, r, bound=Gamma)``: random weights rescaled so the Thm 3.1 norms equal Gamma;
  ``hard_instance(L, d, bound=Gamma)``: the Alman-Song Lemma 4.7 shape with ||Q||_max = ||K||_max = Gamma
  (half of each row's scores at the maximum Gamma^2 ceil(d/2): the worst case);
- ``approx_gradients(inst, degree=g, on_invalid="flag")``: force degree g, and return the result
  even when eps cannot be certified (``info.valid`` False, ``info.reason`` says why) instead of raising;
- ``info.error_bound``: the certified ABSOLUTE max-entry bound per gradient (eps is a RELATIVE error
  of e^s, not of the gradient); ``info.R``: the range the polynomial covers (the plan's Cauchy-Schwarz
  bound, >= ``norm_bounds(inst)["R"]``, the true max |score|); ``info.times``: seconds per phase
  ("keys", "queries", "total"); the first call pays one-off costs (imports, polynomial fits), so
  one warm-up call runs before anything is timed.

Usage:
    python examples/gamma_sweep.py                          # L = 256, 1024; writes gamma_sweep-DATE/
    python examples/gamma_sweep.py --L 4096 --degree 6 --out my_sweep
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

import lora_theory as lt


def sweep(Ls: list[int], gammas: list[float], d: int, degree: int, seed: int = 0) -> pd.DataFrame:
    """One row per (kind, L, Gamma): R (true and covered), relative error, certified bound, validity, times."""
    lt.approx_gradients(lt.make_instance(64, d, 2, bound=1.0, seed=seed), degree=degree, on_invalid="flag")  # warm-up: not timed
    rows = []
    for kind in ("random", "hard"):
        for L in Ls:
            for gamma in gammas:
                if kind == "random":
                    inst = lt.make_instance(L, d, 2, bound=gamma, seed=seed)
                else:
                    inst = lt.hard_instance(L, d, 2, bound=gamma, seed=seed)
                t0 = time.perf_counter()
                exact = lt.exact_gradients(inst)
                exact_s = time.perf_counter() - t0
                g, info = lt.approx_gradients(inst, degree=degree, on_invalid="flag")
                rel = max(lt.max_rel_error(g[k], exact[k]) for k in exact)
                abs_err = max(float((g[k] - exact[k]).abs().max()) for k in exact)
                rows.append({"kind": kind, "L": L, "gamma": gamma, "R_true": lt.norm_bounds(inst)["R"], "R_covered": info.R,
                             "degree": info.degree, "k": info.rank, "rel_err": rel, "abs_err": abs_err,
                             "error_bound": max(info.error_bound.values()) if info.error_bound else float("nan"),
                             "valid": info.valid, "reason": info.reason, "approx_s": info.times["total"], "exact_s": exact_s})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame):
    """Error and time vs Gamma, one line per (kind, L); sqrt(ln L) marked."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    for (kind, L), part in df.groupby(["kind", "L"]):
        style = "-" if kind == "random" else "--"
        ax_err.semilogy(part.gamma, part.rel_err.clip(lower=1e-17), style, marker="o", label=f"{kind}, L={L}")
        ax_time.plot(part.gamma, part.approx_s, style, marker="o", label=f"{kind}, L={L}")
    for L in sorted(df.L.unique()):
        ax_err.axvline(math.sqrt(math.log(L)), color="grey", lw=0.6)
    ax_err.set(xlabel="Gamma", ylabel="max relative gradient error", title=f"fixed degree {int(df.degree.iloc[0])} (grey: sqrt(ln L))")
    ax_time.set(xlabel="Gamma", ylabel="approx_gradients seconds (info.times)", title="time")
    ax_err.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, action="append", help="sequence lengths (repeatable; default 256 and 1024)")
    ap.add_argument("--gamma", type=float, action="append", help="norm bounds (repeatable; default 0.5 .. 3)")
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--degree", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a fresh gamma_sweep-DATE-TIME)")
    args = ap.parse_args()
    out = args.out or Path(f"gamma_sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    df = sweep(args.L or [256, 1024], args.gamma or [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], args.d, args.degree)
    df.to_csv(out / "gamma_sweep.csv", index=False)
    plot(df).savefig(out / "gamma_sweep.png", dpi=110)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.drop(columns=["reason"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    bad = df[~df.valid]
    if len(bad):
        print(f"not certified ({len(bad)} points), e.g. {bad.kind.iloc[0]} L={bad.L.iloc[0]} Gamma={bad.gamma.iloc[0]}: {bad.reason.iloc[0]}")
    print(f"wrote {out / 'gamma_sweep.csv'} and {out / 'gamma_sweep.png'}")


if __name__ == "__main__":
    main()
