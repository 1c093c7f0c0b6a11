"""Tests for lora_theory.lora_plus.optim: groups partition the parameters, equal PEFT's, ratio 1 = plain LoRA."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lora_theory.lora.layer import add_lora
from lora_theory.lora_plus import loraplus_param_groups, make_loraplus_optimizer


def _model(seed=0, width=12):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, width), nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
    add_lora(m, ["0", "3"], r=2, alpha=4.0, seed=seed)
    m[1].weight.requires_grad_(True)  # a trainable LayerNorm weight and bias (1-D)
    m[1].bias.requires_grad_(True)
    return m


@settings(max_examples=10)
@given(lr=st.floats(1e-5, 1e-1), ratio=st.floats(0.5, 64), one_d=st.sampled_from(("ratio", "base")), width=st.integers(4, 16))
def test_groups_partition_trainables(lr, ratio, one_d, width):
    m = _model(width=width)
    groups = loraplus_param_groups(m, lr, ratio, one_d=one_d)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.parameters() if p.requires_grad) and len(ids) == len(set(ids))
    names = {id(p): n for n, p in m.named_parameters()}
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            if "lora_B" in n or (p.ndim == 1 and one_d == "ratio"):
                assert g["lr"] == pytest.approx(lr * ratio)
            else:
                assert g["lr"] == pytest.approx(lr)


def test_ratio_one_reproduces_plain_lora_bit_for_bit():
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(3)), torch.randn(16, 3, generator=torch.Generator().manual_seed(4))
    m1, m2 = _model(), _model()
    o1 = make_loraplus_optimizer(m1, torch.optim.AdamW, lr=1e-3, ratio=1.0, weight_decay=0.0)
    o2 = torch.optim.AdamW([p for p in m2.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    for _ in range(5):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
    for (n1, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1


def test_equal_to_peft_create_loraplus_optimizer():
    peft = pytest.importorskip("peft")
    pytest.importorskip("transformers")
    from peft import LoraConfig, get_peft_model
    from peft.optimizers import create_loraplus_optimizer

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.lin = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.out = nn.Linear(8, 2)

        def forward(self, ids):
            return self.out(self.norm(self.lin(self.emb(ids))))

    torch.manual_seed(0)
    model = get_peft_model(Net(), LoraConfig(r=2, lora_alpha=4, target_modules=["lin", "emb"], modules_to_save=["norm"]))
    for wd in (0.0, 0.1):
        theirs = create_loraplus_optimizer(model, torch.optim.AdamW, lr=2e-4, loraplus_lr_ratio=16.0, loraplus_weight_decay=wd)
        ours = loraplus_param_groups(model, 2e-4, 16.0, weight_decay=wd)
        assert len(theirs.param_groups) == len(ours)
        for g_t, g_o in zip(theirs.param_groups, ours, strict=True):
            assert [id(p) for p in g_t["params"]] == [id(p) for p in g_o["params"]]
            assert g_t["lr"] == pytest.approx(g_o["lr"]) and g_t["weight_decay"] == pytest.approx(g_o["weight_decay"])
    assert peft.__version__


def test_bad_input():
    with pytest.raises(ValueError, match="ratio"):
        loraplus_param_groups(_model(), 1e-3, 0.0)
    with pytest.raises(ValueError, match="lr"):
        loraplus_param_groups(_model(), -1.0, 2.0)
    with pytest.raises(ValueError, match="model: expected trainable LoRA parameters"):
        loraplus_param_groups(nn.Linear(3, 3), 1e-3, 2.0)
