"""Benchmark: the sweep engine's overhead per point, and the speed-up of a process pool.

1. A trivial 10k-point sweep (``sleepy_square`` with no delay) through ``run_sweep`` in-process,
   vs calling the function directly in a loop: overhead per point (target <= 5 ms; every point is
   its own fsynced SQLite transaction).
2. A CPU-bound sweep (each point ~0.2 s of Python arithmetic): ``--jobs 2`` vs ``--jobs 1``
   (target >= 1.7x on 2 cores).

Usage:
    python benchmarks/bench_sweeps.py [--points 10000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from lora_theory.sweeps import grid, run_sweep
from lora_theory.sweeps.points import sleepy_square


def cpu_bound(i: int, work: int = 2_000_000) -> dict:
    """Pure-Python arithmetic (holds the GIL: threads would not help, processes do)."""
    s = 0
    for k in range(work):
        s += (k * i) % 7
    return {"s": s}


def _run_many(ids) -> None:
    for i in ids:
        cpu_bound(i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--cpu-points", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    pts = grid(x=[float(i) for i in range(args.points)])
    t0 = time.perf_counter()
    for p in pts:
        sleepy_square(**p)
    direct = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run_sweep(sleepy_square, pts, Path(d) / "s.sqlite", name="trivial", executor="inprocess", progress=False)
        engine = time.perf_counter() - t0
        per_point_ms = (engine - direct) / args.points * 1e3
        print(f"[1] {args.points} trivial points: direct {direct:.3f} s, engine {engine:.2f} s: overhead {per_point_ms:.2f} ms/point (target <= 5)")
        cpu = grid(i=list(range(args.cpu_points)))
        t0 = time.perf_counter()
        run_sweep(cpu_bound, cpu, Path(d) / "c1.sqlite", name="cpu", jobs=1, progress=False)
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_sweep(cpu_bound, cpu, Path(d) / "c2.sqlite", name="cpu", jobs=2, progress=False)
        t2 = time.perf_counter() - t0
        # the machine's own ceiling: the same points split over two bare processes, no engine
        import multiprocessing as mp

        half = [list(range(args.cpu_points))[k::2] for k in (0, 1)]
        procs = [mp.Process(target=_run_many, args=(h,)) for h in half]
        t0 = time.perf_counter()
        for pr in procs:
            pr.start()
        for pr in procs:
            pr.join()
        raw2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        _run_many(list(range(args.cpu_points)))
        raw1 = time.perf_counter() - t0
        print(f"[2] {args.cpu_points} CPU-bound points: --jobs 1 {t1:.2f} s, --jobs 2 {t2:.2f} s: {t1 / t2:.2f}x (target >= 1.7); "
              f"bare processes, no engine: {raw1:.2f} s vs {raw2:.2f} s = {raw1 / raw2:.2f}x (the machine's ceiling)")
    if args.json:
        Path(args.json).write_text(json.dumps({"overhead_ms": per_point_ms, "jobs1_s": t1, "jobs2_s": t2, "speedup": t1 / t2, "bare_speedup": raw1 / raw2}))


if __name__ == "__main__":
    main()
