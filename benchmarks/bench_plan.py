"""Benchmark: approx_plan's predicted seconds vs measured, for approx and exact, across L and d (issue 15).

Calibrates the cost model on this machine (``calibrate_cost_model``: small runs, ~5-10 s), then
for every (L, d) times ``approx_gradients`` (eps = 1e-3, R <= 2, polynomial caches cleared so each
call pays its fit) and the blocked ``exact_gradients`` and prints predicted / measured. Target: every ratio within [0.5, 2].
CPU times are this process's CPU time on one torch thread (robust to other work on shared cores);
the calibration uses the same clock.

Usage:
    python benchmarks/bench_plan.py                       # L = 2^10 .. 2^16, d = 2, 4, 8 (exact at 2^16: ~5 min)
    python benchmarks/bench_plan.py --quick               # L = 2^10 .. 2^14
    python benchmarks/bench_plan.py --exact-max-L 16384   # skip the slow exact runs
    python benchmarks/bench_plan.py --device cuda         # wall time, synchronized
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

import lora_theory as lt
from lora_theory.limits.calibration import calibrate_cost_model, clear_fit_caches
from lora_theory.limits.plan import approx_plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--Ls", type=int, nargs="+", default=[10, 12, 14, 16], help="log2 of the lengths")
    ap.add_argument("--ds", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--quick", action="store_true", help="L = 2^10 .. 2^14")
    ap.add_argument("--exact-max-L", type=int, default=1 << 16, help="time exact only up to this L")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.Ls = [10, 12, 14]
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    tick = time.perf_counter if cuda else time.process_time
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(fn, repeats: int, clear: bool = False) -> float:
        out = math.inf
        for _ in range(repeats):
            if clear:
                clear_fit_caches()  # every approx call pays its polynomial fit, as a user's first call does
            t0 = tick()
            fn()
            sync()
            out = min(out, tick() - t0)
        return out

    t0 = time.perf_counter()
    model = calibrate_cost_model(threads=args.threads, device=args.device)
    print(f"calibrated in {time.perf_counter() - t0:.1f} s wall on {args.device}, {args.threads} thread(s), clock {'wall' if cuda else 'process CPU'}: {model}")
    rows = []
    print(f"{'L':>7} {'d':>2} {'k':>5} | {'approx pred':>11} {'meas':>8} {'ratio':>6} | {'exact pred':>10} {'meas':>8} {'ratio':>6}")
    for lg in args.Ls:
        L = 1 << lg
        for d in args.ds:
            inst = lt.make_instance(L, d, 2, adapt="qkv", bound=1.5, beta=1.0 / d, seed=0, device=args.device)
            plan = approx_plan(inst, 1e-3, model=model)
            lt.approx_gradients(inst, eps=1e-3)  # warm-up (and the polynomial's cache)
            sync()
            ta = timed(lambda inst=inst: lt.approx_gradients(inst, eps=1e-3), 3, clear=True)
            te = math.nan
            if L <= args.exact_max_L:
                te = timed(lambda inst=inst: lt.exact_gradients(inst), 1 if L >= 1 << 14 else 2)
            row = {"L": L, "d": d, "k": plan.k, "approx_pred": plan.approx_seconds, "approx_meas": ta, "exact_pred": plan.exact_seconds, "exact_meas": te}
            rows.append(row)
            print(f"{L:>7} {d:>2} {plan.k:>5} | {plan.approx_seconds:>11.4f} {ta:>8.4f} {plan.approx_seconds / ta:>6.2f} | "
                  f"{plan.exact_seconds:>10.3f} {te:>8.3f} {plan.exact_seconds / te:>6.2f}", flush=True)
    ratios = [r["approx_pred"] / r["approx_meas"] for r in rows] + [r["exact_pred"] / r["exact_meas"] for r in rows if math.isfinite(r["exact_meas"])]
    print(f"predicted / measured: min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} cells "
          f"(target: all within [0.5, 2]: {'met' if all(0.5 <= x <= 2 for x in ratios) else 'MISSED'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "model": model.__dict__, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
