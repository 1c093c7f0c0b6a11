"""Benchmark: the polynomial method (approx_gradients) vs the blocked exact gradient and FAVOR+.

Claims ``limits.thm3.1`` / ``limits.thmA.1``. Three measurements in one run (d = 4, full
adaptation, R <= 2, eps = 1e-3, float64 unless --dtype):

1. speed and accuracy at L = 2^15: approx vs exact (blocked), time ratio and every gradient's
   relative error (target: >= 20x faster, every error <= 1e-2);
2. fitted log-log time exponent of approx over L = 2^11 .. 2^16 (target <= 1.15; exact ~2,
   fitted over the L it ran at);
3. at equal feature count k, the polynomial's gradient error vs Performer FAVOR+ positive
   random features (target: >= 10x lower), median over seeds.

Usage:
    python benchmarks/bench_approx.py [--quick] [--device cuda] [--threads 1 --clock cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import lora_theory as lt
from lora_theory.limits.approx import approx_gradients
from lora_theory.limits.random_features import random_feature_gradients

CLOCK = "wall"  # set from --clock: "wall" (perf_counter) or "cpu" (process CPU time: robust to other work on shared cores)


def timed(fn, repeats: int, device: str, warmup: bool = True) -> float:
    """min over ``repeats`` of the chosen clock; CUDA is synchronised; wall time on a GPU."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    tick = time.process_time if CLOCK == "cpu" and not device.startswith("cuda") else time.perf_counter
    if warmup:
        fn()
        sync()
    ts = []
    for _ in range(repeats):
        t0 = tick()
        fn()
        sync()
        ts.append(tick() - t0)
    return min(ts)


def instance(L: int, args) -> lt.AttentionLoRAInstance:
    # bound 2 with beta = 1/d keeps the score range R below 2 (reported)
    return lt.make_instance(L, args.d, 2, adapt="qkv", bound=2.0, beta=1.0 / args.d, seed=0,
                            dtype=getattr(torch, args.dtype), device=args.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (use with --threads 1 when the cores are shared)")
    ap.add_argument("--quick", action="store_true", help="L = 2^13 for part 1, 2^11..2^14 for part 2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    global CLOCK
    CLOCK = args.clock
    torch.set_num_threads(args.threads)
    out: dict = {"args": vars(args)}

    # 1. speed and accuracy at one large L
    L = 1 << (13 if args.quick else 15)
    inst = instance(L, args)
    g, info = approx_gradients(inst, eps=args.eps)
    ex = lt.exact_gradients(inst)
    errs = {k: lt.max_rel_error(g[k], ex[k]) for k in ex}
    ta = timed(lambda: approx_gradients(inst, eps=args.eps), 3, args.device)
    te = timed(lambda: lt.exact_gradients(inst), 1, args.device, warmup=False)  # ran once above
    out["part1"] = {"L": L, "R_true": lt.norm_bounds(inst)["R"], "R_bound": info.R, "degree": info.degree, "k": info.rank,
                    "approx_s": ta, "exact_s": te, "speedup": te / ta, "rel_err": errs}
    print(f"clock: {CLOCK if args.device == 'cpu' else 'wall'}, threads {args.threads}, device {args.device}")
    print(f"[1] L={L} d={args.d} {args.dtype} R={out['part1']['R_true']:.2f} (bound {info.R:.2f}) degree={info.degree} k={info.rank}")
    print(f"    approx {ta:.3f} s, exact {te:.2f} s: {te / ta:.1f}x faster; max rel err {max(errs.values()):.1e} "
          f"({', '.join(f'{k} {v:.1e}' for k, v in errs.items())})")

    # 2. time exponent
    Ls = [1 << j for j in (range(11, 15) if args.quick else range(11, 17))]
    ta_L, te_L = [], []
    for L in Ls:
        inst = instance(L, args)
        ta_L.append(timed(lambda: approx_gradients(inst, eps=args.eps), 3, args.device))
        te_L.append(timed(lambda: lt.exact_gradients(inst), 1, args.device, warmup=L < (1 << 14)) if L <= (1 << 14) else float("nan"))
    sa = float(np.polyfit(np.log(Ls), np.log(ta_L), 1)[0])
    ok = [i for i, t in enumerate(te_L) if np.isfinite(t)]
    se = float(np.polyfit(np.log([Ls[i] for i in ok]), np.log([te_L[i] for i in ok]), 1)[0])
    out["part2"] = {"L": Ls, "approx_s": ta_L, "exact_s": te_L, "approx_exponent": sa, "exact_exponent": se}
    print(f"[2] time exponent over L = 2^{Ls[0].bit_length() - 1}..2^{Ls[-1].bit_length() - 1}: approx {sa:.2f}; exact {se:.2f} (up to 2^14)")
    for L, a, e in zip(Ls, ta_L, te_L, strict=True):
        print(f"    L={L:>6}: approx {a:.4f} s   exact {e:.3f} s")

    # 3. equal feature count: polynomial vs random features
    rows = []
    for L in (1024, 4096):
        inst = instance(L, args)
        ex = lt.exact_gradients(inst)
        g, info = approx_gradients(inst, eps=args.eps)
        poly = max(lt.max_rel_error(g[k], ex[k]) for k in ex)
        rf = statistics.median(max(lt.max_rel_error(gr[k], ex[k]) for k in ex)
                               for gr, _ in (random_feature_gradients(inst, info.rank, seed=s) for s in range(5)))
        rows.append({"L": L, "k": info.rank, "poly_err": poly, "rf_err_median5": rf, "ratio": rf / poly})
        print(f"[3] L={L} k={info.rank}: polynomial err {poly:.1e}, FAVOR+ err (median of 5 seeds) {rf:.1e}: {rf / poly:.0f}x")
    out["part3"] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
