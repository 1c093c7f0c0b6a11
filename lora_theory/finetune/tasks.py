"""Fine-tuning tasks on the pretrained MiniLM: each is a ``loss(model, batch)`` and its data.

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

import torch
from torch import nn

from .._validate import InvalidArgumentError
from ..lora.pretrained import embed

__all__ = ["TeacherStudent", "teacher_student_task"]


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
