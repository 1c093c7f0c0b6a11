"""Tests for the claim registry (lora_theory.claims): ids by kind, verdicts, margins, controls, and the foundation's checks."""
from __future__ import annotations

import pytest

import lora_theory as lt
from lora_theory.claims import Measurement, claim, run_check


def test_registry_has_foundation_claims():
    ids = {c.id for c in lt.all_claims()}
    assert {"limits.lemma3.1", "limits.lemma3.2", "limits.grad_closed_form", "toolkit.grad_blocked", "limits.remark4.2", "limits.threshold"} <= ids
    for c in lt.all_claims():
        assert c.paper in {"limits", "lora_ga", "lora_plus", "toolkit", "audit"} and c.statement and c.reference
        assert c.kind == {"toolkit": "toolkit", "audit": "audit"}.get(c.paper, "paper")


def test_ids_by_kind():
    """Toolkit guarantees and third-party audits are not filed under a paper's id (issue 12)."""
    ids = {c.id for c in lt.all_claims()}
    for moved in ("grad_blocked", "poly_vs_random_features", "sign_invariance"):
        assert f"toolkit.{moved}" in ids and not any(i.endswith(f".{moved}") and not i.startswith("toolkit.") for i in ids)
    assert "audit.peft_lora_ga" in ids and "lora_ga.audit_peft" not in ids
    from lora_theory.studies import all_figures

    for fig in all_figures():  # figures name only registered claims
        assert set(fig.claims) <= ids, fig.name


@pytest.mark.parametrize("cid", ["limits.lemma3.1", "limits.lemma3.2", "limits.grad_closed_form"])
def test_foundation_claims_hold(cid):
    row = run_check(cid, quick=True)
    assert row["verdict"] == "holds", row["summary"]
    assert row["figures"]


def test_grad_blocked_claim_measures_memory():
    row = run_check("toolkit.grad_blocked", quick=True)
    assert row["verdict"] == "holds", row["summary"]
    assert 0 < row["figures"]["peak_bytes"] < row["figures"]["one_LxL_bytes"]


def test_failing_and_crashing_checks_are_reported():
    @claim("limits._test_fails", statement="A deliberately false claim.", reference="test")
    def _false(quick):
        return Measurement(False, {"x": 1.0}, "measured 1, expected 0")

    @claim("limits._test_crash", statement="A crashing check.", reference="test")
    def _crash(quick):
        raise ZeroDivisionError("boom")

    try:
        assert run_check("limits._test_fails")["verdict"] == "fails"
        row = run_check("limits._test_crash")
        assert row["verdict"] == "error" and "ZeroDivisionError" in row["summary"] and row["error"]
    finally:
        from lora_theory import claims as reg

        reg._REGISTRY.remove("limits._test_fails")
        reg._REGISTRY.remove("limits._test_crash")


def test_unknown_claim_and_bad_id():
    with pytest.raises(ValueError, match="claim: expected one of"):
        lt.get_claim("limits.nope")
    with pytest.raises(ValueError, match="id: expected"):
        claim("nopaper", statement="x", reference="y")


def test_negative_control_is_caught_and_undone():
    """A control corrupts the code under test only while its check runs, and the check must catch it."""
    from lora_theory.claims import get_claim, run_check, run_controls
    from lora_theory.limits import exact

    original = exact.lora_chain
    c = get_claim("limits.lemma3.2")
    assert "scale_squared" in [k.name for k in c.controls]
    row = run_check(c, control="scale_squared")
    assert row["verdict"] == "fails" and row["control"] == "scale_squared"
    assert exact.lora_chain is original  # restored
    assert run_check(c)["verdict"] == "holds"
    table = run_controls(["limits.lemma3.2"])
    assert table.caught.all() and set(table.columns) >= {"id", "control", "caught", "description"}
    with pytest.raises(ValueError, match="control: expected one of"):
        run_check(c, control="no_such_control")


def test_verdicts_and_margins():
    from lora_theory.claims import Margin, Measurement

    assert Measurement(None, {}, "").verdict == "inconclusive"
    assert Measurement(False, {}, "").verdict == "fails"
    m = Margin(0.9, 1.0)
    assert m.ok and m.slack == pytest.approx(0.1) and "slack +10%" in str(m)
    g = Margin(5.0, 10.0, ">=")
    assert not g.ok and g.slack == pytest.approx(-0.5)


def test_margin_words_mean_something():
    """Exact counts say "exact" (was "slack +0%", read as barely passing); values orders of magnitude apart give the
    factor (was "+108870%"); the percentage stays where a pass could depend on load."""
    from lora_theory.claims import Margin

    assert str(Margin(0, 0)) == "0 <= 0 (exact)" and str(Margin(8, 8, ">=")) == "8 >= 8 (exact)"
    assert str(Margin(6, 8)) == "6 <= 8 (2 to spare)" and str(Margin(3, 0)) == "3 <= 0 (3 short)"
    assert str(Margin(1e-15, 1e-10)) == "1e-15 <= 1e-10 (1e+05x below)"
    assert str(Margin(1089.7, 1.0, ">=")) == "1.09e+03 >= 1 (1.1e+03x above)"
    assert str(Margin(0.9, 1.0)) == "0.9 <= 1 (slack +10%)" and str(Margin(2.5, 2.0, ">=")) == "2.5 >= 2 (slack +25%)"
    assert "slack" not in str(Margin(0, 0)) and "%" not in str(Margin(1519.0, 10.0, ">="))


def test_every_claims_test_and_proof_exist():
    """A claim's `test` and `proof` name a real test function and a real proof-check function (not a stale path)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for c in lt.all_claims():
        for ref in (c.test, c.proof):
            if not ref:
                continue
            path, _, func = ref.partition("::")
            text = (root / path).read_text()
            assert f"def {func}(" in text, f"{c.id}: {ref} does not exist"
