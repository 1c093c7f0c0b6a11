"""lora_theory.sweeps.store: one transaction per point, concurrent readers, export round trip,
foreign / corrupt / newer files refused and never modified."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from lora_theory.sweeps import ResultStore, StoreError, grid, run_sweep
from tests.sweeps.probes import sleepy_square

_WRITER = """
import sys
from lora_theory.sweeps import grid, run_sweep
from tests.sweeps.probes import sleepy_square
run_sweep(sleepy_square, grid(x=[float(i) for i in range(30)], delay=[0.03]), sys.argv[1], name="slow", progress=False)
"""


def test_record_load_and_summary(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as st:
        st.record("a", "h1", {"x": 1}, {"y": 2.0, "v": [1, 2]}, seconds=0.5, seed=3)
        st.record("a", "h2", {"x": 2}, None, error="Traceback ...\nValueError: no")
        st.record("b", "h3", {"x": 3}, {"y": 9.0})
        st.record("a", "h2", {"x": 2}, {"y": 4.0})  # a retried failure replaces its row
        df = st.load("a")
        assert sorted(df.x) == [1, 2] and df._hash.is_unique and df._error.isna().all()
        assert df.set_index("x").loc[1, "v"] == [1, 2] and df.set_index("x").loc[1, "_seed"] == 3
        assert st.done("a") == {"h1", "h2"} and st.done() == {"h1", "h2", "h3"}
        summary = st.sweeps().set_index("sweep")
        assert summary.loc["a", "points"] == 2 and summary.loc["b", "points"] == 1 and summary.failed.sum() == 0
        with pytest.raises(ValueError, match="exactly one of them"):
            st.record("a", "h4", {"x": 4}, {"y": 1.0}, error="both")
    with ResultStore(tmp_path / "s.sqlite", readonly=True) as ro, pytest.raises(StoreError, match="readonly"):
        ro.record("a", "h5", {"x": 5}, {"y": 1.0})


def test_wal_and_full_sync(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as st:
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with ResultStore(tmp_path / "s.sqlite", synchronous="NORMAL") as st:
        assert st.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError, match="synchronous: expected one of 'FULL', 'NORMAL'"):
        ResultStore(tmp_path / "s.sqlite", synchronous="OFF")


def test_concurrent_reader_while_a_sweep_writes(tmp_path):
    store = tmp_path / "c.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(store)])
    seen = []
    try:
        t_end = time.time() + 60
        while time.time() < t_end and proc.poll() is None:
            time.sleep(0.1)
            if store.exists():
                try:
                    with ResultStore(store, readonly=True) as st:
                        df = st.load()
                except StoreError:
                    continue  # the writer has not created the schema yet
                assert df.empty or (df._hash.is_unique and df._error.isna().all())
                seen.append(len(df))
    finally:
        assert proc.wait(timeout=60) == 0
    assert seen == sorted(seen) and len({n for n in seen if 0 < n < 30}) >= 2  # read mid-sweep: growing snapshots
    with ResultStore(store, readonly=True) as st:
        assert len(st.load()) == 30


def test_export_round_trip(tmp_path):
    store = tmp_path / "e.sqlite"
    run_sweep(sleepy_square, grid(x=[1.0, 2.0, -1.0]), store, name="sq", progress=False)
    with ResultStore(store) as st:
        st.record("lists", "hl", {"x": 1.0}, {"y": [1.0, 2.0]})
        df = st.load("sq").sort_values("x").reset_index(drop=True)
        back = pd.read_csv(st.export(tmp_path / "e.csv", "sq")).sort_values("x").reset_index(drop=True)
        pd.testing.assert_frame_equal(back[["x", "y", "_hash", "_seconds"]], df[["x", "y", "_hash", "_seconds"]])
        assert back._error.notna().sum() == 1 and "ValueError" in back._error.dropna().iloc[0]
        with pytest.raises(ValueError, match="path: expected a .csv or .parquet"):
            st.export(tmp_path / "e.xlsx")
        pytest.importorskip("pyarrow")
        pq = pd.read_parquet(st.export(tmp_path / "e.parquet")).sort_values(["_sweep", "x"]).reset_index(drop=True)
        assert len(pq) == 4 and pq[pq._sweep == "lists"].y.iloc[0] == "[1.0, 2.0]"  # a column mixing lists and numbers: JSON text
        assert [json.loads(v) for v in pq[pq._sweep == "sq"].y.dropna()] == [1.0, 4.0]
        one = pd.read_parquet(st.export(tmp_path / "sq.parquet", "sq")).sort_values("x").reset_index(drop=True)
        pd.testing.assert_frame_equal(one[["x", "y", "_hash", "_error"]], df[["x", "y", "_hash", "_error"]])  # one sweep: types kept


def test_foreign_file_is_refused_and_untouched(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (a)")
        c.execute("INSERT INTO t VALUES (1)")
    before = foreign.read_bytes()
    for ro in (False, True):
        with pytest.raises(StoreError, match="not a lora-theory results store"):
            ResultStore(foreign, readonly=ro)
    assert foreign.read_bytes() == before


def test_garbage_file_is_refused_and_untouched(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="refusing"):
        ResultStore(corrupt)
    assert corrupt.read_bytes() == b"this is not a database" * 100


def test_damaged_store_is_refused_before_appending(tmp_path):
    store = tmp_path / "d.sqlite"
    with ResultStore(store) as st:
        for i in range(200):
            st.record("s", f"h{i}", {"x": i}, {"y": "z" * 200})
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(store.read_bytes())
    page = 4096
    assert len(raw) > 4 * page
    raw[3 * page:3 * page + 512] = b"\xff" * 512  # scribble over a b-tree page
    store.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="damaged|not a readable"):
        ResultStore(store)
    assert store.read_bytes() == bytes(raw)


def test_other_schema_version_and_paths(tmp_path):
    store = tmp_path / "v.sqlite"
    ResultStore(store).close()
    with sqlite3.connect(store) as c:
        c.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema version 99, expected 3"):
        ResultStore(store)
    with pytest.raises(StoreError, match="expected an existing store"):
        ResultStore(tmp_path / "missing.sqlite", readonly=True)
    with pytest.raises(StoreError, match="directory"):
        ResultStore(tmp_path)
    with pytest.raises(ValueError, match="path: expected a file path"):
        ResultStore(3)
