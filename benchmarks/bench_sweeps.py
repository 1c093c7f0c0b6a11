"""Benchmark: the sweep engine's overhead per point, and what its executors gain on CPU-bound work.

1. A trivial sweep (``sleepy_square`` with no delay, 10k points) through ``run_sweep`` in-process
   vs calling the function directly in a loop: overhead per point (target <= 5 ms; every point is
   its own fsynced SQLite transaction, ``synchronous=FULL``).
2. A CPU-bound sweep (``cpu_bound``: ~0.2 s of pure-Python arithmetic per point): ``--jobs 2`` vs
   ``--jobs 1`` through the engine (target >= 1.7x on 2 cores), next to the strongest
   alternative with no engine at all, a bare ``concurrent.futures`` pool of 2 mapping the same
   function (the machine's ceiling), and (unless ``--quick``) a Dask LocalCluster of 2 workers.

Usage:
    python benchmarks/bench_sweeps.py [--quick] [--points 10000] [--cpu-points 16] [--json out.json]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import tempfile
import time
from pathlib import Path

from lora_theory.sweeps import ResultStore, grid, run_sweep
from tests.sweeps.probes import cpu_bound, sleepy_square


def _timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def _bare_pool(ids: list[int], jobs: int) -> None:
    with cf.ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(cpu_bound, ids))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2000 trivial points, 8 CPU-bound points, no Dask (about 15 s)")
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--cpu-points", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    n_trivial = args.points or (2000 if args.quick else 10_000)
    n_cpu = args.cpu_points or (8 if args.quick else 16)
    print(f"# {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} (other processes share the cores)")
    res: dict[str, float] = {}
    pts = grid(x=[float(i) for i in range(n_trivial)])
    with tempfile.TemporaryDirectory() as d:
        direct = _timed(lambda: [sleepy_square(**p) for p in pts])
        engine = _timed(run_sweep, sleepy_square, pts, Path(d) / "s.sqlite", name="trivial", executor="inprocess", progress=False)
        res["overhead_ms"] = (engine - direct) / n_trivial * 1e3
        print(f"[1] {n_trivial} trivial points: direct {direct:.3f} s, engine {engine:.2f} s: overhead {res['overhead_ms']:.2f} ms/point (target <= 5)")
        with ResultStore(Path(d) / "n.sqlite", synchronous="NORMAL") as st:
            normal = _timed(run_sweep, sleepy_square, pts, st, name="trivial", executor="inprocess", progress=False)
        res["overhead_normal_ms"] = (normal - direct) / n_trivial * 1e3
        nofsync = _timed(run_sweep, sleepy_square, pts, Path(d) / "u.sqlite", name="trivial", executor="inprocess", seed=None, progress=False)
        print(f"    synchronous=NORMAL (no fsync per point): {res['overhead_normal_ms']:.2f} ms/point; FULL without per-point RNG seeding "
              f"(seed=None): {(nofsync - direct) / n_trivial * 1e3:.2f} ms/point")

        ids = list(range(n_cpu))
        cpu = grid(i=ids)
        res["jobs1_s"] = _timed(run_sweep, cpu_bound, cpu, Path(d) / "c1.sqlite", name="cpu", jobs=1, executor="process", progress=False)
        res["jobs2_s"] = _timed(run_sweep, cpu_bound, cpu, Path(d) / "c2.sqlite", name="cpu", jobs=2, executor="process", progress=False)
        res["serial_s"] = _timed(lambda: [cpu_bound(i) for i in ids])
        res["bare_pool2_s"] = _timed(_bare_pool, ids, 2)
        res["speedup"] = res["jobs1_s"] / res["jobs2_s"]
        res["bare_speedup"] = res["serial_s"] / res["bare_pool2_s"]
        print(f"[2] {n_cpu} CPU-bound points: engine --jobs 1 {res['jobs1_s']:.2f} s, --jobs 2 {res['jobs2_s']:.2f} s: "
              f"{res['speedup']:.2f}x (target >= 1.7)")
        print(f"    no engine: serial loop {res['serial_s']:.2f} s, bare 2-process pool {res['bare_pool2_s']:.2f} s = "
              f"{res['bare_speedup']:.2f}x (the machine's ceiling); engine --jobs 2 / bare pool = {res['jobs2_s'] / res['bare_pool2_s']:.2f}")
        if not args.quick:
            try:
                res["dask2_s"] = _timed(run_sweep, cpu_bound, cpu, Path(d) / "c3.sqlite", name="cpu", jobs=2, executor="dask-local", progress=False)
                print(f"    dask-local, 2 workers (cluster start included): {res['dask2_s']:.2f} s = {res['jobs1_s'] / res['dask2_s']:.2f}x of --jobs 1")
            except ImportError as e:
                print(f"    dask-local skipped: {e}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
