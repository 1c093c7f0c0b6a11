"""lora_theory.sweeps.executors: what one point returns, RNG isolation, the process pool and Dask
(a LocalCluster over loopback gives the same stored results as the local pool)."""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from lora_theory.sweeps import ResultStore, grid, make_executor, run_sweep
from lora_theory.sweeps.executors import InProcessExecutor, call_point, point_seed
from tests.sweeps.probes import noisy_mean, sleepy_square


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
