"""Audits of third-party code against the papers: ``audit.*``.

- ``audit.peft_lora_ga``: PEFT's ``init_lora_weights="lora_ga"`` on a real model, measured against
  LoRA-GA's Thm 3.1 and Def. 3.1 (:func:`lora_theory.lora_ga.audit.audit_lora_ga`).

An audit whose verdict is "fails" carries a *positive* control (``expect="holds"``): this
toolkit's implementation substituted for the audited one must pass the same audit, so that the
"fails" is about the audited code and not about the audit.
"""
from __future__ import annotations

from ..lora_ga import audit as ga_audit
from . import Margin, Measurement, claim, control, patch

__all__: list[str] = []


@claim(
    "audit.peft_lora_ga",
    statement="PEFT's init_lora_weights='lora_ga' (default ArB2r, stable) realizes LoRA-GA's Thm 3.1 on a real model: the first step is a multiple zeta of G_2r (median relative residual <= 1e-3 over the q, v layers of MiniLM) and the stable scale gives E||eta B A x||^2 / m = alpha^2/gamma^2 (within 10%).",
    reference="Wang et al. 2024, Thm 3.1, Def. 3.1; PEFT 0.21 tuners/lora/layer.py lora_ga_init",
    test="tests/lora_ga/test_audit.py::test_peft_audit_measures_the_paper_quantities",
)
def _audit_peft(quick: bool) -> Measurement:
    from ..finetune.tasks import teacher_student_task  # heavy
    from ..lora.pretrained import embed, load_minilm, token_batches  # heavy

    model = load_minilm()
    task = teacher_student_task(model)
    batches = token_batches(2, 4, 16)
    df = ga_audit.audit_lora_ga("peft", model, batches, task.loss, embed, ["query", "value"], directions=("ArB2r",), scales=("stable",))
    res = float(df.rel_residual.median())
    mom = float(df.fwd_moment.median())
    pred = float(df.fwd_pred.iloc[0])  # alpha^2 / gamma^2 = (16 / 16)^2 = 1
    dev = abs(mom / pred - 1.0)
    ok = res <= 1e-3 and dev <= 0.1
    impl = str(df.implementation.iloc[0])
    return Measurement(ok, {"implementation": impl, "median_rel_residual": res, "median_fwd_moment": mom, "fwd_pred": pred, "layers": len(df)},
                       f"{impl} ArB2r/stable on MiniLM q,v ({len(df)} layers): median residual to zeta G_2r {res:.2g}, forward moment {mom:.3g} (paper: {pred:g})",
                       {"median_residual_to_zeta_G2r": Margin(res, 1e-3), "forward_moment_rel_dev": Margin(dev, 0.1)})


@control("audit.peft_lora_ga", "toolkit_in_place_of_peft", "this toolkit's LoRA-GA init substituted for PEFT's in the same audit (a correct implementation must pass)",
         expect="holds")
def _():
    orig = ga_audit.audit_lora_ga

    def substituted(implementation, *args, **kw):
        return orig("lora_theory" if implementation == "peft" else implementation, *args, **kw)

    return patch("lora_theory.lora_ga.audit", "audit_lora_ga", substituted)
