"""Fine-tuning tasks on the pretrained MiniLM: each is a ``loss(model, batch)`` and its data.

- :class:`ProbeModel` / :func:`probe_model` / :class:`SupervisedTask`: the real tasks of
  :func:`lora_theory.finetune.data.load_task`. Prediction = head(mean-pooled MiniLM embedding),
  the head a linear probe fitted once on the frozen pretrained embeddings of the training split
  (ridge regression for ``vader_valence``, L2 logistic regression for ``vader_polarity``) and then
  frozen, so every fine-tuning method adapts the same encoder under the same head from the same
  starting loss, and LoRA-GA's gradient at initialization is the gradient of a sensible model.
- :func:`teacher_student_task`: a regression target that a fine-tuned student can reach: the
  teacher is the same pretrained model with a fixed random low-rank change added to the
  query and value weights of every layer; the loss is the mean squared error between student
  and teacher mean-pooled embeddings (times 100 so that the initial loss is O(1)). Inputs are
  random token ids (:func:`lora_theory.lora.pretrained.token_batches`): a fast fixture, not language.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .._validate import InvalidArgumentError, check_choice, check_positive
from ..lora.pretrained import embed

__all__ = ["MLMDecoder", "MLMModel", "ProbeModel", "SupervisedTask", "TeacherStudent", "batch_key", "fit_mlm_decoder", "fit_probe", "mlm_model", "probe_model", "teacher_student_task"]


def batch_key(batch: dict[str, torch.Tensor]) -> str:
    """A content key of a batch: sha256 over the shapes, dtypes and bytes of ``input_ids`` and ``attention_mask``.

    Keys by content, never by ``id()``: a freed batch's id is reused by later objects, and a
    tensor changed in place keeps its id, so an id-keyed cache returns another batch's target.
    """
    h = hashlib.sha256()
    for name in ("input_ids", "attention_mask"):
        t = batch[name].detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class TeacherStudent:
    """A teacher-student regression task on a pretrained encoder; ``loss(model, batch)``.

    ``targets`` caches the teacher's embeddings by :func:`batch_key` (the batch's content).
    """

    teacher: nn.Module
    targets: dict[str, torch.Tensor]

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        key = batch_key(batch)
        if key not in self.targets:
            with torch.no_grad():
                self.targets[key] = embed(self.teacher, batch)
        return 100.0 * ((embed(model, batch) - self.targets[key]) ** 2).mean()


def teacher_student_task(model: nn.Module, *, rank: int = 8, scale: float = 0.5, targets=("query", "value"), seed: int = 0) -> TeacherStudent:
    """Teacher = ``model`` with W <- W + scale * ||W||_F / ||P||_F * P for a random rank-``rank`` P.

    The change is applied to every nn.Linear whose name ends with one of ``targets``.
    """
    teacher = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, mod in teacher.named_modules():
            if isinstance(mod, nn.Linear) and any(name.endswith(t) for t in targets):
                m_out, n_in = mod.weight.shape
                P = torch.randn(m_out, rank, generator=gen) @ torch.randn(rank, n_in, generator=gen)
                mod.weight += scale * mod.weight.norm() / P.norm() * P.to(mod.weight.dtype)
                n += 1
    if n == 0:
        raise InvalidArgumentError(f"targets: expected to match linear layers of the model, got {targets!r}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return TeacherStudent(teacher, {})


class ProbeModel(nn.Module):
    """out = head(embed(encoder, batch)): (b, T) ids -> (b, n_out); the head (n_out, 384) is frozen."""

    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        for p in self.head.parameters():
            p.requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(embed(self.encoder, batch))  # (b, n_out)


@dataclass(frozen=True)
class SupervisedTask:
    """``loss(model, batch)`` for a :class:`ProbeModel` on a batch {"input_ids", "attention_mask", "y"}.

    Regression: mean squared error of the single output; classification: cross-entropy of the
    two logits; "mlm": cross-entropy of the vocabulary logits of the masked tokens (an
    :class:`MLMModel` returns one row per masked token, ``y`` their ids). ``metric(out, y)``: MSE
    (regression) or accuracy (classification, mlm).
    """

    kind: Literal["regression", "classification", "mlm"]

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_of(model(batch), batch["y"])

    def loss_of(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            return ((out.squeeze(-1) - y) ** 2).mean()
        return nn.functional.cross_entropy(out, y)

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        if self.kind == "regression":
            return float(((out.squeeze(-1) - y) ** 2).mean())
        return float((out.argmax(-1) == y).double().mean())


def fit_probe(X: torch.Tensor, y: torch.Tensor, kind: Literal["regression", "classification"], *, l2: float = 1e-3) -> nn.Linear:
    """The linear probe on features X (N, d): ridge (regression) or L2 logistic regression (2 classes).

    Regression: [w; b] = argmin ||X w + b - y||^2 / N + l2 ||w||^2 (closed form, float64, with the
    features standardized by their mean and the mean feature variance). Classification: the
    same objective with the logistic loss, by L-BFGS; the head's logits are (0, x w + b).

    Returns:
        A frozen nn.Linear(d, 1) (regression) or nn.Linear(d, 2) (classification), float32.
    """
    check_choice("kind", kind, ("regression", "classification"))
    l2 = check_positive("l2", l2)
    if X.dim() != 2 or y.shape != (X.shape[0],):
        raise InvalidArgumentError(f"X, y: expected (N, d) and (N,), got {tuple(X.shape)} and {tuple(y.shape)}")
    X64, y64 = X.double(), y.double()
    mu = X64.mean(0)
    s = (X64 - mu).pow(2).mean().sqrt()  # one scale for all features keeps the penalty isotropic
    Z = (X64 - mu) / s  # (N, d) standardized
    N, d = Z.shape
    if kind == "regression":
        ym = y64.mean()
        w = torch.linalg.solve(Z.T @ Z / N + l2 * torch.eye(d, dtype=torch.float64), Z.T @ (y64 - ym) / N)  # (d,)
        b = ym
    else:
        w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(Z @ w + b, y64) + l2 * (w @ w)
            loss.backward()
            return loss

        opt.step(closure)
        w, b = w.detach(), b.detach()
    W = w / s  # back to raw features: x w' + b' = z w + b
    bias = b - mu @ W
    n_out = 1 if kind == "regression" else 2
    head = nn.Linear(d, n_out)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[-1] = W.float()  # classification: logit of class 0 is 0, of class 1 is x w + b
        head.bias[-1] = bias.float()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


@torch.no_grad()
def embed_texts(encoder: nn.Module, tokenizer, texts, *, batch_size: int = 256) -> torch.Tensor:
    """Mean-pooled embeddings (N, hidden) of ``texts``, in batches, no gradient."""
    from ..lora.pretrained import encode

    texts = list(texts)
    return torch.cat([embed(encoder, encode(tokenizer, texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)])


def probe_model(encoder: nn.Module, tokenizer, train_texts, train_y: torch.Tensor, kind: Literal["regression", "classification"]) -> ProbeModel:
    """A :class:`ProbeModel` whose head is :func:`fit_probe` on the frozen encoder's embeddings of the training split."""
    X = embed_texts(encoder, tokenizer, train_texts)  # (N, 384)
    return ProbeModel(encoder, fit_probe(X, train_y, kind))


class MLMDecoder(nn.Module):
    """logits = scale * LayerNorm(h) @ E^T + bias: (K, hidden) -> (K, vocab), E the encoder's word embeddings (tied, frozen).

    The MiniLM ships without its masked-LM head; this decoder is the standard BERT head without the
    dense layer, its LayerNorm (weight, bias: (hidden,)), ``scale`` (a scalar) and the vocabulary
    bias ((vocab,)) fitted once by :func:`fit_mlm_decoder` with the encoder frozen, then frozen for
    every fine-tuning method (so all methods start from the same model and loss).
    """

    def __init__(self, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.E = word_embeddings  # shared with the encoder (tied); frozen by every method
        d, V = word_embeddings.embedding_dim, word_embeddings.num_embeddings
        self.norm = nn.LayerNorm(d)
        self.scale = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(V))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * (self.norm(h) @ self.E.weight.T) + self.bias  # (K, V)


class MLMModel(nn.Module):
    """out = decoder(encoder hidden states at the masked positions): a batch {"input_ids", "attention_mask", "labels"} -> (K, vocab).

    K = number of masked positions of the batch (labels != -100), in row-major order, so ``out``
    lines up with ``labels[labels != -100]`` (the batch's ``y``). The decoder is frozen.
    """

    def __init__(self, encoder: nn.Module, decoder: MLMDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        for p in self.decoder.parameters():
            p.requires_grad_(False)

    def hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states at the masked positions: (K, hidden)."""
        h = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (b, T, hidden)
        return h[batch["labels"] != -100]  # (K, hidden)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.hidden(batch))


def fit_mlm_decoder(encoder: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, *, steps: int = 40, lr: float = 0.05, max_tokens: int = 768,
                    seed: int = 0) -> MLMDecoder:
    """The :class:`MLMDecoder` fitted by Adam on the frozen encoder's hidden states of (up to ``max_tokens``) masked training tokens.

    Minimizes the cross-entropy of the masked tokens over the LayerNorm's weight and bias, the
    scalar scale and the vocabulary bias (the encoder and the embeddings stay fixed). The
    vocabulary bias starts at the log unigram frequency of the training tokens (add-one smoothed:
    tokens never seen get log(1 / (N + V)), never -inf) and the scale at the best of a 1-D grid
    (one (K, V) product, reused for every grid value), so ``steps`` full-batch Adam steps on
    ``max_tokens`` tokens suffice (each step is a (K, hidden) x (hidden, V) product: the cost).
    ``input_ids`` (N, T) and ``labels`` (N, T) as :class:`lora_theory.finetune.data.MLMData`.

    Returns:
        A frozen decoder (float32) tied to ``encoder``'s word embeddings.
    """
    if input_ids.shape != labels.shape or input_ids.dim() != 2:
        raise InvalidArgumentError(f"input_ids, labels: expected two (N, T) tensors of one shape, got {tuple(input_ids.shape)} and {tuple(labels.shape)}")
    dec = MLMDecoder(encoder.embeddings.word_embeddings)
    model = MLMModel(encoder, dec)
    with torch.no_grad():
        H = torch.cat([model.hidden({"input_ids": input_ids[i:i + 64], "attention_mask": torch.ones_like(input_ids[i:i + 64]),
                                     "labels": labels[i:i + 64]}) for i in range(0, len(input_ids), 64)])  # (K, hidden)
        y = labels[labels != -100]  # (K,)
        V = dec.bias.shape[0]
        counts = torch.bincount(y, minlength=V).double() + 1.0  # add-one smoothing: no -inf bias
        dec.bias.copy_((counts / counts.sum()).log().float())
    gen = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(y), generator=gen)[:max_tokens]
    H, y = H[keep], y[keep]
    with torch.no_grad():
        Z = dec.norm(H) @ dec.E.weight.T  # (K, V), the logits before scale and bias
        grid = torch.logspace(-3, 1, 21)
        grid = torch.cat([-grid.flip(0), grid])  # either sign: the sentence-embedding MiniLM's states can anti-align with E
        ce = [float(nn.functional.cross_entropy(s * Z + dec.bias, y)) for s in grid]
        dec.scale.fill_(float(grid[int(torch.tensor(ce).argmin())]))
        del Z
    params = [dec.norm.weight, dec.norm.bias, dec.scale, dec.bias]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(dec(H), y)
        loss.backward()
        opt.step()
    for p in dec.parameters():
        p.requires_grad_(False)
    return dec


def mlm_model(encoder: nn.Module, train_input_ids: torch.Tensor, train_labels: torch.Tensor, *, cache: str | None = None, **fit: object) -> MLMModel:
    """An :class:`MLMModel` whose decoder is :func:`fit_mlm_decoder` on the frozen ``encoder`` (its weights are not changed).

    ``cache``: a file path; the fitted decoder's state is read from it when it holds the fit of
    exactly these inputs (a sha256 over the encoder's weights, the data, the fit settings and the
    torch version is stored beside the state and compared), else fitted and written there.
    """
    import os

    key = None
    if cache is not None:
        h = hashlib.sha256(f"{torch.__version__}|{sorted(fit.items())}".encode())
        for t in (train_input_ids, train_labels, *encoder.state_dict().values()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        key = h.hexdigest()
        if os.path.exists(cache):
            saved = torch.load(cache, weights_only=True)
            if saved.get("key") == key:
                dec = MLMDecoder(encoder.embeddings.word_embeddings)
                dec.load_state_dict(saved["state"], strict=False)
                return MLMModel(encoder, dec)
    for p in encoder.parameters():
        p.requires_grad_(False)
    dec = fit_mlm_decoder(encoder, train_input_ids, train_labels, **fit)
    for p in encoder.parameters():
        p.requires_grad_(True)
    if cache is not None:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        state = {k: v for k, v in dec.state_dict().items() if not k.startswith("E.")}  # the tied embeddings are the encoder's
        tmp = f"{cache}.{os.getpid()}.tmp"
        torch.save({"key": key, "state": state}, tmp)
        os.replace(tmp, cache)  # atomic: a concurrent reader sees the old or the new file, never half of one
    return MLMModel(encoder, dec)
