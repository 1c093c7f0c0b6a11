"""The chaos driver behind tests/sweeps/test_chaos.py and ``benchmarks/bench_sweeps.py --chaos``.

A seeded sweep runs in a real coordinator process (``--jobs 2`` process pool); at random times
(from the seed) a random pool worker is killed with SIGKILL, and the coordinator itself is killed
with SIGKILL, then restarted (a resume), several times; the last run is left to finish (its workers
may still be killed). Afterwards the store must hold every point exactly once, finished with the
right metrics or failed with a cause, no lease, and no process of any round may be alive.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from lora_theory.sweeps import ResultStore, grid

__all__ = ["chaos", "chaos_points"]

_COORDINATOR = """
import json, sys
from lora_theory.sweeps import run_sweep
from tests.sweeps.probes import chaos_point
points = json.loads(open(sys.argv[2]).read())
print("COUNTS", run_sweep(chaos_point, points, sys.argv[1], name="chaos", jobs=2, executor="process", max_retries=int(sys.argv[3]),
                          progress=False), flush=True)
"""


def chaos_points(n: int, seed: int) -> list[dict]:
    """n points with seeded delays (0.05-0.25 s); every 13th raises, every 17th kills its worker on every attempt."""
    rng = random.Random(seed)
    fates = ["raise" if i % 13 == 12 else "die" if i % 17 == 16 else "ok" for i in range(n)]
    return [p | {"delay": round(rng.uniform(0.05, 0.25), 3), "fate": f} for p, f in zip(grid(i=list(range(n))), fates, strict=True)]


def _children(pid: int) -> list[int]:
    import psutil  # test extra (via dask[distributed])

    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def alive(pids) -> list[int]:
    """The pids among ``pids`` that still run (a zombie counts as gone)."""
    import psutil

    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def chaos(folder: str | Path, *, n: int = 40, seed: int = 0, coordinator_kills: int = 5, max_retries: int = 3,
          max_seconds: float = 240.0) -> dict:
    """Run the chaos experiment in ``folder``; return its figures (raises AssertionError on a violation).

    Returns:
        {"points", "rounds", "coordinator_kills", "worker_kills", "retries" (stored attempts - 1, summed), "failed",
        "failed_ok_points" (healthy points failed because chaos killed their worker on every attempt),
        "worst_cleanup_s" (coordinator killed -> its last worker gone), "seconds"}.
    """
    folder = Path(folder)
    rng = random.Random(seed + 1)
    points = chaos_points(n, seed)
    spec = folder / "points.json"
    spec.write_text(__import__("json").dumps(points))
    store = folder / "chaos.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    figures = {"points": n, "rounds": 0, "coordinator_kills": 0, "worker_kills": 0, "worst_cleanup_s": 0.0}
    seen: set[int] = set()
    t_start = time.monotonic()
    while True:
        assert time.monotonic() - t_start < max_seconds, f"chaos: not finished after {max_seconds} s ({figures})"
        figures["rounds"] += 1
        proc = subprocess.Popen([sys.executable, "-c", _COORDINATOR, str(store), str(spec), str(max_retries)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        last = figures["coordinator_kills"] >= coordinator_kills  # the last run is left to finish
        t0 = time.monotonic()
        kill_at = t0 + rng.uniform(2.0, 5.0)
        worker_kills = sorted(t0 + rng.uniform(1.5, 6.0) for _ in range(rng.randint(1, 3)))
        while proc.poll() is None:
            now = time.monotonic()
            kids = _children(proc.pid)
            seen.update(kids)
            if worker_kills and now >= worker_kills[0] and kids:
                worker_kills.pop(0)
                os.kill(rng.choice(sorted(kids)), signal.SIGKILL)
                figures["worker_kills"] += 1
            if not last and now >= kill_at:
                kids = _children(proc.pid)
                seen.update(kids)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                figures["coordinator_kills"] += 1
                t_kill = time.monotonic()
                while alive(kids) and time.monotonic() - t_kill < 5.0:
                    time.sleep(0.02)
                assert alive(kids) == [], f"chaos: workers {alive(kids)} alive 5 s after their coordinator was killed"
                figures["worst_cleanup_s"] = max(figures["worst_cleanup_s"], time.monotonic() - t_kill)
                break
            time.sleep(0.02)
        out, err = proc.communicate()
        if proc.returncode == 0:
            assert "COUNTS" in out and "Traceback" not in err, (out, err)
            break
        assert proc.returncode == -signal.SIGKILL, f"chaos: the coordinator ended with {proc.returncode}: {err[-2000:]}"
    figures["seconds"] = time.monotonic() - t_start
    assert alive(seen) == [], f"chaos: processes {alive(seen)} outlived the sweep"

    with ResultStore(store, readonly=True) as st:
        df = st.load("chaos")
        leases = st.leases()
    assert leases.empty, f"chaos: leases left behind: {leases}"
    assert len(df) == n and df._hash.is_unique, "chaos: a point lost or stored twice"
    assert sorted(df.i) == list(range(n)), "chaos: the stored points are not the sweep's points"
    failed_ok = 0
    for row in df.to_dict("records"):
        err = row["_error"] if isinstance(row["_error"], str) else None
        if row["fate"] == "raise":
            assert err and "ValueError: i: expected a point that works" in err, row
        elif row["fate"] == "die":
            assert err and err.startswith("worker died: killed by SIGKILL"), row
        elif err:  # a healthy point whose worker chaos killed on every attempt: failed, with that cause
            assert err.startswith("worker died: killed by SIGKILL"), row
            failed_ok += 1
        else:
            assert row["y"] == row["i"] ** 2 and row["z"] == (row["i"] * 2654435761) % 2**32, row
    figures["retries"] = int((df._attempts.fillna(1) - 1).sum())
    figures["failed"] = int(df._error.notna().sum())
    figures["failed_ok_points"] = failed_ok
    return figures
