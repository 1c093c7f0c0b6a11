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
        first = st.load("claims-quick")._finished.tolist()
    df, _ = reproduce(tmp_path, quick=True, claims=["limits.lemma3.2", "limits.lemma3.1"], figures=[])
    with ResultStore(tmp_path / "store.sqlite") as st:
        stored = st.load("claims-quick")
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
    # no names: every figure whose table the store holds (a quick reproduce stores no fine-tuning tables), and only those
    res = CliRunner().invoke(app, ["figures", "--from", str(tmp_path / "store.sqlite"), "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir() if not p.name.startswith(".")) == ["degree_vs_range.csv", "degree_vs_range.png"]


def test_exit_status_orders_error_over_fails_and_inconclusive_is_not_a_failure():
    """The exit status of check and reproduce: 3 errored (a crashed check or a failed figure), else 1 fails, else 0."""
    import pandas as pd

    from lora_theory.report import exit_status

    def table(*verdicts):
        return pd.DataFrame({"verdict": list(verdicts)})

    assert exit_status(table("holds", "holds")) == 0
    assert exit_status(table("holds", "inconclusive")) == 0  # undecided is reported, not a failure
    assert exit_status(table("holds", "fails", "inconclusive")) == 1
    assert exit_status(table("fails", "error")) == 3
    assert exit_status(table("holds"), {"degree_vs_range": "RuntimeError: x"}) == 3


def test_exit_status_findings_are_not_failures_unless_strict():
    """reproduce's rule (strict=False): 0 when the toolkit's promises held, whatever the papers' and audits' claims say;
    1 when a toolkit.* claim does not hold or a control was not caught; 3 when something errored. strict=True (check
    --claim, reproduce --strict) also exits 1 for a failing paper or audit claim.

    Fails if an audit's "fails" (a finding by design) makes the main job exit 1 again, or if a broken promise of the
    toolkit (a control that was not caught) is let through."""
    import pandas as pd

    from lora_theory.report import broken_promises, exit_status, findings

    def table(**verdicts):
        return pd.DataFrame({"id": list(verdicts), "verdict": list(verdicts.values())}).rename(columns={})

    t = pd.DataFrame({"id": ["limits.a", "audit.b", "toolkit.c"], "verdict": ["holds", "fails", "holds"]})
    caught = pd.DataFrame({"id": ["toolkit.c"], "control": ["x"], "caught": [True]})
    assert findings(t) == ["audit.b"] and broken_promises(t, caught) == []
    assert exit_status(t, controls=caught, strict=False) == 0
    assert exit_status(t, controls=caught, strict=True) == 1
    missed = caught.assign(caught=[False])
    assert broken_promises(t, missed) == ["toolkit.c/x (not caught)"] and exit_status(t, controls=missed, strict=False) == 1
    for v in ("fails", "inconclusive"):  # a toolkit promise that was not shown to hold
        t2 = t.assign(verdict=["holds", "holds", v])
        assert exit_status(t2, strict=False) == 1 and broken_promises(t2) == [f"toolkit.c ({v})"]
    assert exit_status(t.assign(verdict=["error", "fails", "holds"]), strict=False) == 3
    assert exit_status(t.assign(verdict=["inconclusive", "holds", "holds"]), strict=True) == 0


def test_report_header_totals_the_work_behind_it(tmp_path):
    """The header gives the compute summed over the stored points (checks, controls, figure tables) and this
    invocation's wall time, each labelled (was: only the last invocation's "10 s" after a resume)."""
    import pandas as pd

    from lora_theory.report import write_report

    results = pd.DataFrame([{"id": "limits.x", "paper": "limits", "kind": "paper", "statement": "S", "verdict": "holds", "summary": "m",
                             "figures": {}, "margins": {}, "figure": None, "test": None, "proof": None, "seconds": 100.0, "error": None}])
    controls = pd.DataFrame([{"id": "limits.x", "control": "a", "description": "d", "expect": "fails", "verdict": "fails", "summary": "",
                              "seconds": 50.0, "caught": True}])
    figures = {"f": {"png": "f.png", "description": "F", "claims": ("limits.x",), "seconds": 30.0}}
    text = write_report(results, figures, tmp_path, mode="quick", seconds=10.0, controls=controls).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("Time: "))
    assert "the work behind this report 3 min 00 s (each stored point's own seconds" in line and "1 claim checks, 1 controls, 1 figure tables" in line
    assert "this invocation 10 s wall" in line
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["work_seconds"] == 180.0 and payload["seconds"] == 10.0 and payload["exit_status"] == 0


def test_results_json_is_strict_with_nonfinite_figures(tmp_path):
    """A non-finite measured figure is null in results.json, with its path under "nonfinite" (pandas wrote a bare null,
    and json.dumps would have written NaN)."""
    import math

    import pandas as pd

    from lora_theory.report import write_report

    row = {"id": "limits.x", "paper": "limits", "kind": "paper", "statement": "s", "reference": "r", "verdict": "fails", "summary": "m",
           "figures": {"ratio": math.inf, "err": math.nan, "ok": 1.5}, "margins": {}, "figure": None, "test": None, "proof": None,
           "seconds": 0.1, "error": None}
    write_report(pd.DataFrame([row]), {}, tmp_path, mode="quick", seconds=1.0)
    text = (tmp_path / "results.json").read_text()
    payload = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert payload["claims"][0]["figures"] == {"ratio": None, "err": None, "ok": 1.5}
    assert payload["nonfinite"] == {"claims[0].figures.ratio": "inf", "claims[0].figures.err": "nan"}


def test_report_sections_by_kind_with_margins_and_controls(tmp_path):
    """report.md: one section per kind, each claim's margins and "controls caught: k of n", and the controls table.

    Fails if a kind's claims land in another section, if the controls column counts the wrong rows, or if a
    control that was not caught is not named.
    """
    import pandas as pd

    from lora_theory.report import write_report

    results = pd.DataFrame([
        {"id": "limits.x", "paper": "limits", "kind": "paper", "statement": "S1", "verdict": "holds", "summary": "m1", "figures": {},
         "margins": {"err": "1e-15 <= 1e-10 (slack +100%)"}, "figure": None, "test": None, "proof": None, "error": None},
        {"id": "toolkit.y", "paper": "toolkit", "kind": "toolkit", "statement": "S2", "verdict": "inconclusive", "summary": "m2", "figures": {},
         "margins": {}, "figure": None, "test": None, "proof": None, "error": None},
        {"id": "audit.z", "paper": "audit", "kind": "audit", "statement": "S3", "verdict": "fails", "summary": "m3", "figures": {},
         "margins": {}, "figure": None, "test": None, "proof": None, "error": None},
    ])
    controls = pd.DataFrame([
        {"id": "limits.x", "control": "a", "description": "d1", "expect": "fails", "verdict": "fails", "summary": "", "caught": True},
        {"id": "limits.x", "control": "b", "description": "d2", "expect": "fails", "verdict": "holds", "summary": "", "caught": False},
        {"id": "audit.z", "control": "c", "description": "d3", "expect": "holds", "verdict": "holds", "summary": "", "caught": True},
    ])
    text = write_report(results, {}, tmp_path, mode="quick", seconds=1.0, controls=controls).read_text()
    sections = text.split("\n## ")
    paper = next(s for s in sections if s.startswith("Claims of the papers"))
    toolkit = next(s for s in sections if s.startswith("The toolkit's own guarantees"))
    audit = next(s for s in sections if s.startswith("Audits of third-party code"))
    assert "`limits.x`" in paper and "`toolkit.y`" not in paper and "`toolkit.y`" in toolkit and "`audit.z`" in audit
    assert "err: 1e-15 <= 1e-10 (slack +100%)" in paper
    assert "1 of 2 (not caught: `b`)" in paper and "1 of 1" in audit and "| none |" in toolkit
    assert "negative controls caught: 2 of 3 (not caught: limits.x/b)" in text
    assert "inconclusive: toolkit.y" in text and "findings (claims of the papers or audits that fail): audit.z" in text
    summary = next(ln for ln in text.splitlines() if "claims hold" in ln)  # one line: no stray break before the controls
    assert "negative controls caught: 2 of 3" in summary and summary.endswith(".")
    assert "Exit status 1: a promise of the toolkit itself is broken: toolkit.y (inconclusive), limits.x/b (not caught)." in text
    assert "| `limits.x` | `b` | d2 | holds | **no** |" in text
    payload = json.loads((tmp_path / "results.json").read_text())
    assert len(payload["controls"]) == 3 and payload["controls"][1]["caught"] is False


def test_select_skips_the_fine_tuning_experiment_unless_asked():
    """Quick defaults leave out exactly the claims and figures marked experiment, and name them; named ones always run.

    Fails if a fine-tuning claim runs by default (reproduce would take tens of minutes), if a skipped one is not
    reported, or if an explicitly named experiment claim is dropped.
    """
    from lora_theory.claims import all_claims
    from lora_theory.report import select
    from lora_theory.studies import all_figures

    exp_claims = {c.id for c in all_claims() if c.experiment}
    exp_figs = {s.name for s in all_figures() if s.experiment}
    assert "lora_ga.speedup" in exp_claims and "lora_plus.best_ratio" in exp_claims and "finetune_steps" in exp_figs
    assert "limits.thm3.1" not in exp_claims and "regime_real_heads" not in exp_figs
    ids, figs, skipped = select(None, None, experiments=False)
    assert set(ids) == {c.id for c in all_claims()} - exp_claims and set(skipped["claims"]) == exp_claims
    assert set(figs) == {s.name for s in all_figures()} - exp_figs and set(skipped["figures"]) == exp_figs
    ids, figs, skipped = select(None, None, experiments=True)
    assert set(ids) == {c.id for c in all_claims()} and figs is None and not any(skipped.values())
    ids, figs, skipped = select(["lora_ga.speedup"], ["finetune_steps"], experiments=False)
    assert ids == ["lora_ga.speedup"] and figs == ["finetune_steps"] and not any(skipped.values())


def test_report_names_what_was_not_run(tmp_path):
    import pandas as pd

    from lora_theory.report import write_report

    row = {"id": "limits.x", "paper": "limits", "kind": "paper", "statement": "s", "reference": "r", "verdict": "holds", "summary": "m",
           "figures": {}, "margins": {}, "figure": None, "test": None, "proof": None, "seconds": 0.1, "error": None}
    text = write_report(pd.DataFrame([row]), {}, tmp_path, mode="quick", seconds=1.0,
                        skipped={"claims": ["lora_ga.speedup"], "figures": ["finetune_steps"]}).read_text()
    assert "Not run in this mode" in text and "`lora_ga.speedup`" in text and "`finetune_steps`" in text and "--experiments" in text
    assert json.loads((tmp_path / "results.json").read_text())["skipped"] == {"claims": ["lora_ga.speedup"], "figures": ["finetune_steps"]}
