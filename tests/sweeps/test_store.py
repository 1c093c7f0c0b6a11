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


def _me(pid: int | None = None, node: str | None = None):
    from lora_theory.sweeps import Holder

    h = Holder.this_process()
    return Holder(h.id, h.pid if pid is None else pid, h.host, h.node if node is None else node)


def test_leases_claim_busy_takeover_and_record(tmp_path):
    """claim -> "claimed"; another live holder -> "busy"; its process gone -> taken over; a recorded point -> "done"."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with ResultStore(tmp_path / "s.sqlite") as st:
            a, b = _me(pid=sleeper.pid), _me()
            assert st.claim("sw", "h1", a, ttl=60) == "claimed"
            assert st.claim("sw", "h1", b, ttl=60) == "busy"  # a lives (same node, its pid exists)
            assert st.claim("sw", "h1", a, ttl=60) == "claimed"  # a holder may re-claim its own lease
            sleeper.kill()
            sleeper.wait()
            assert st.claim("sw", "h1", b, ttl=60) == "claimed"  # a's pid is gone: taken over at once, not after 60 s
            assert st.leases().holder.tolist() == [b.id]
            assert st.record("sw", "h1", {"x": 1}, {"y": 1}, holder=b) and st.leases().empty  # recording drops the lease
            assert st.claim("sw", "h1", a, ttl=60) == "done"
            assert not st.record("sw", "h1", {"x": 1}, {"y": 99}, holder=a)  # a stored result is never overwritten by a second one
            assert st.load().y.tolist() == [1]
    finally:
        sleeper.kill()


def test_leases_on_other_nodes_expire_and_failed_points_retry_only_if_older(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as st:
        far, me = _me(pid=1, node="other-node"), _me()
        assert st.claim("sw", "h1", far, ttl=60) == "claimed"
        assert st.claim("sw", "h1", me, ttl=60) == "busy"  # pid 1 means nothing on another node: wait for its expiry
        assert st.claim("sw", "h2", far, ttl=0.05) == "claimed"
        time.sleep(0.1)
        assert st.claim("sw", "h2", me, ttl=60) == "claimed"  # expired
        assert st.renew(far, 60) == 1 and st.renew(me, 60) == 1
        st.record("sw", "h3", {"x": 3}, None, error="ValueError: no")
        t = time.time()
        assert st.claim("sw", "h3", me, ttl=60) == "done"  # failed: final unless retrying
        assert st.claim("sw", "h3", me, ttl=60, retry_before=t) == "claimed"  # failed before this run: retried
        st.record("sw", "h3", {"x": 3}, None, error="ValueError: again", holder=me)
        assert st.claim("sw", "h3", me, ttl=60, retry_before=t) == "done"  # failed during this run: final for it
        st.release(me)
        assert st.leases().holder.tolist() == [far.id]


_V2 = ("CREATE TABLE points (hash TEXT PRIMARY KEY, sweep TEXT NOT NULL, params TEXT NOT NULL, metrics TEXT, error TEXT, "
       "seconds REAL, host TEXT, finished REAL NOT NULL, seed INTEGER, version TEXT)")


def _v2_store(path) -> None:
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA application_id={0x4C6F5241}")
        c.execute("PRAGMA user_version=2")
        c.execute(_V2)
        c.execute("INSERT INTO points VALUES ('h1', 'sw', '{\"x\": 1}', '{\"y\": 2}', NULL, 0.5, 'host', 1.0, 0, '0.1.0')")


def test_v2_store_is_read_as_is_and_upgraded_to_v3_by_a_writable_open(tmp_path):
    store = tmp_path / "v2.sqlite"
    _v2_store(store)
    before = store.read_bytes()
    with ResultStore(store, readonly=True) as ro:
        assert ro.load().y.tolist() == [2] and ro.leases().empty and ro.sweeps().running.tolist() == [0]
    assert store.read_bytes() == before  # reading changed nothing
    with ResultStore(store) as st:
        assert st.conn.execute("PRAGMA user_version").fetchone()[0] == 3
        df = st.load()
        assert df.y.tolist() == [2] and df._attempts.isna().all()  # the old row is intact
        assert st.claim("sw", "h2", _me(), ttl=60) == "claimed"


_OPEN = """
import sys, time
from lora_theory.sweeps import ResultStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all four open at the same instant
with ResultStore(sys.argv[1]) as st:
    print(st.conn.execute("PRAGMA user_version").fetchone()[0], len(st.load()))
"""


def test_concurrent_upgrades_of_a_v2_store_upgrade_it_once(tmp_path):
    """Four processes open one v2 store at the same instant: all succeed, the schema is v3 with one attempts column."""
    store = tmp_path / "v2.sqlite"
    _v2_store(store)
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(store), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert {o.strip() for o, _ in outs} == {"3 1"}
    with sqlite3.connect(store) as c:
        cols = [r[1] for r in c.execute("PRAGMA table_info(points)")]
        assert cols.count("attempts") == 1 and c.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def test_read_only_store_is_reported_as_read_only(tmp_path, monkeypatch):
    """A store that cannot be written: "expected a writable store" (was: "not a readable SQLite store").

    As root every file is writable, so the permission check is also exercised with os.access patched."""
    import os

    store = tmp_path / "ro.sqlite"
    run_sweep(sleepy_square, grid(x=[1.0]), store, name="sq", progress=False)
    if os.geteuid() != 0:
        store.chmod(0o444)
        with pytest.raises(StoreError, match="expected a writable store, got the read-only file"):
            ResultStore(store)
        store.chmod(0o644)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(store) and mode & os.W_OK else real(p, mode, **k))
    with pytest.raises(StoreError, match="expected a writable store, got the read-only file"):
        run_sweep(sleepy_square, grid(x=[2.0]), store, name="sq", progress=False)
    with ResultStore(store, readonly=True) as ro:
        assert len(ro.load()) == 1  # reading still works
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(tmp_path) and mode & os.W_OK else real(p, mode, **k))
    with pytest.raises(StoreError, match="expected a store in a writable folder"):
        ResultStore(store)


def test_export_refuses_unknown_sweeps_and_files_it_did_not_write(tmp_path):
    """`sweep export --sweep nosuch` was an empty file and exit 0; an existing user file was overwritten."""
    store = tmp_path / "e.sqlite"
    run_sweep(sleepy_square, grid(x=[1.0, 2.0]), store, name="sq", progress=False)
    with ResultStore(store) as st:
        with pytest.raises(ValueError, match=r"sweep: expected one of the store's sweeps \['sq'\], got 'nosuch'"):
            st.export(tmp_path / "n.csv", "nosuch")
        assert not (tmp_path / "n.csv").exists()
        mine = tmp_path / "mine.csv"
        mine.write_text("a,b\n1,2\n")
        with pytest.raises(ValueError, match="pass --force to overwrite it"):
            st.export(mine, "sq")
        assert mine.read_text() == "a,b\n1,2\n"
        st.export(mine, "sq", force=True)
        assert len(pd.read_csv(mine)) == 2
        out = st.export(tmp_path / "ours.csv", "sq")
        st.record("sq", "hx", {"x": 3.0}, {"y": 9.0})
        st.export(out, "sq")  # ours and unchanged since: overwritten without --force
        assert len(pd.read_csv(out)) == 3
        out.write_text(out.read_text() + "edited\n")
        with pytest.raises(ValueError, match="changed since"):
            st.export(out, "sq")
    with ResultStore(tmp_path / "empty.sqlite") as st, pytest.raises(ValueError, match="expected stored points to export"):
        st.export(tmp_path / "empty.csv")
