"""`lora-theory reproduce` through the sweep engine, in a tiny configuration that CI always runs:
the CLI end to end with a process pool, a resume after a real kill -9, SIGTERM, and bad arguments."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
from typer.testing import CliRunner

from lora_theory.cli import app
from lora_theory.sweeps import ResultStore

_CHEAP = ["limits.rank_count", "limits.degree_bound"]


def _flags(flag: str, values: list[str]) -> list[str]:
    return [x for v in values for x in (flag, v)]


def _stored(out) -> pd.DataFrame:
    with ResultStore(out / "store.sqlite") as st:
        return st.load()


def test_cli_reproduce_with_a_process_pool_then_resume(tmp_path):
    args = ["reproduce", "--quick", "--out", str(tmp_path), "--jobs", "2", "--executor", "process",
            *_flags("--claim", _CHEAP), "--figure", "degree_vs_range"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = (tmp_path / "report.md").read_text()
    assert all(f"`{c}`" in report for c in _CHEAP) and "figures/degree_vs_range.png" in report
    first = _stored(tmp_path)
    assert sorted(first._sweep[first._sweep != "controls-quick"]) == ["claims-quick", "claims-quick", "figures-quick"] and first._error.isna().all()
    assert (first._sweep == "controls-quick").sum() == 6  # the negative controls of both claims ran through the engine too
    assert set(first[first._sweep == "claims-quick"].verdict) == {"holds"}
    res = CliRunner().invoke(app, args)  # a re-run resumes: nothing is recomputed
    assert res.exit_code == 0, res.output
    again = _stored(tmp_path)
    assert again._finished.tolist() == first._finished.tolist() and again._hash.tolist() == first._hash.tolist()


def test_cli_reproduce_rejects_bad_arguments(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--executor", "spark"])
    assert res.exit_code != 0 and "dask://HOST:PORT" in res.output
    res = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--claim", "no.such.claim"])
    assert res.exit_code != 0 and "no.such.claim" in res.output
    res = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--claim", _CHEAP[0], "--figure", "no_such_figure"])
    assert res.exit_code != 0 and "no_such_figure" in res.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "store.sqlite") as c:
        c.execute("CREATE TABLE mine (a)")
    res = runner.invoke(app, ["reproduce", "--out", str(foreign), "--claim", _CHEAP[0], "--figure", "degree_vs_range"])
    assert res.exit_code != 0 and "not a lora-theory results store" in res.output


_SCRIPT = """
import sys
from lora_theory.report import reproduce
reproduce(sys.argv[1], quick=True, claims=sys.argv[2].split(","), figures=[])
"""


def _wait_for_claims(store, n: int, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.05)
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as c:
                if c.execute("SELECT COUNT(*) FROM points").fetchone()[0] >= n:
                    return
        except sqlite3.Error:
            continue
    raise AssertionError(f"no {n} stored checks after {timeout} s")


def test_reproduce_killed_mid_run_resumes_without_redoing_checks(tmp_path):
    claims = ["limits.rank_count", "limits.lemma3.1", "limits.degree_bound"]  # the middle one takes ~1 s: the kill lands in it
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(tmp_path), ",".join(claims)])
    _wait_for_claims(tmp_path / "store.sqlite", 1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _stored(tmp_path)
    assert 1 <= len(before) < 3 and before.claim.iloc[0] == "limits.rank_count"
    res = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path), *_flags("--claim", claims), "--figure", "degree_vs_range"])
    assert res.exit_code == 0, res.output
    after = _stored(tmp_path)
    checks = after[after._sweep == "claims-quick"]
    assert sorted(checks.claim) == sorted(claims) and checks._hash.is_unique and set(checks.verdict) == {"holds"}
    kept = after.set_index("_hash").loc[before._hash, "_finished"]
    assert kept.tolist() == before._finished.tolist()  # the checks finished before the kill were not redone


def test_reproduce_sigterm_exits_130_and_keeps_finished_checks(tmp_path):
    claims = ["limits.rank_count", "limits.lemma3.1", "limits.degree_bound"]
    proc = subprocess.Popen([sys.executable, "-m", "lora_theory", "reproduce", "--out", str(tmp_path), *_flags("--claim", claims),
                             "--figure", "degree_vs_range"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_claims(tmp_path / "store.sqlite", 1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    out = " ".join(out.split())  # rich wraps lines at the terminal width
    assert proc.returncode == 130 and "run the same command again to resume" in out and "Traceback" not in out
    assert 1 <= len(_stored(tmp_path)) <= 3
