"""Real English text, offline: the Python Language Reference that ships with every CPython, or a user's file.

The regime report (:func:`lora_theory.limits.regime.attention_regime`) must see the attention
scores a model produces on language, never on random token ids (random ids give different, and
for most heads smaller, score ranges). Every machine that runs Python has one sizeable body of
real English prose: ``pydoc_data.topics``, the Language Reference chapters that ``help()``
prints (about 465,000 characters in CPython 3.11). :func:`reference_text` keeps its prose
paragraphs only (no grammar rules, no code examples: paragraphs with an indented line, heading
rules, fewer than 8 words or under 80 % plain words are dropped), in sorted topic order, with
reST emphasis stars removed: about 26,000 words, 37,600 MiniLM tokens in 3.11. The text differs
slightly between Python versions, and so do the measured numbers; :func:`text_fingerprint`
names the text a measurement used.

:func:`text_batches` tokenizes a text once and cuts it into consecutive, non-overlapping windows
of exactly ``seq_len`` tokens including the tokenizer's own special tokens ([CLS] ... [SEP] for
BERT), so no sequence is padded and every sequence is real running text (windows may start or
end inside a sentence or a word).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

import torch

from .._validate import InvalidArgumentError, check_int

__all__ = ["load_text", "load_tokenizer", "reference_text", "special_tokens", "text_batches", "text_fingerprint"]

_MIN_WORDS = 8  # shorter paragraphs are headings, list stubs or version notes
_MIN_PLAIN = 0.8  # fraction of plain words a prose paragraph needs (grammar and code fall below)
_PLAIN_WORD = re.compile(r"\(?[A-Za-z][a-z'\-]*[,.;:)]?")
_RULE = re.compile(r"[*=\-~^\"]+")


@functools.lru_cache(maxsize=1)
def reference_text() -> str:
    """The prose paragraphs of CPython's ``pydoc_data.topics`` (the Language Reference), joined by blank lines.

    Raises:
        InvalidArgumentError: if this Python ships without ``pydoc_data`` (some distributions strip
            it); pass a text file instead.
    """
    try:
        from pydoc_data.topics import topics  # stdlib, but strippable by distributions
    except ImportError:
        raise InvalidArgumentError("text: this Python has no pydoc_data (the Language Reference); pass a text file (--text FILE)") from None
    paragraphs = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = block.split("\n")
            if any(line[:1].isspace() for line in lines) or any(_RULE.fullmatch(line.strip()) for line in lines):
                continue  # code, grammar, indented notes, or a heading underline
            text = re.sub(r"\*(\S[^*]*?)\*", r"\1", " ".join(line.strip() for line in lines))  # *emphasis* -> emphasis
            words = text.split()
            if len(words) < _MIN_WORDS or sum(bool(_PLAIN_WORD.fullmatch(w)) for w in words) < _MIN_PLAIN * len(words):
                continue
            if text.endswith((".", ":")):
                paragraphs.append(text)
    return "\n\n".join(paragraphs)


def load_text(path: str | os.PathLike | None = None) -> str:
    """The text of ``path`` (UTF-8; undecodable bytes replaced), or :func:`reference_text` when None.

    Raises:
        InvalidArgumentError: if the file does not exist or holds no non-whitespace text.
    """
    if path is None:
        return reference_text()
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"text: expected an existing text file, got {str(p)!r}")
    text = p.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise InvalidArgumentError(f"text: expected a file with text in it, got an empty file {str(p)!r}")
    return text


def text_fingerprint(text: str) -> str:
    """First 12 hex digits of the SHA-256 of ``text``: which text a measurement ran on."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_tokenizer(path: str | os.PathLike | None = None):
    """A transformers tokenizer from a local folder, offline; None: the MiniLM tokenizer shipped with its weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer  # heavy

    if path is None:
        from .pretrained import minilm_path

        path = minilm_path()
    if not Path(path).is_dir():
        raise InvalidArgumentError(f"path: expected a local model folder with tokenizer files, got {str(path)!r}")
    return AutoTokenizer.from_pretrained(str(path))


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """(prefix, suffix): the ids the tokenizer puts around one sequence, e.g. ([101], [102]) for BERT.

    Found by tokenizing a probe word with and without special tokens (works for any tokenizer,
    including those without ``build_inputs_with_special_tokens``).
    """
    full = list(tokenizer("word", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("word", add_special_tokens=False)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    return [], []  # the tokenizer rewrites the probe: add no special tokens


def text_batches(
    tokenizer, seq_len: int, *, batch_size: int = 8, n_batches: int = 1, text: str | None = None, offset: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """Consecutive windows of real text: ``n_batches`` dicts {"input_ids", "attention_mask"}, each (batch_size, seq_len).

    Args:
        tokenizer: a transformers tokenizer (:func:`load_tokenizer`).
        seq_len: tokens per sequence including the special tokens (>= 1 + their number).
        batch_size, n_batches: sequences per batch, batches.
        text: the text (default :func:`reference_text`); see :func:`load_text` for files.
        offset: windows to skip first (disjoint text for held-out batches).

    Returns:
        A list of batches; every attention mask is all ones (no padding).

    Raises:
        InvalidArgumentError: if the text is empty or too short for the requested windows (the
            message gives how many windows it holds).
    """
    seq_len = check_int("seq_len", seq_len, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    n_batches = check_int("n_batches", n_batches, low=1)
    offset = check_int("offset", offset, low=0)
    text = reference_text() if text is None else text
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError(f"text: expected a non-empty string of text, got {text!r:.40}")
    prefix, suffix = special_tokens(tokenizer)
    body = seq_len - len(prefix) - len(suffix)
    if body < 1:
        raise InvalidArgumentError(f"seq_len: expected >= {len(prefix) + len(suffix) + 1} (the tokenizer adds {len(prefix) + len(suffix)} special tokens), got {seq_len}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    need = (offset + batch_size * n_batches) * body
    if len(ids) < need:
        raise InvalidArgumentError(f"text: expected at least {need} tokens for {n_batches} x {batch_size} windows of {seq_len} after {offset} windows, "
                                   f"got {len(ids)} tokens ({len(ids) // body} windows); use a longer text, a smaller --L or fewer sequences")
    flat = torch.tensor(ids[offset * body : need], dtype=torch.long).view(n_batches, batch_size, body)  # (n_batches, batch, body)
    pre = torch.tensor(prefix, dtype=torch.long).expand(n_batches, batch_size, len(prefix))
    suf = torch.tensor(suffix, dtype=torch.long).expand(n_batches, batch_size, len(suffix))
    windows = torch.cat([pre, flat, suf], dim=-1)  # (n_batches, batch, seq_len)
    return [{"input_ids": w.clone(), "attention_mask": torch.ones_like(w)} for w in windows]
