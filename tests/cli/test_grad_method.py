"""`lora-theory grad --method exact|approx|auto` and its plan (issue 15; claim limits.thm3.1)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from lora_theory.cli import app

runner = CliRunner()


def _grad(*args: str):
    return runner.invoke(app, ["grad", "--L", "128", "--d", "4", "--r", "2", "--adapt", "qkv", "--bound", "1.5", "--beta", "0.25", "--json", *args])


def test_approx_reports_its_bound_and_matches_autograd():
    res = _grad("--method", "approx", "--eps", "1e-6")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["method"] == "approx" and out["plan"]["certifiable"] and out["k"] == out["plan"]["k"]
    assert set(out["error_bound"]) == set(out["max_rel_err"]) and max(out["max_rel_err"].values()) < 1e-4


def test_auto_picks_the_predicted_faster_certifiable_method():
    out = json.loads(_grad("--method", "auto").output)
    plan = out["plan"]
    faster = "approx" if plan["certifiable"] and plan["approx_seconds_predicted"] < plan["exact_seconds_predicted"] else "exact"
    assert out["method"] == faster
    out = json.loads(runner.invoke(app, ["grad", "--L", "64", "--d", "12", "--bound", "3", "--method", "auto", "--json", "--no-autograd"]).output)
    assert out["method"] == "exact" and not out["plan"]["certifiable"]  # approx cannot certify there: auto never picks it


def test_plan_printed_before_a_long_run_and_refusals_are_usage_errors():
    res = runner.invoke(app, ["grad", "--L", "64", "--d", "4", "--method", "auto", "--no-autograd"])
    assert res.exit_code == 0 and "plan:" in res.output and "k = " in res.output  # --method auto always says what it chose and why
    res = runner.invoke(app, ["grad", "--L", "64", "--d", "16", "--bound", "2", "--method", "approx", "--no-autograd"])
    assert res.exit_code != 0 and "C(" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["grad", "--method", "fast"])
    assert res.exit_code != 0 and "method" in res.output
