"""lora_theory.sweeps.engine: resume, failures, a real kill -9, SIGTERM and Ctrl-C, determinism; no worker outlives a
killed coordinator; runs sharing a store share the work through leases (real processes)."""
from __future__ import annotations

import ast
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from lora_theory.sweeps import ResultStore, grid, run_sweep
from tests.sweeps.chaos import alive
from tests.sweeps.probes import logged_square, noisy_mean, sleepy_square

_N = 40
_SCRIPT = """
import signal, sys
# as in a terminal: a test run started in the background (bash '&', nohup) hands SIGINT down ignored,
# and Python then never raises KeyboardInterrupt; restore the default handler so Ctrl-C can be tested
signal.signal(signal.SIGINT, signal.default_int_handler)
from lora_theory.sweeps import grid, run_sweep
from tests.sweeps.probes import sleepy_square
counts = run_sweep(sleepy_square, grid(x=[float(i) for i in range({n})], delay=[0.05]), sys.argv[1], name="slow",
                   jobs=int(sys.argv[2]), executor=sys.argv[3], progress=False)
print("COUNTS", counts, flush=True)
"""


def _slow_points():
    return grid(x=[float(i) for i in range(_N)], delay=[0.05])


def _start(store, jobs=1, executor="inprocess"):
    return subprocess.Popen([sys.executable, "-c", _SCRIPT.format(n=_N), str(store), str(jobs), executor], stdout=subprocess.PIPE, text=True)


def _wait_for_rows(store, at_least: int, timeout: float = 60.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.05)
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as c:
                n = c.execute("SELECT COUNT(*) FROM points").fetchone()[0]
        except sqlite3.Error:
            continue  # not created yet
        if n >= at_least:
            return n
    raise AssertionError(f"fewer than {at_least} points stored after {timeout} s")


def test_resume_skips_finished_points_and_keeps_failures(tmp_path):
    store = tmp_path / "s.sqlite"
    pts = grid(x=[0.0, 1.0, -1.0, 2.0])
    assert run_sweep(sleepy_square, pts, store, name="sq", progress=False) == {"total": 4, "skipped": 0, "done": 3, "failed": 1}
    assert run_sweep(sleepy_square, pts, store, name="sq", progress=False) == {"total": 4, "skipped": 4, "done": 0, "failed": 0}
    assert run_sweep(sleepy_square, pts, store, name="sq", progress=False, retry_failed=True) == {"total": 4, "skipped": 3, "done": 0, "failed": 1}
    assert run_sweep(sleepy_square, pts + [{"x": 5.0}], store, name="sq", progress=False)["done"] == 1  # a grown grid runs only the new point
    with ResultStore(store) as st:
        df = st.load("sq")
    assert len(df) == 5 and df._hash.is_unique
    err = df[df.x == -1.0]._error.iloc[0]
    assert "Traceback" in err and "ValueError: x: expected >= 0, got -1.0" in err
    assert set(df._host) == {os.uname().nodename} and (df._seconds >= 0).all() and (df._seed == 0).all()


def test_duplicate_points_run_once(tmp_path):
    counts = run_sweep(sleepy_square, [{"x": 1.0}, {"x": 1.0}, {"x": 2.0}], tmp_path / "s.sqlite", name="sq", progress=False)
    assert counts == {"total": 2, "skipped": 0, "done": 2, "failed": 0}


def test_bad_arguments_name_the_problem(tmp_path):
    store = tmp_path / "s.sqlite"
    with pytest.raises(ValueError, match="name: expected a non-empty string"):
        run_sweep(sleepy_square, [{"x": 1.0}], store, name="")
    with pytest.raises(ValueError, match="points: expected a list of parameter dicts"):
        run_sweep(sleepy_square, {"x": 1.0}, store, name="sq")
    with pytest.raises(ValueError, match=r"points\[1\]: expected a dict"):
        run_sweep(sleepy_square, [{"x": 1.0}, 3], store, name="sq")
    with pytest.raises(ValueError, match="jobs"):
        run_sweep(sleepy_square, [{"x": 1.0}], store, name="sq", jobs=0)
    with pytest.raises(ValueError, match="executor: expected one of"):
        run_sweep(sleepy_square, [{"x": 1.0}], store, name="sq", executor="spark", progress=False)
    with pytest.raises(ValueError, match="fn: expected a picklable"):
        run_sweep(lambda x: {"y": x}, [{"x": 1.0}], store, name="sq", jobs=2)
    assert run_sweep(lambda x: {"y": x}, [{"x": 1.0}], store, name="sq", progress=False)["done"] == 1  # in-process: no pickling


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path):
    store = tmp_path / "k.sqlite"
    proc = _start(store)
    n = _wait_for_rows(store, 5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ResultStore(store) as st:
        before = st.load("slow").set_index("_hash")._finished
    assert 5 <= n <= len(before) < _N
    counts = run_sweep(sleepy_square, _slow_points(), store, name="slow", progress=False)
    assert counts == {"total": _N, "skipped": len(before), "done": _N - len(before), "failed": 0}
    with ResultStore(store) as st:
        after = st.load("slow")
    assert len(after) == _N and after._hash.is_unique and after._error.isna().all()
    assert sorted(after.x) == [float(i) for i in range(_N)]
    assert (after.set_index("_hash").loc[before.index]._finished == before).all()  # finished points were not recomputed


@pytest.mark.parametrize(("jobs", "executor"), [(1, "inprocess"), (2, "process")])
def test_sigterm_stops_cleanly_and_resumes(tmp_path, jobs, executor):
    store = tmp_path / "t.sqlite"
    proc = _start(store, jobs, executor)
    _wait_for_rows(store, 3)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "'interrupted': 1" in out  # stopped cleanly (no traceback), said so
    assert time.time() - t0 < 10  # did not run the rest of the sweep first
    with ResultStore(store) as st:
        df = st.load()
    assert 3 <= len(df) < _N and df._error.isna().all()  # the interruption is not recorded as a failure
    counts = run_sweep(sleepy_square, _slow_points(), store, name="slow", progress=False)
    assert counts["skipped"] == len(df) and counts["done"] == _N - len(df)


def test_ctrl_c_on_a_process_pool_stops_cleanly(tmp_path):
    store = tmp_path / "i.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT.format(n=_N), str(store), "2", "process"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_rows(store, 3)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "'interrupted': 1" in out and "Traceback" not in err
    with ResultStore(store) as st:
        assert st.load()._error.isna().all()


def test_run_from_a_thread(tmp_path):
    """Signal handlers can only be installed in the main thread: elsewhere the engine runs without one."""
    box = {}
    t = threading.Thread(target=lambda: box.update(run_sweep(sleepy_square, grid(x=[1.0, 2.0]), tmp_path / "s.sqlite", name="sq", progress=False)))
    t.start()
    t.join(30)
    assert box == {"total": 2, "skipped": 0, "done": 2, "failed": 0}


def _metrics(store) -> pd.DataFrame:
    with ResultStore(store) as st:
        return st.load().sort_values(["n", "scale"])[["n", "scale", "mean", "first", "_hash"]].reset_index(drop=True)


def test_same_seed_same_metrics_across_runs_executors_and_resumes(tmp_path):
    pts = grid(n=[3, 50], scale=[1.0, 2.0])
    run_sweep(noisy_mean, pts, tmp_path / "a.sqlite", name="noise", seed=11, progress=False)
    run_sweep(noisy_mean, pts[::-1], tmp_path / "b.sqlite", name="noise", seed=11, jobs=2, progress=False)  # other order, a pool
    run_sweep(noisy_mean, pts[:1], tmp_path / "c.sqlite", name="noise", seed=11, progress=False)  # interrupted, then resumed
    run_sweep(noisy_mean, pts, tmp_path / "c.sqlite", name="noise", seed=11, progress=False)
    a = _metrics(tmp_path / "a.sqlite")
    pd.testing.assert_frame_equal(a, _metrics(tmp_path / "b.sqlite"))
    pd.testing.assert_frame_equal(a, _metrics(tmp_path / "c.sqlite"))
    run_sweep(noisy_mean, pts, tmp_path / "d.sqlite", name="noise", seed=12, progress=False)
    d = _metrics(tmp_path / "d.sqlite")
    assert not (d["first"] == a["first"]).any() and not set(d._hash) & set(a._hash)  # another seed: other draws, other points


def test_determinism_of_a_real_study_point(tmp_path):
    from lora_theory.limits.norm_sweeps import approx_error

    pts = grid(L=[64], gamma=[0.5, 2.0])
    for name in ("a", "b"):
        run_sweep(approx_error, pts, tmp_path / f"{name}.sqlite", name="norms", progress=False)
    cols = ["L", "gamma", "R", "rel_err", "valid", "k"]
    with ResultStore(tmp_path / "a.sqlite") as a, ResultStore(tmp_path / "b.sqlite") as b:
        pd.testing.assert_frame_equal(a.load()[cols].sort_values("gamma").reset_index(drop=True),
                                      b.load()[cols].sort_values("gamma").reset_index(drop=True))


def _workers_of(pid: int, n: int, timeout: float = 60.0) -> list[int]:
    psutil = pytest.importorskip("psutil")
    deadline = time.time() + timeout
    while time.time() < deadline:
        kids = [p.pid for p in psutil.Process(pid).children(recursive=True)]
        if len(kids) >= n:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"coordinator {pid} has fewer than {n} workers after {timeout} s")


def test_sigkill_of_the_coordinator_leaves_no_worker_alive(tmp_path):
    """kill -9 of a `--jobs 2` coordinator: both pool workers are gone within 5 s, and a resume finishes the sweep.

    Fails on the concurrent.futures pool: its workers blocked on their task queue forever."""
    store = tmp_path / "k.sqlite"
    proc = _start(store, jobs=2, executor="process")
    _wait_for_rows(store, 3)
    workers = _workers_of(proc.pid, 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while alive(workers) and time.time() < deadline:
        time.sleep(0.05)
    assert alive(workers) == []
    counts = run_sweep(sleepy_square, _slow_points(), store, name="slow", progress=False)  # its leases are taken over at once (pid gone)
    assert counts["done"] + counts["skipped"] == _N
    with ResultStore(store) as st:
        assert len(st.load("slow")) == _N and st.leases().empty


_SHARED = """
import sys
from lora_theory.sweeps import grid, run_sweep
counts = run_sweep(__import__("tests.sweeps.probes", fromlist=["x"]).logged_square,
                   grid(x=[float(i) for i in range({n})], delay=[{delay}], log=[sys.argv[2]]), sys.argv[1], name="shared",
                   jobs=int(sys.argv[3]), executor=sys.argv[4], progress=False)
print("COUNTS", counts, flush=True)
"""


def _log_lines(log) -> list[tuple[float, int, str]]:
    return [(float(x), int(pid), what) for x, pid, what in (ln.split() for ln in log.read_text().splitlines())]


@pytest.mark.parametrize(("jobs", "executor"), [(1, "inprocess"), (2, "process")])
def test_two_runs_on_one_store_share_the_work(tmp_path, jobs, executor):
    """Two coordinators started together on one store: every point is computed exactly once, by one of them, and both work.

    Fails before leases: both runs computed every point (each point started twice in the log)."""
    n, store, log = 24, tmp_path / "s.sqlite", tmp_path / "log.txt"
    ResultStore(store).close()  # created up front: both runs open an existing store
    procs = [subprocess.Popen([sys.executable, "-c", _SHARED.format(n=n, delay=0.1), str(store), str(log), str(jobs), executor],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    starts = [(x, pid) for x, pid, what in _log_lines(log) if what == "start"]
    assert sorted(x for x, _ in starts) == [float(i) for i in range(n)]  # each point started exactly once
    counts = [ast.literal_eval(o.split("COUNTS", 1)[1].strip()) for o in outs]
    assert sum(c["done"] for c in counts) == n and min(c["done"] for c in counts) > 0  # each stored some points: the work was shared
    assert all(c["done"] + c.get("others", 0) + c["skipped"] == n for c in counts)  # and each accounts for all of them
    with ResultStore(store) as st:
        df = st.load("shared")
        assert len(df) == n and df._hash.is_unique and df._error.isna().all() and st.leases().empty


def test_a_dead_runs_points_are_taken_over_at_once(tmp_path):
    """Run A leases points and is killed with SIGKILL; run B (same host) takes over A's leases without waiting for them to
    expire (A's pid is gone), and every point ends up stored once."""
    n, store, log = 30, tmp_path / "s.sqlite", tmp_path / "log.txt"
    a = subprocess.Popen([sys.executable, "-c", _SHARED.format(n=n, delay=0.2), str(store), str(log), "2", "process"], stdout=subprocess.PIPE, text=True)
    _wait_for_rows(store, 2)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    with ResultStore(store) as st:
        assert not st.leases().empty  # A died holding leases
    t0 = time.monotonic()
    counts = run_sweep(logged_square, grid(x=[float(i) for i in range(n)], delay=[0.2], log=[str(log)]), store, name="shared", jobs=2,
                       progress=False, lease_ttl=600.0)
    assert time.monotonic() - t0 < 60  # did not wait out A's 600 s leases
    assert counts["done"] + counts["skipped"] == n
    with ResultStore(store) as st:
        df = st.load("shared")
        assert len(df) == n and df._hash.is_unique and st.leases().empty


def test_a_live_holders_lease_is_respected_then_an_expired_one_taken_over(tmp_path):
    """Leases held by live processes on another node are left alone until they expire (1.5 s and 3 s); then both are
    taken over (a run that got the first back must still wait for the second, not drop it)."""
    from lora_theory.sweeps import Holder, point_hash

    store = tmp_path / "s.sqlite"
    pts = grid(x=[1.0, 2.0, 3.0])
    other = Holder("other-run", 1, "elsewhere", "another-node")
    with ResultStore(store) as st:
        assert st.claim("sq", point_hash("sq", pts[0], 0), other, ttl=1.5) == "claimed"
        assert st.claim("sq", point_hash("sq", pts[1], 0), other, ttl=3.0) == "claimed"
    t0 = time.monotonic()
    counts = run_sweep(sleepy_square, pts, store, name="sq", progress=False)
    waited = time.monotonic() - t0
    assert counts == {"total": 3, "skipped": 0, "done": 3, "failed": 0} and 2.5 <= waited < 30
    with ResultStore(store) as st:
        assert sorted(st.load("sq").x) == [1.0, 2.0, 3.0] and st.leases().empty


def test_run_points_returns_exactly_these_points_and_names_a_failure(tmp_path):
    """run_points (the experiments' one home for 'run these, give me their rows'): other points in the same
    sweep are not returned; a failed point raises RuntimeError with the count, describe(row) and the error."""
    from lora_theory.sweeps import run_points
    from tests.sweeps.probes import chaos_point

    store = tmp_path / "s.sqlite"
    ok = [{"i": i, "delay": 0.0} for i in range(3)]
    run_points(chaos_point, ok + [{"i": 9, "delay": 0.0}], store, name="rp")
    df = run_points(chaos_point, ok, store, name="rp")
    assert sorted(df.i) == [0, 1, 2] and list(df.index) == [0, 1, 2] and sorted(df.y) == [0, 1, 4]
    with pytest.raises(RuntimeError, match=r"1 probe runs failed, e\.g\. i=7: .*fate 'raise'"):
        run_points(chaos_point, ok + [{"i": 7, "delay": 0.0, "fate": "raise"}], store, name="rp", what="probe runs",
                   describe=lambda row: f"i={row.i}")
