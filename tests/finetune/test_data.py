"""The real tasks (lora_theory.finetune.data): VADER valence and polarity, offline, with fixed splits."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("vaderSentiment")

from lora_theory.finetune.data import TASKS, lexicon, load_task, parse_lexicon


def test_lexicon_is_the_documented_size_and_ratings_average_to_the_mean():
    """7,506 distinct tokens, each the mean of ten ratings in [-4, 4] (fails if the file or its parsing changes)."""
    rows = lexicon()
    assert len(rows) == 7506 and len({r[0] for r in rows}) == 7506
    off = [r for r in rows if abs(sum(r[3]) / 10 - r[1]) > 0.051]  # means are printed to 0.1
    assert len(off) <= 1, off[:3]


def test_splits_are_disjoint_cover_everything_and_are_fixed_by_seed():
    sizes = {s: len(load_task("vader_valence", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 5254, "val": 1126, "test": 1126}
    texts = [set(load_task("vader_valence", s).texts) for s in ("train", "val", "test")]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert len(set().union(*texts)) == 7506
    assert load_task("vader_valence", "test").texts == load_task("vader_valence", "test", split_seed=0).texts
    assert load_task("vader_valence", "test").texts != load_task("vader_valence", "test", split_seed=1).texts


def test_polarity_is_the_sign_of_the_valence_on_the_same_tokens():
    """Fails if a label is flipped or the two tasks drew different splits."""
    v, p = load_task("vader_valence", "val"), load_task("vader_polarity", "val")
    assert v.texts == p.texts and p.y.dtype == torch.int64 and v.y.dtype == torch.float32
    assert torch.equal(p.y, (v.y > 0).long())
    assert 0.4 < float(p.y.float().mean()) < 0.5  # 44.5% positive
    assert TASKS["vader_polarity"].metric == "accuracy" and p.n_classes == 2 and v.n_classes == 1


@pytest.mark.parametrize("name, split, seed, match", [("sst2", "train", 0, "name"), ("vader_valence", "dev", 0, "split"),
                                                      ("vader_valence", "val", -1, "split_seed")])
def test_bad_arguments_name_the_argument(name, split, seed, match):
    with pytest.raises(ValueError, match=match):
        load_task(name, split, split_seed=seed)


@pytest.mark.parametrize("text, match", [
    ("good\t1.9\t0.9\n", "4 tab-separated fields"),
    ("good\tx\t0.9\t[1, 2, 2, 2, 2, 2, 2, 2, 2, 2]\n", "numbers"),
    ("good\t1.9\t0.9\t[1, 2]\n", "ten integer ratings"),
    ("good\t1.9\t0.9\t[1, 2, 2, 2, 2, 2, 2, 2, 2, 9]\n", "ten integer ratings"),
])
def test_malformed_lexicon_lines_are_refused(text, match):
    with pytest.raises(ValueError, match=match):
        parse_lexicon(text)


def test_duplicate_tokens_keep_their_first_line():
    rows = parse_lexicon("a\t1.0\t0\t[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n\na\t-1.0\t0\t[-1, -1, -1, -1, -1, -1, -1, -1, -1, -1]\n")
    assert rows == (("a", 1.0, 0.0, (1,) * 10),)
