"""Benchmark: the LoRA+ width sweep of every claim configuration (widths 2^6..2^14, 3 seeds, 10 steps).

Target: the whole sweep (all configurations of lora_plus.prop1/prop2/thm1/thm1_layer, toy model
and the Sec. 4 layer with r = 4) in under 60 s on 2 cores. Seeds are batched inside each width (one (seeds, n) tensor per step). Compared with the
same sweep run one seed at a time (the straightforward loop) in the same run.

Usage:
    python benchmarks/bench_lora_plus.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction

import torch

from lora_theory.lora_plus import width_sweep
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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batched = run(True)
    loop = run(False)
    print(f"{len(CONFIGS)} configurations (toy model and Sec. 4 layer) x {len(WIDTHS)} widths (2^6..2^14) x 3 seeds x 10 steps: "
          f"batched {batched:.1f} s (target < 60 s), one seed at a time {loop:.1f} s ({loop / batched:.2f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"batched_s": batched, "loop_s": loop, "configs": len(CONFIGS)}, fh)


if __name__ == "__main__":
    main()
