"""Tests for the lora-theory command line."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from lora_theory.cli import app

runner = CliRunner()


def test_info_json():
    res = runner.invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.output
    facts = json.loads(res.output)
    assert {"torch", "torch_threads", "cuda_available"} <= set(facts)


def test_grad_json():
    res = runner.invoke(app, ["grad", "--L", "64", "--d", "4", "--r", "2", "--adapt", "qkv", "--bound", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert abs(out["norms"]["Gamma"] - 2.0) < 1e-12
    assert max(out["max_rel_err"].values()) < 1e-10
    assert set(out["max_rel_err"]) == {"A_q", "B_q", "A_k", "B_k", "A_v", "B_v"}


def test_grad_bad_input_names_argument():
    res = runner.invoke(app, ["grad", "--L", "8", "--d", "4", "--r", "9"])
    assert res.exit_code != 0
    assert "r: expected an integer <= 4, got 9" in res.output


def test_check_one_claim_json():
    res = runner.invoke(app, ["check", "--claim", "limits.lemma3.2", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[0]["id"] == "limits.lemma3.2" and rows[0]["verdict"] == "holds"


def test_check_unknown_claim():
    res = runner.invoke(app, ["check", "--claim", "limits.nope"])
    assert res.exit_code != 0 and "limits.nope" in res.output


def test_figures_list_and_render(tmp_path):
    res = runner.invoke(app, ["figures", "--list"])
    assert res.exit_code == 0 and "limits_grad_closed_form" in res.output
    res = runner.invoke(app, ["figures", "limits_grad_closed_form", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "limits_grad_closed_form.png").stat().st_size > 1000
    res = runner.invoke(app, ["figures", "limits_grad_closed_form", "--out", str(tmp_path / "redraw"), "--from", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "redraw" / "limits_grad_closed_form.png").exists()


def test_sweep_norms_resumes(tmp_path):
    """sweep norms is an engine sweep: points are committed to --store and skipped on a re-run; --out exports."""
    out, store = tmp_path / "norms.csv", tmp_path / "norms.sqlite"
    args = ["sweep", "norms", "--L", "32", "--gamma", "0.5", "--gamma", "3", "--kind", "hard", "--store", str(store)]
    res = runner.invoke(app, args + ["--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "'done': 2" in res.output and len(out.read_text().strip().splitlines()) == 3  # header + 2 points
    res = runner.invoke(app, args + ["--gamma", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "'skipped': 2" in res.output and "'done': 1" in res.output  # only the new point was run
    assert len(out.read_text().strip().splitlines()) == 4
    res = runner.invoke(app, ["sweep", "norms", "--kind", "easy", "--store", str(store)])
    assert res.exit_code != 0 and "easy" in res.output


def test_sweep_run_status_export(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0, 2.0, -1.0]\n')
    store = tmp_path / "s.sqlite"
    res = runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"])
    assert res.exit_code == 0, res.output
    assert "'done': 2" in res.output and "'failed': 1" in res.output
    res = runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"])
    assert "'skipped': 3" in res.output
    res = runner.invoke(app, ["sweep", "status", str(store)])
    assert res.exit_code == 0 and "sq" in res.output
    res = runner.invoke(app, ["sweep", "export", str(store), str(tmp_path / "out.csv")])
    assert res.exit_code == 0 and (tmp_path / "out.csv").exists()
    res = runner.invoke(app, ["sweep", "status", str(tmp_path / "missing.sqlite")])
    assert res.exit_code != 0 and "missing" in res.output
