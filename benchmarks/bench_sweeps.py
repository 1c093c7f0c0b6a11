"""Benchmark: the sweep engine's overhead per point, and what its executors gain on CPU-bound work.

1. A trivial sweep (``sleepy_square`` with no delay, 10k points) through ``run_sweep`` in-process
   vs calling the function directly in a loop: overhead per point (target <= 5 ms; every point is
   its own fsynced SQLite transaction, ``synchronous=FULL``).
2. A CPU-bound sweep (``cpu_bound``: ~0.2 s of pure-Python arithmetic per point): ``--jobs 2`` vs
   ``--jobs 1`` through the engine (target >= 1.7x on 2 cores), next to the strongest
   alternative with no engine at all, a bare ``concurrent.futures`` pool of 2 mapping the same
   function (the machine's ceiling), and (unless ``--quick``) a Dask LocalCluster of 2 workers.
3. Leases: two coordinators on one store, each ``--jobs 1`` over sleeping points (0.1 s, so the
   cores are not the limit), vs one coordinator alone: the time from the first point's start to
   the last point's finish (read from the store; process start-up left out), its ratio (ideal 2x;
   every point is computed once, by one of them) and the cost of one lease claim.
4. ``--chaos [SEEDS]``: the chaos experiment of tests/sweeps/test_chaos.py (SIGKILL of random
   workers and of the coordinator, then resume) for seeds 0..SEEDS-1: kills, retries, failures,
   the worst time from a coordinator's death to its last worker's, and the duration.

Usage (from the repository root):
    PYTHONPATH=. python benchmarks/bench_sweeps.py [--quick] [--points 10000] [--cpu-points 16] [--chaos 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lora_theory.sweeps import Holder, ResultStore, grid, run_sweep
from tests.sweeps.chaos import chaos
from tests.sweeps.probes import cpu_bound, sleepy_square

_SHARER = """
import sys
from lora_theory.sweeps import grid, run_sweep
from tests.sweeps.probes import sleepy_square
print("COUNTS", run_sweep(sleepy_square, grid(x=[float(i) for i in range(int(sys.argv[2]))], delay=[0.1]), sys.argv[1], name="share",
                          executor="inprocess", progress=False), flush=True)
"""


def _sharing(folder: Path, n: int) -> dict[str, float]:
    """Time to compute n sleeping points: one coordinator alone, then two on one store; and one lease claim."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}

    def run(store: Path, k: int) -> tuple[float, list[dict]]:
        """The span from the first to the last stored point (process start-up, which is slow on busy cores, left out)."""
        ResultStore(store).close()
        procs = [subprocess.Popen([sys.executable, "-c", _SHARER, str(store), str(n)], stdout=subprocess.PIPE, text=True, env=env) for _ in range(k)]
        outs = [p.communicate()[0] for p in procs]
        with ResultStore(store, readonly=True) as st:
            df = st.load("share")
        span = float(df._finished.max() - (df._finished - df._seconds).min())
        return span, [ast.literal_eval(o.split("COUNTS", 1)[1].strip()) for o in outs]

    one, _ = run(folder / "one.sqlite", 1)
    two, counts = run(folder / "two.sqlite", 2)
    with ResultStore(folder / "claims.sqlite") as st:
        holder = Holder.this_process()
        t0 = time.perf_counter()
        for i in range(500):
            st.claim("c", f"h{i}", holder, ttl=60)
        claim_ms = (time.perf_counter() - t0) / 500 * 1e3
    return {"one_s": one, "two_s": two, "share_speedup": one / two, "done_a": counts[0]["done"], "done_b": counts[1]["done"], "claim_ms": claim_ms}


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
    ap.add_argument("--chaos", type=int, default=0, metavar="SEEDS", help="also run the chaos experiment for seeds 0..SEEDS-1 (about 30 s each)")
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
        n_share = 40 if args.quick else 100
        sh = _sharing(Path(d), n_share)
        res.update(sh)
        print(f"[3] {n_share} sleeping points (0.1 s): first start to last finish: one coordinator {sh['one_s']:.2f} s, two on one store {sh['two_s']:.2f} s = "
              f"{sh['share_speedup']:.2f}x (ideal 2); points computed {sh['done_a']} + {sh['done_b']} = {sh['done_a'] + sh['done_b']}; "
              f"one lease claim {sh['claim_ms']:.2f} ms")
        for seed in range(args.chaos):
            (Path(d) / f"chaos{seed}").mkdir()
            f = chaos(Path(d) / f"chaos{seed}", n=40, seed=seed, coordinator_kills=4)
            res[f"chaos{seed}"] = f
            print(f"[4] chaos seed {seed}: {f['points']} points, {f['rounds']} runs, {f['coordinator_kills']} coordinator and {f['worker_kills']} "
                  f"worker SIGKILLs, {f['retries']} retries, {f['failed']} failed with a cause ({f['failed_ok_points']} healthy ones among them), "
                  f"last worker gone {f['worst_cleanup_s']:.2f} s after its coordinator at worst, {f['seconds']:.1f} s; nothing lost or duplicated")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
