"""Tests for lora_theory.sweeps: resume, failures, kill -9, concurrent readers, export, bad stores."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from lora_theory.sweeps import ResultStore, StoreError, grid, load_toml, point_hash, run_sweep
from lora_theory.sweeps.points import sleepy_square


def test_grid_and_hash():
    pts = grid(x=[1, 2], y=["a", "b", "c"])
    assert len(pts) == 6 and pts[0] == {"x": 1, "y": "a"}
    assert point_hash("s", {"x": 1, "y": 2}) == point_hash("s", {"y": 2, "x": 1}) != point_hash("t", {"x": 1, "y": 2})
    with pytest.raises(ValueError, match="x: expected a non-empty list"):
        grid(x=[])


def test_resume_and_failures(tmp_path):
    store = tmp_path / "s.sqlite"
    pts = grid(x=[0.0, 1.0, -1.0, 2.0])
    assert run_sweep(sleepy_square, pts, store, name="sq", executor="inprocess", progress=False) == {"total": 4, "skipped": 0, "done": 3, "failed": 1}
    again = run_sweep(sleepy_square, pts, store, name="sq", executor="inprocess", progress=False)
    assert again["skipped"] == 4 and again["done"] == 0  # nothing recomputed, the failure is not retried
    retry = run_sweep(sleepy_square, pts, store, name="sq", executor="inprocess", progress=False, retry_failed=True)
    assert retry["skipped"] == 3 and retry["failed"] == 1
    with ResultStore(store) as st:
        df = st.load("sq")
    assert len(df) == 4 and df._hash.is_unique
    assert "ValueError: x: expected >= 0" in df[df.x == -1.0]._error.iloc[0]


def test_process_pool_equals_inprocess(tmp_path):
    pts = grid(x=[0.5, 1.5, 2.5, 3.5])
    run_sweep(sleepy_square, pts, tmp_path / "a.sqlite", name="sq", executor="inprocess", progress=False)
    run_sweep(sleepy_square, pts, tmp_path / "b.sqlite", name="sq", jobs=2, progress=False)
    with ResultStore(tmp_path / "a.sqlite") as a, ResultStore(tmp_path / "b.sqlite") as b:
        da, db = a.load().sort_values("x"), b.load().sort_values("x")
    assert list(da.y) == list(db.y) == [0.25, 2.25, 6.25, 12.25]


_KILL_SCRIPT = """
import sys
from lora_theory.sweeps import grid, run_sweep
from lora_theory.sweeps.points import sleepy_square
run_sweep(sleepy_square, grid(x=[float(i) for i in range(40)], delay=[0.05]), sys.argv[1], name="slow", executor="inprocess", progress=False)
"""


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path):
    store = tmp_path / "k.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(store)])
    deadline = time.time() + 60
    n = 0
    while time.time() < deadline:
        time.sleep(0.1)
        if store.exists():
            try:
                with sqlite3.connect(store) as c:
                    n = c.execute("SELECT COUNT(*) FROM points").fetchone()[0]
            except sqlite3.Error:
                continue
            if n >= 5:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 5 <= n < 40
    with ResultStore(store) as st:
        before = st.load("slow").set_index("_hash")._finished
    counts = run_sweep(sleepy_square, grid(x=[float(i) for i in range(40)], delay=[0.05]), store, name="slow", executor="inprocess", progress=False)
    with ResultStore(store) as st:
        after = st.load("slow")
    assert len(after) == 40 and after._hash.is_unique and after._error.isna().all()
    assert counts["skipped"] == len(before) and counts["done"] == 40 - len(before)
    assert (after.set_index("_hash").loc[before.index]._finished == before).all()  # finished points were not recomputed


def test_concurrent_reader_while_writing(tmp_path):
    store = tmp_path / "c.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(store)])
    seen = []
    try:
        t_end = time.time() + 30
        while time.time() < t_end and proc.poll() is None:
            time.sleep(0.2)
            if store.exists():
                try:
                    with ResultStore(store, readonly=True) as st:
                        seen.append(len(st.load()))
                except StoreError:
                    continue  # the writer has not created the schema yet
    finally:
        proc.wait(timeout=60)
    assert seen and seen == sorted(seen) and max(seen) <= 40


def test_export_round_trip(tmp_path):
    store = tmp_path / "e.sqlite"
    run_sweep(sleepy_square, grid(x=[1.0, 2.0]), store, name="sq", executor="inprocess", progress=False)
    with ResultStore(store) as st:
        csv = st.export(tmp_path / "e.csv")
        back = pd.read_csv(csv)
        assert list(back.sort_values("x").y) == [1.0, 4.0]
        with pytest.raises(ValueError, match="path"):
            st.export(tmp_path / "e.xlsx")
        pytest.importorskip("pyarrow")
        pq = st.export(tmp_path / "e.parquet")
        assert list(pd.read_parquet(pq).sort_values("x").y) == [1.0, 4.0]


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (a)")
    with pytest.raises(StoreError, match="not a lora-theory results store"):
        ResultStore(foreign)
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="refusing"):
        ResultStore(corrupt)
    assert corrupt.read_bytes().startswith(b"this is not a database")  # never overwritten


def test_toml_grid(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "sq"\nfunction = "lora_theory.sweeps.points:sleepy_square"\n[grid]\nx = [1.0, 2.0, 3.0]\n')
    name, fn, pts = load_toml(f)
    assert name == "sq" and fn is sleepy_square and len(pts) == 3
    f.write_text('name = "sq"\nfunction = "nope:nothing"\n[grid]\nx = [1.0]\n')
    with pytest.raises(ValueError, match="function"):
        load_toml(f)


def test_determinism(tmp_path):
    from lora_theory.sweeps.points import approx_error

    pts = grid(L=[64], gamma=[0.5, 2.0])
    for name in ("a", "b"):
        run_sweep(approx_error, pts, tmp_path / f"{name}.sqlite", name="norms", executor="inprocess", progress=False)
    with ResultStore(tmp_path / "a.sqlite") as a, ResultStore(tmp_path / "b.sqlite") as b:
        cols = ["L", "gamma", "R", "rel_err", "valid", "k"]
        pd.testing.assert_frame_equal(a.load()[cols].sort_values("gamma").reset_index(drop=True), b.load()[cols].sort_values("gamma").reset_index(drop=True))


def test_dask_local_cluster_equals_process_pool(tmp_path):
    pytest.importorskip("distributed")
    pts = grid(x=[0.5, 1.5, -2.0, 3.5])
    a = run_sweep(sleepy_square, pts, tmp_path / "d.sqlite", name="sq", jobs=1, executor="dask-local", progress=False)
    run_sweep(sleepy_square, pts, tmp_path / "p.sqlite", name="sq", jobs=2, progress=False)
    assert a == {"total": 4, "skipped": 0, "done": 3, "failed": 1}
    with ResultStore(tmp_path / "d.sqlite") as d, ResultStore(tmp_path / "p.sqlite") as p:
        dd, pp = d.load().sort_values("x"), p.load().sort_values("x")
    assert dd.y.fillna(-1).tolist() == pp.y.fillna(-1).tolist() and dd._hash.tolist() == pp._hash.tolist()
    with pytest.raises(ValueError, match="executor"):
        run_sweep(sleepy_square, pts, tmp_path / "x.sqlite", name="sq", executor="spark")


def test_sigterm_stops_cleanly_and_resumes(tmp_path):
    store = tmp_path / "t.sqlite"
    script = _KILL_SCRIPT.replace('progress=False)', 'progress=False); print("COUNTS", counts)').replace("run_sweep(sleepy", "counts = run_sweep(sleepy")
    proc = subprocess.Popen([sys.executable, "-c", script, str(store)], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.1)
        try:
            with sqlite3.connect(store) as c:
                if c.execute("SELECT COUNT(*) FROM points").fetchone()[0] >= 3:
                    break
        except sqlite3.Error:
            continue
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "'interrupted': 1" in out  # stopped cleanly, said so
    with ResultStore(store) as st:
        n = len(st.load())
    assert 3 <= n < 40
    counts = run_sweep(sleepy_square, grid(x=[float(i) for i in range(40)], delay=[0.05]), store, name="slow", executor="inprocess", progress=False)
    assert counts["skipped"] == n and counts["done"] == 40 - n
