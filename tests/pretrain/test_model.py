"""Tests for lora_theory.pretrain.model (issue 23's proof of concept): the norm control and the LoRA attachment."""
from __future__ import annotations

import math

import torch

from lora_theory.pretrain.model import TinyLM


def test_norm_control_caps_every_score():
    """The controlled model's scores satisfy |beta q . k| <= R_max after the control, whatever the weights; the standard one is free."""
    torch.manual_seed(0)
    for controlled in (True, False):
        m = TinyLM(20, 8, 2, 4, 2, controlled=controlled, R_max=2.0)
        with torch.no_grad():
            for blk in m.blocks:
                blk.q.weight.mul_(30.0)
                blk.k.weight.mul_(30.0)
        m.apply_norm_control()
        tokens = torch.randint(0, 20, (2, 64))
        a = m.last_attention_input(tokens)
        blk = m.blocks[-1]
        q = blk.q(a).view(2, 64, 2, 4).transpose(1, 2)
        k = blk.k(a).view(2, 64, 2, 4).transpose(1, 2)
        top = float((m.beta * q @ k.mT).abs().max())
        R_cs = float(m.head_ranges(tokens).max())
        assert top <= R_cs * (1 + 1e-5)
        if controlled:
            assert R_cs <= 2.0 * (1 + 1e-4)
        else:
            assert R_cs > 2.0


def test_attach_lora_keeps_the_function_and_freezes_the_rest():
    torch.manual_seed(1)
    m = TinyLM(20, 8, 2, 4, 2, controlled=True)
    tokens = torch.randint(0, 20, (1, 40))
    with torch.no_grad():
        before = m(tokens)
    attn = m.attach_lora(mode="exact")
    with torch.no_grad():
        after = m(tokens)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)  # A = 0: the LoRA update starts at 0
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(".lora." in n for n in trainable)
    assert math.isclose(attn.beta, 0.5)
