"""lora_theory.sweeps.executors: what one point returns, RNG isolation, the process pool and Dask
(a LocalCluster over loopback gives the same stored results as the local pool), and the pool's
faults: a worker killed mid-point, a point that always kills its worker, a hung point."""
from __future__ import annotations

import os
import random
import time

import numpy as np
import pandas as pd
import pytest
import torch

from lora_theory.sweeps import ResultStore, grid, make_executor, run_sweep
from lora_theory.sweeps.executors import InProcessExecutor, call_point, point_seed
from tests.sweeps.probes import dies_first, hangs, noisy_mean, sleepy_square


def _numpy_metrics(n: int) -> dict:
    return {"i": np.int64(n), "f": np.float32(0.5), "t": torch.tensor(2.0), "v": torch.arange(n), "ok": np.bool_(True)}


def test_metrics_are_converted_to_json_values():
    out = call_point(_numpy_metrics, {"n": 3}, "k", None)
    assert out.error is None and out.metrics == {"i": 3, "f": 0.5, "t": 2.0, "v": [0, 1, 2], "ok": True}
    assert type(out.metrics["i"]) is int and type(out.metrics["f"]) is float


@pytest.mark.parametrize(("fn", "match"), [
    (lambda: [1, 2], "expected a dict of metrics, got list"),
    (lambda: {"x": object()}, "expected JSON-serializable metric values"),
    (lambda: 1 / 0, "ZeroDivisionError"),
])
def test_bad_points_become_recorded_errors(fn, match):
    out = call_point(fn, {}, "k", None)
    assert out.metrics is None and match in out.error and out.seconds >= 0


def test_seeding_is_per_point_and_restores_the_callers_rngs(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    expect = (torch.rand(1).item(), random.random(), np.random.rand())
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    a = call_point(noisy_mean, {"n": 4}, "key-a", 0, restore=True)
    run_sweep(noisy_mean, grid(n=[2, 3]), tmp_path / "s.sqlite", name="noise", executor="inprocess", progress=False)
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == expect  # the caller's streams are untouched
    b, c = call_point(noisy_mean, {"n": 4}, "key-a", 0), call_point(noisy_mean, {"n": 4}, "key-b", 0)
    assert b.metrics == a.metrics and c.metrics != a.metrics
    assert 0 <= point_seed(0, "x") < 2**63 and point_seed(0, "x") != point_seed(1, "x")


def test_make_executor():
    assert isinstance(make_executor("inprocess"), InProcessExecutor)
    for bad in ("spark", "dask://nohost", "dask://:80", 3):
        with pytest.raises(ValueError, match="executor: expected"):
            make_executor(bad)
    with pytest.raises(ValueError, match="jobs"):
        make_executor("process", jobs=-1)


def test_process_pool_equals_inprocess(tmp_path):
    pts = grid(x=[0.5, 1.5, -1.0, 3.5, 4.5])
    run_sweep(sleepy_square, pts, tmp_path / "a.sqlite", name="sq", executor="inprocess", progress=False)
    run_sweep(sleepy_square, pts, tmp_path / "b.sqlite", name="sq", jobs=2, executor="process", progress=False)
    with ResultStore(tmp_path / "a.sqlite") as a, ResultStore(tmp_path / "b.sqlite") as b:
        da, db = a.load().sort_values("x"), b.load().sort_values("x")
    assert da.y.fillna(-1).tolist() == db.y.fillna(-1).tolist() == [-1, 0.25, 2.25, 12.25, 20.25]
    assert da._hash.tolist() == db._hash.tolist() and db._error.notna().sum() == 1


def test_dask_local_cluster_equals_process_pool(tmp_path):
    pytest.importorskip("distributed")
    pts = grid(n=[2, 7], scale=[1.0, -1.0]) + [{"n": -1, "scale": 1.0}]  # n = -1: torch raises, a recorded failure
    counts = run_sweep(noisy_mean, pts, tmp_path / "d.sqlite", name="noise", jobs=1, executor="dask-local", progress=False)
    assert counts == {"total": 5, "skipped": 0, "done": 4, "failed": 1}
    run_sweep(noisy_mean, pts, tmp_path / "p.sqlite", name="noise", jobs=2, executor="process", progress=False)
    with ResultStore(tmp_path / "d.sqlite") as d, ResultStore(tmp_path / "p.sqlite") as p:
        dd, pp = (s.load().sort_values(["n", "scale"]).reset_index(drop=True) for s in (d, p))
    pd.testing.assert_frame_equal(dd[["n", "scale", "mean", "first", "_hash"]], pp[["n", "scale", "mean", "first", "_hash"]])
    assert dd._error.notna().sum() == 1 and set(dd._host) == set(pp._host)  # workers on this host; only the coordinator wrote


def _children() -> set[int]:
    """Live child processes of this one (pids; e.g. Dask's resource tracker from an earlier test is one)."""
    psutil = pytest.importorskip("psutil")
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_a_worker_killed_mid_point_is_replaced_and_the_point_retried(tmp_path):
    """Each of x = 1, 2 kills its worker with SIGKILL once: the pool is rebuilt, both are retried and finish.

    Fails on the concurrent.futures pool (before the fault-tolerant pool): one dead worker raised
    BrokenProcessPool and ended the whole sweep."""
    before = _children()
    marks = tmp_path / "marks"
    marks.mkdir()
    pts = [{"x": 1.0, "deaths": 1, "marker_dir": str(marks)}, {"x": 2.0, "deaths": 1, "marker_dir": str(marks)}] + \
          [{"x": float(x), "deaths": 0, "marker_dir": str(marks)} for x in range(3, 7)]
    counts = run_sweep(dies_first, pts, tmp_path / "s.sqlite", name="d", jobs=2, executor="process", progress=False)
    assert counts == {"total": 6, "skipped": 0, "done": 6, "failed": 0, "retries": 2}
    with ResultStore(tmp_path / "s.sqlite") as st:
        df = st.load().set_index("x")
    assert df._error.isna().all() and (df.y == df.index**2).all()
    assert df.loc[[1.0, 2.0], "_attempts"].tolist() == [2, 2] and (df.drop([1.0, 2.0])._attempts == 1).all()
    assert _children() <= before  # the replaced and the finished workers are all gone


def test_a_point_that_always_kills_its_worker_is_stored_failed_with_the_cause(tmp_path):
    """max_retries=2: three attempts, then "worker died: killed by SIGKILL" is the stored error; the sweep goes on."""
    marks = tmp_path / "marks"
    marks.mkdir()
    pts = [{"x": -5.0, "deaths": 99, "marker_dir": str(marks)}] + [{"x": float(x), "deaths": 0, "marker_dir": str(marks)} for x in range(4)]
    counts = run_sweep(dies_first, pts, tmp_path / "s.sqlite", name="d", jobs=2, executor="process", progress=False, max_retries=2)
    assert counts == {"total": 5, "skipped": 0, "done": 4, "failed": 1, "retries": 2}
    with ResultStore(tmp_path / "s.sqlite") as st:
        df = st.load().set_index("x")
    err = df.loc[-5.0, "_error"]
    assert err.startswith("worker died: killed by SIGKILL") and "3 attempts (max_retries=2)" in err and df.loc[-5.0, "_attempts"] == 3
    assert len(os.listdir(marks)) == 3  # exactly 1 + max_retries runs of the deadly point
    counts = run_sweep(dies_first, pts, tmp_path / "s.sqlite", name="d", jobs=1, executor="process", progress=False, max_retries=0)
    assert counts["skipped"] == 5  # a failed point is final until retry_failed


def test_a_hung_point_times_out_and_its_worker_is_killed(tmp_path):
    """point_timeout=1: the hung point is stored failed with "timeout", the others finish, and no worker is left.

    Fails before this change: run_sweep had no point_timeout (a hung point held the sweep forever)."""
    before = _children()
    pts = grid(x=[-1.0, 1.0, 2.0, 3.0])
    t0 = time.monotonic()
    counts = run_sweep(hangs, pts, tmp_path / "s.sqlite", name="h", jobs=2, executor="process", progress=False, point_timeout=1.0)
    assert time.monotonic() - t0 < 20
    assert counts == {"total": 4, "skipped": 0, "done": 3, "failed": 1}
    with ResultStore(tmp_path / "s.sqlite") as st:
        df = st.load().set_index("x")
    assert df.loc[-1.0, "_error"].startswith("timeout: the point ran longer than point_timeout = 1 s")
    assert df.drop(-1.0)._error.isna().all()
    assert _children() <= before


def test_point_timeout_needs_the_process_executor(tmp_path):
    for ex in ("inprocess", "dask-local"):
        with pytest.raises(ValueError, match="point_timeout: needs the 'process' executor"):
            run_sweep(hangs, grid(x=[1.0]), tmp_path / "s.sqlite", name="h", executor=ex, point_timeout=1.0)
    assert run_sweep(hangs, grid(x=[1.0]), tmp_path / "s.sqlite", name="h", point_timeout=5.0, progress=False)["done"] == 1  # picks "process"
    with pytest.raises(ValueError, match="max_retries: expected an integer >= 0"):
        run_sweep(hangs, grid(x=[1.0]), tmp_path / "s.sqlite", name="h", max_retries=-1)
