"""lora-theory reproduce end to end in a tiny configuration: report.md and results.json."""
from __future__ import annotations

import json

from lora_theory.report import reproduce


def test_reproduce_writes_report(tmp_path):
    df, report = reproduce(tmp_path, quick=True, claims=["limits.lemma3.1", "limits.lemma3.2"], figures=["limits_grad_closed_form"])
    assert list(df.verdict) == ["holds", "holds"]
    text = report.read_text()
    assert "| `limits.lemma3.1` |" in text and "**holds**" in text
    assert "proofs_checks/limits_lemma31.py::check_lemma31_score_gradient" in text
    assert "![limits_grad_closed_form](figures/limits_grad_closed_form.png)" in text
    assert (tmp_path / "figures" / "limits_grad_closed_form.png").exists()
    payload = json.loads((tmp_path / "results.json").read_text())
    assert {c["id"] for c in payload["claims"]} == {"limits.lemma3.1", "limits.lemma3.2"}


def test_reproduce_resumes_from_its_store(tmp_path):
    from lora_theory.sweeps import ResultStore

    reproduce(tmp_path, quick=True, claims=["limits.lemma3.2"], figures=[])
    with ResultStore(tmp_path / "store.sqlite") as st:
        first = st.load()._finished.tolist()
    df, _ = reproduce(tmp_path, quick=True, claims=["limits.lemma3.2", "limits.lemma3.1"], figures=[])
    with ResultStore(tmp_path / "store.sqlite") as st:
        stored = st.load()
    assert len(stored) == 2 and stored._finished.iloc[0] == first[0]  # the finished check was not redone
    assert list(df.verdict) == ["holds", "holds"]


def test_figures_go_through_the_store_and_redraw_from_it(tmp_path):
    from typer.testing import CliRunner

    from lora_theory.cli import app
    from lora_theory.sweeps import ResultStore

    reproduce(tmp_path, quick=True, claims=["limits.lemma3.2"], figures=["degree_vs_range"])
    with ResultStore(tmp_path / "store.sqlite") as st:
        figs = st.load("figures-quick")
    assert list(figs.figure) == ["degree_vs_range"] and figs._error.isna().all()
    res = CliRunner().invoke(app, ["figures", "degree_vs_range", "--from", str(tmp_path / "store.sqlite"), "--out", str(tmp_path / "redrawn")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "redrawn" / "degree_vs_range.png").stat().st_size > 1000
    res = CliRunner().invoke(app, ["figures", "phase_transition", "--from", str(tmp_path / "store.sqlite"), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "phase_transition" in res.output
