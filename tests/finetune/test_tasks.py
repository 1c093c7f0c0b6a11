"""Fine-tuning tasks (lora_theory.finetune.tasks): the teacher-student fixture and the probe-head tasks.

The teacher-student task is the random-token unit-test fixture of ``lora_ga.*`` / ``lora_plus.*``
fine-tuning code; the probe head is shared by every real task (``load_task``).
"""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from lora_theory.finetune.tasks import TeacherStudent


class _Teacher(nn.Module):
    """A stand-in encoder with BERT's call signature: output = one-hot(ids) @ W, mean-pooled by ``embed``."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.table = nn.Embedding(50, 4)
        with torch.no_grad():
            self.table.weight.copy_(torch.arange(200.0).reshape(50, 4) / 50 + shift)

    def forward(self, input_ids, attention_mask):
        class Out:
            pass

        o = Out()
        o.last_hidden_state = self.table(input_ids)
        return o


def _batch(seed: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 50, (3, 5), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _reference(teacher, student, batch) -> float:
    from lora_theory.lora.pretrained import embed

    with torch.no_grad():
        return float(100.0 * ((embed(student, batch) - embed(teacher, batch)) ** 2).mean())


def test_target_follows_content_when_a_tensor_is_changed_in_place():
    """Same tensor object (same id()), new token ids: the target must be the new batch's.

    Fails on the old cache keyed by ``id(batch["input_ids"])``: the stale target of the first
    content is returned.
    """
    teacher, student = _Teacher(shift=0.3), _Teacher()
    task = TeacherStudent(teacher, {})
    batch = _batch(0)
    task.loss(student, batch)
    batch["input_ids"].copy_(_batch(1)["input_ids"])  # same object, different content
    with torch.no_grad():
        assert float(task.loss(student, batch)) == pytest.approx(_reference(teacher, student, batch), rel=1e-6)


def test_target_is_right_when_a_freed_batch_id_is_reused():
    """Fresh batches created and freed in a loop: CPython reuses freed ids, so an id()-keyed cache
    hands a later batch an earlier batch's target. Asserts that ids were in fact reused, so the test
    exercises the bug it guards against."""
    teacher, student = _Teacher(shift=0.3), _Teacher()
    task = TeacherStudent(teacher, {})
    seen, reused = set(), 0
    for seed in range(40):
        batch = _batch(seed)
        reused += id(batch["input_ids"]) in seen
        seen.add(id(batch["input_ids"]))
        with torch.no_grad():
            assert float(task.loss(student, batch)) == pytest.approx(_reference(teacher, student, batch), rel=1e-6), seed
        del batch
        gc.collect()
    assert reused > 0, "no id() was reused: the test did not exercise id reuse on this interpreter"


def test_probe_recovers_a_linear_rating_and_separates_classes():
    """fit_probe: ridge on y = X w + 3 recovers the predictions (fails on a dropped bias or un-standardized back-transform);
    logistic regression on separable labels puts class 1 in the second logit."""
    from lora_theory.finetune.tasks import SupervisedTask, fit_probe

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(400, 12, generator=gen) * 5 + 2
    w = torch.randn(12, generator=gen)
    y = X @ w + 3.0
    head = fit_probe(X, y, "regression", l2=1e-8)
    assert torch.allclose(head(X).squeeze(-1), y, atol=1e-3 * float(y.abs().max()))
    labels = (X @ w > float((X @ w).median())).long()
    clf = fit_probe(X, labels, "classification", l2=1e-4)
    out = clf(X)
    assert out.shape == (400, 2) and torch.equal(out[:, 0], torch.zeros(400))
    assert SupervisedTask("classification").metric(out, labels) > 0.97
    assert not any(p.requires_grad for p in head.parameters())


def test_probe_rejects_mismatched_shapes():
    from lora_theory.finetune.tasks import fit_probe

    with pytest.raises(ValueError, match="X, y"):
        fit_probe(torch.randn(5, 3), torch.randn(4), "regression")
    with pytest.raises(ValueError, match="kind"):
        fit_probe(torch.randn(5, 3), torch.randn(5), "ranking")
