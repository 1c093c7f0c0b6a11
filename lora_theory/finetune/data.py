"""Human-labelled fine-tuning data that installs offline from the package index: ``load_task(name, split)``.

Both tasks are built from the VADER sentiment lexicon (Hutto & Gilbert 2014), shipped as
``vader_lexicon.txt`` inside the PyPI package ``vaderSentiment`` (MIT licence). Each line is a
token (a word, an emoticon or a slang form), the mean of ten independent human valence ratings
on the scale -4 (extremely negative) .. +4 (extremely positive), their standard deviation and the
ten raw ratings. 7,520 lines, 7,506 distinct tokens (duplicates keep their first line).

Tasks (``TASKS``):

- ``vader_valence`` (regression): predict the mean rating (a float in [-3.9, 3.4]) of a token;
  loss and metric: mean squared error.
- ``vader_polarity`` (binary classification): is the mean rating positive (no token has mean 0)?
  Loss: cross-entropy; metric: accuracy. 44.5 % positive (a majority-class guess scores 55.5 %).
  It shares tokens and splits with ``vader_valence``, so the two tasks are not independent
  evidence; they differ in loss (MSE vs cross-entropy) and in what the head must resolve.

- ``cpython_mlm`` (masked-token prediction, continued pretraining): the prose of CPython's Language
  Reference (:func:`lora_theory.lora.text.reference_text`, offline) tokenized by the MiniLM's
  WordPiece tokenizer and cut into consecutive, non-overlapping windows of ``MLM_SEQ_LEN`` = 32
  tokens ([CLS] + 30 text tokens + [SEP]); in each window every text token is masked (replaced by
  [MASK]) independently with probability ``MLM_MASK_FRACTION`` = 0.15 (at least one per window),
  drawn once from ``split_seed``, so the masks are fixed, never redrawn per step. Loss:
  cross-entropy of the masked tokens; metric: masked-token accuracy. The windows are permuted by
  ``split_seed`` and split 15 % test / 15 % val / 70 % train (disjoint windows: no text token is
  in two splits). In CPython 3.11-3.13 about 1,300 windows: ~900 masked validation tokens.
  This is the setting where LoRA is known to trail full fine-tuning (continued pretraining).

Splits of the VADER tasks are fixed by ``split_seed`` (default 0): a seeded permutation of the distinct tokens, the
first 15 % ``test``, the next 15 % ``val``, the rest ``train`` (5,254 / 1,126 / 1,126 tokens).
The same seed gives both tasks the same tokens in every split.

Reference: C.J. Hutto and E. Gilbert (2014), "VADER: A Parsimonious Rule-based Model for Sentiment
Analysis of Social Media Text", ICWSM; used for the claims of ``lora_theory.claims.finetune``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Literal

import torch

from .._validate import InvalidArgumentError, check_choice, check_int

__all__ = ["MLM_MASK_FRACTION", "MLM_SEQ_LEN", "SPLITS", "TASKS", "MLMData", "TaskData", "TaskInfo", "lexicon", "load_task", "mlm_windows",
           "parse_lexicon"]

SPLITS = ("train", "val", "test")
_FRACTIONS = {"test": 0.15, "val": 0.15}  # train: the rest


@dataclass(frozen=True)
class TaskInfo:
    """What a task is: its kind, loss, metric, source and licence."""

    name: str
    kind: Literal["regression", "classification", "mlm"]
    loss: str
    metric: str
    higher_is_better: bool
    description: str
    source: str
    licence: str


TASKS = {
    "vader_valence": TaskInfo("vader_valence", "regression", "mse", "mse", False,
                              "token -> mean of ten human valence ratings (-4..+4)", "vaderSentiment (PyPI), vader_lexicon.txt", "MIT"),
    "vader_polarity": TaskInfo("vader_polarity", "classification", "cross_entropy", "accuracy", True,
                               "token -> sign of the mean human valence rating (negative / positive)", "vaderSentiment (PyPI), vader_lexicon.txt",
                               "MIT"),
    "cpython_mlm": TaskInfo("cpython_mlm", "mlm", "cross_entropy", "accuracy", True,
                            "32-token windows of CPython's Language Reference prose, 15 % of tokens masked -> the masked tokens",
                            "CPython pydoc_data.topics (stdlib), prose paragraphs", "PSF-2.0"),
}
#: tokens per window of ``cpython_mlm`` ([CLS] + 30 text tokens + [SEP]) and the masking probability of a text token
MLM_SEQ_LEN = 32
MLM_MASK_FRACTION = 0.15


@dataclass(frozen=True)
class TaskData:
    """One split of a task: ``texts`` (N strings) and ``y`` ((N,) float32 ratings or int64 class ids)."""

    info: TaskInfo
    split: str
    texts: tuple[str, ...]
    y: torch.Tensor

    @property
    def n_classes(self) -> int:
        """2 for classification; 1 (one output) for regression."""
        return 2 if self.info.kind == "classification" else 1

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class MLMData:
    """One split of ``cpython_mlm``: ``input_ids`` (N, 32) with the masked tokens replaced by [MASK], ``labels`` (N, 32).

    ``labels`` holds the original token id at masked positions and -100 elsewhere (the ignore
    index of ``torch.nn.functional.cross_entropy``); ``y`` is the flat vector of masked tokens'
    ids in row-major order (what a model's masked-position logits are scored against).
    """

    info: TaskInfo
    split: str
    input_ids: torch.Tensor
    labels: torch.Tensor

    @property
    def y(self) -> torch.Tensor:
        return self.labels[self.labels != -100]

    @property
    def n_masked(self) -> int:
        return int((self.labels != -100).sum())

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@functools.cache
def mlm_windows(split_seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (masked input_ids (N, 32), labels (N, 32))} of ``cpython_mlm`` (see the module docstring).

    Deterministic in ``split_seed`` and the text (:func:`lora_theory.lora.text.text_fingerprint`
    names it); the tokenizer is the MiniLM's, loaded offline.
    """
    from ..lora.text import load_tokenizer, reference_text, special_tokens

    tok = load_tokenizer()
    prefix, suffix = special_tokens(tok)
    body = MLM_SEQ_LEN - len(prefix) - len(suffix)
    ids = tok(reference_text(), add_special_tokens=False, verbose=False)["input_ids"]
    n = len(ids) // body
    flat = torch.tensor(ids[: n * body], dtype=torch.long).view(n, body)  # (n, 30) consecutive windows
    gen = torch.Generator().manual_seed(split_seed)
    mask = torch.rand(n, body, generator=gen) < MLM_MASK_FRACTION  # (n, 30) fixed masks
    none = ~mask.any(1)
    mask[none, torch.randint(0, body, (int(none.sum()),), generator=gen)] = True  # every window scores at least one token
    labels = torch.where(mask, flat, torch.full_like(flat, -100))
    masked = torch.where(mask, torch.full_like(flat, tok.mask_token_id), flat)
    pre = torch.tensor(prefix, dtype=torch.long).expand(n, len(prefix))
    suf = torch.tensor(suffix, dtype=torch.long).expand(n, len(suffix))
    ignore = torch.full((n, len(prefix)), -100), torch.full((n, len(suffix)), -100)
    inputs = torch.cat([pre, masked, suf], 1)  # (n, 32)
    labels = torch.cat([ignore[0], labels, ignore[1]], 1)  # (n, 32)
    idx = _split_indices(n, split_seed)
    return {s: (inputs[idx[s]].clone(), labels[idx[s]].clone()) for s in SPLITS}


def parse_lexicon(text: str) -> tuple[tuple[str, float, float, tuple[int, ...]], ...]:
    """Lines "token TAB mean TAB sd TAB [ten ratings]" -> (token, mean, sd, ratings) per distinct token, in order.

    Raises:
        InvalidArgumentError: a non-blank line without the four fields, a mean or sd that is not a
            number, or ratings that are not a list of ten integers in [-4, 4].
    """
    rows, seen = [], set()
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise InvalidArgumentError(f"vader_lexicon.txt line {i}: expected 4 tab-separated fields, got {len(parts)}: {line!r:.80}")
        token, mean, sd, raw = parts
        try:
            m, s, ratings = float(mean), float(sd), json.loads(raw)
        except ValueError:
            raise InvalidArgumentError(f"vader_lexicon.txt line {i}: expected numbers and a list of ratings, got {line!r:.80}") from None
        if not (isinstance(ratings, list) and len(ratings) == 10 and all(isinstance(x, int) and -4 <= x <= 4 for x in ratings)):
            raise InvalidArgumentError(f"vader_lexicon.txt line {i}: expected ten integer ratings in [-4, 4], got {raw!r:.80}")
        if token in seen:  # 14 tokens appear twice; the first line wins
            continue
        seen.add(token)
        rows.append((token, m, s, tuple(ratings)))
    return tuple(rows)


@functools.cache
def lexicon() -> tuple[tuple[str, float, float, tuple[int, ...]], ...]:
    """The VADER lexicon shipped by ``vaderSentiment``: :func:`parse_lexicon` of its ``vader_lexicon.txt``.

    Raises:
        ImportError: vaderSentiment is not installed (``pip install 'lora-theory[models]'``).
    """
    from importlib import resources

    try:
        text = (resources.files("vaderSentiment") / "vader_lexicon.txt").read_text(encoding="utf-8")
    except ModuleNotFoundError as e:  # optional dependency
        raise ImportError("load_task needs the 'models' extra: pip install 'lora-theory[models]' (vaderSentiment)") from e
    return parse_lexicon(text)


@functools.cache
def _split_indices(n: int, split_seed: int) -> dict[str, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_test, n_val = round(_FRACTIONS["test"] * n), round(_FRACTIONS["val"] * n)
    return {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}


def load_task(name: str, split: str, *, split_seed: int = 0) -> TaskData | MLMData:
    """The ``split`` ("train", "val", "test") of task ``name`` ("vader_valence", "vader_polarity", "cpython_mlm").

    Args:
        name: a key of :data:`TASKS`.
        split: "train", "val" or "test".
        split_seed: seed of the token permutation that defines the splits (the same for every task).

    Returns:
        A :class:`TaskData`; ``y`` is float32 ratings (regression) or int64 labels 0 = negative,
        1 = positive (classification); for ``cpython_mlm`` an :class:`MLMData`.

    Example:
        >>> d = load_task("vader_polarity", "val")  # doctest: +SKIP
        >>> len(d), d.info.metric
        (1126, 'accuracy')
    """
    check_choice("name", name, tuple(TASKS))
    check_choice("split", split, SPLITS)
    split_seed = check_int("split_seed", split_seed, low=0)
    info = TASKS[name]
    if info.kind == "mlm":
        inputs, labels = mlm_windows(split_seed)[split]
        return MLMData(info, split, inputs, labels)
    rows = lexicon()
    idx = _split_indices(len(rows), split_seed)[split].tolist()
    texts = tuple(rows[i][0] for i in idx)
    means = torch.tensor([rows[i][1] for i in idx], dtype=torch.float32)
    y = means if info.kind == "regression" else (means > 0).to(torch.int64)
    return TaskData(info, split, texts, y)
