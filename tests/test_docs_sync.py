"""The generated numbers in README.md and paper_notes/*.md equal what the committed results produce (lora_theory.docs_sync)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lora_theory import docs_sync
from lora_theory.cli import app
from lora_theory.docs_sync import SectionError, Stored, check, render, section, spans

ROOT = Path(__file__).resolve().parents[1]


def _copy(tmp_path: Path) -> Path:
    """The documents and the stored results they are generated from, copied (the checkout is never written)."""
    for rel in ("README.md", "ARCHITECTURE.md", "paper_notes", "figures", "stored", "benchmarks"):
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, tmp_path / rel, ignore=shutil.ignore_patterns("*.png"))
        elif src.is_file():
            shutil.copy2(src, tmp_path / rel)
    return tmp_path


def test_committed_generated_spans_match_the_stored_results():
    stale = check(ROOT)
    assert not stale, "generated spans differ from the stored results (run `lora-theory notes --write`):\n" + "\n".join(
        docs_sync._diff(s) for s in stale)


def test_every_document_has_generated_spans_and_every_section_is_used():
    used = set()
    for rel in ("README.md", "paper_notes/computational_limits.md"):
        _, found = spans((ROOT / rel).read_text(), rel, Stored(ROOT))
        assert found, f"{rel} has no generated span"
        used |= {s.name.partition("/")[0] for s in found}
    for p in ROOT.glob("paper_notes/*.md"):
        used |= {s.name.partition("/")[0] for s in spans(p.read_text(), p.name, Stored(ROOT))[1]}
    for p in ROOT.glob("benchmarks/README.md"):
        used |= {s.name.partition("/")[0] for s in spans(p.read_text(), p.name, Stored(ROOT))[1]}
    assert {"claims_table", "claims_run", "quick_cost", "real_heads_table", "finetune", "mutation_scores"} <= used
    assert used == set(docs_sync.SECTIONS), f"registered but unused: {set(docs_sync.SECTIONS) - used}"


def _first_number_span(text: str, name: str) -> tuple[int, int]:
    m = re.search(rf"<!-- generated:{re.escape(name)} -->(.*?)<!-- /generated:{re.escape(name)} -->", text, re.DOTALL)
    assert m, name
    n = re.search(r"\d+\.\d+", m.group(1))
    assert n, f"no decimal number in span {name}"
    return m.start(1) + n.start(), m.start(1) + n.end()


@pytest.mark.parametrize("doc, name", [("paper_notes/finetune.md", "finetune/finetune_runs"),
                                       ("README.md", "claims_table"),
                                       ("paper_notes/computational_limits.md", "real_heads_table"),
                                       ("paper_notes/lora_plus.md", "claim_measured/lora_plus.thm1_layer")])
def test_a_hand_edited_number_is_detected_and_rewritten(tmp_path, doc, name):
    root = _copy(tmp_path)
    p = root / doc
    text = p.read_text()
    a, b = _first_number_span(text, name)
    p.write_text(text[:a] + "9" + text[a:b] + text[b:])  # e.g. 0.89 -> 90.89
    stale = check(root)
    assert [s.name for s in stale] == [name]
    assert docs_sync.main(["--check", "--root", str(root)]) == 1
    assert docs_sync.main(["--write", "--root", str(root)]) == 0
    assert p.read_text() == text and not check(root)


def test_a_changed_stored_result_makes_the_docs_stale(tmp_path):
    """The direction that matters when a study is re-run: new CSV, old prose."""
    root = _copy(tmp_path)
    csv = root / "figures" / "finetune_init_memory.csv"
    df = Stored(root).csv("figures/finetune_init_memory.csv")
    df.loc[df.what == "lora_ga_init", "seconds"] *= 2  # the init twice as slow
    df.to_csv(csv, index=False)
    stale = check(root)
    assert [s.name for s in stale] == ["finetune/finetune_init_memory"]
    old = float(re.search(r"([\d.]+)x the time", stale[0].old).group(1))
    new = float(re.search(r"([\d.]+)x the time", stale[0].new).group(1))
    assert new == pytest.approx(2 * old, rel=0.05)


def test_stored_claim_results_feed_the_claims_table(tmp_path):
    root = _copy(tmp_path)
    res = root / docs_sync.QUICK_RESULTS
    text = res.read_text()
    res.write_text(text.replace('"verdict": "holds"', '"verdict": "fails"', 1))
    assert "claims_table" in {s.name for s in check(root)}


def test_bad_markers_are_named_errors():
    with pytest.raises(SectionError, match="unknown generated section 'no_such'"):
        spans("x <!-- generated:no_such -->1<!-- /generated:no_such --> y")
    with pytest.raises(SectionError, match="not closed"):
        spans("x <!-- generated:real_heads_table -->1 y")
    with pytest.raises(SectionError, match="nested or unclosed"):
        spans("<!-- generated:claims_run --><!-- generated:real_heads_table --><!-- /generated:claims_run -->")
    with pytest.raises(SectionError, match="not found"):
        render("real_heads_table", Stored("/nonexistent"))
    with pytest.raises(SectionError, match="is not in"):
        render("claim_measured/limits.no_such_claim", Stored(ROOT))


def test_adding_a_section_is_one_function(tmp_path):
    @section("_test_only_sum")
    def _sum(stored: Stored, arg: str | None) -> str:
        return str(sum(int(x) for x in arg.split(",")))
    try:
        out, found = spans("a <!-- generated:_test_only_sum/1,2 -->0<!-- /generated:_test_only_sum/1,2 --> b\n"
                           "<!-- generated:_test_only_sum/3 -->\nold\n<!-- /generated:_test_only_sum/3 -->\n", stored=Stored(tmp_path))
        assert out == ("a <!-- generated:_test_only_sum/1,2 -->3<!-- /generated:_test_only_sum/1,2 --> b\n"
                       "<!-- generated:_test_only_sum/3 -->\n3\n<!-- /generated:_test_only_sum/3 -->\n")
        assert [(s.old, s.new, s.block) for s in found] == [("0", "3", False), ("old", "3", True)]
        with pytest.raises(ValueError, match="registered twice"):
            section("_test_only_sum")(_sum)
    finally:
        docs_sync.SECTIONS.pop("_test_only_sum")


def test_cli_notes_command(tmp_path):
    root = _copy(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["notes", "--root", str(root)]).exit_code == 0
    p = root / "paper_notes" / "computational_limits.md"
    a, b = _first_number_span(p.read_text(), "real_heads_table")
    p.write_text(p.read_text()[:a] + "7" + p.read_text()[a:])
    r = runner.invoke(app, ["notes", "--root", str(root)])
    assert r.exit_code == 1 and "real_heads_table" in r.output
    assert runner.invoke(app, ["notes", "--write", "--root", str(root)]).exit_code == 0
    assert runner.invoke(app, ["notes", "--root", str(root)]).exit_code == 0


def test_store_reproduce_refuses_a_full_report(tmp_path):
    (tmp_path / "results.json").write_text('{"mode": "full", "claims": [], "controls": [], "seconds": 1}')
    with pytest.raises(SectionError, match="'full' reproduce"):
        docs_sync.store_reproduce(tmp_path, tmp_path, command="x", machine="y")
