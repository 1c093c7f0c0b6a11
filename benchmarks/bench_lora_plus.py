"""Benchmark: the LoRA+ width sweep of every claim configuration (widths 2^6..2^14, 3 seeds, 10 steps).

Target: the whole sweep (all configurations of lora_plus.prop1/prop2/thm1/thm1_layer, toy model
and the Sec. 4 layer with r = 4) in under 60 s on 2 cores. Seeds are batched inside each width
(one (seeds, n) tensor per step) and the simulators run torch single-threaded
(``lora_plus._update.one_thread``). Compared in the same run with the same sweep one seed at a
time (the straightforward loop) and with the batched sweep with torch's intra-op threads left on
(``--threads``; ``_update.SINGLE_THREAD = False``), which is what the simulators did before.

Usage:
    python benchmarks/bench_lora_plus.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction

import torch

from lora_theory.lora_plus import _update, width_sweep
from lora_theory.studies.lora_plus import EXPONENT_CONFIGS, LAYER_CONFIGS

CONFIGS = [(c, "toy") for c in EXPONENT_CONFIGS] + [(c, "layer") for c in LAYER_CONFIGS]

WIDTHS = tuple(2**k for k in range(6, 15))


def run(seeds_batched: bool) -> float:
    t0 = time.perf_counter()
    for (opt, init, a, b, _), model in CONFIGS:
        kw = {"optimizer": opt, "init": init, "a": float(Fraction(str(a))), "b": float(Fraction(str(b))), "model": model}
        if seeds_batched:
            width_sweep(WIDTHS, 10, seeds=(0, 1, 2), **kw)
        else:
            for s in (0, 1, 2):
                width_sweep(WIDTHS, 10, seeds=(s,), **kw)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the 'threads on' variant")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batched = run(True)
    loop = run(False)
    _update.SINGLE_THREAD = False  # the 'threads on' variant
    try:
        threaded = run(True)
    finally:
        _update.SINGLE_THREAD = True
    print(f"{len(CONFIGS)} configurations (toy model and Sec. 4 layer) x {len(WIDTHS)} widths (2^6..2^14) x 3 seeds x 10 steps:\n"
          f"  batched, single-threaded (the library): {batched:.2f} s (target < 60 s)\n"
          f"  one seed at a time, single-threaded:    {loop:.2f} s ({loop / batched:.2f}x the library)\n"
          f"  batched, {args.threads} torch threads:               {threaded:.2f} s ({threaded / batched:.2f}x the library)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"batched_s": batched, "loop_s": loop, "threaded_s": threaded, "threads": args.threads, "configs": len(CONFIGS)}, fh)


if __name__ == "__main__":
    main()
