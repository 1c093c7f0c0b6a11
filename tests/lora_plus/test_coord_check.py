"""Tests for lora_theory.lora_plus.coord_check (own LoRALinear and PEFT models; figure lora_plus_coord_check)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_theory.lora.layer import add_lora
from lora_theory.lora_plus.coord_check import coord_check
from lora_theory.tolerances import tolerance


def test_coord_check_records_every_module_and_step():
    def factory(n):
        model = nn.Sequential(nn.Linear(4, n), nn.ReLU(), nn.Linear(n, 1))
        add_lora(model, ["0"], r=2, alpha=2.0)
        x = torch.randn(8, 4)

        def loss_fn(m):
            return m(x).pow(2).mean()

        return model, loss_fn, lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)

    df = coord_check(factory, [8, 16], steps=2)
    assert set(df.width) == {8, 16} and set(df.step) == {0, 1, 2} and set(df.module) == {"0"}
    assert (df[df.step == 0].z_b == 0).all() and (df[df.step == 2].z_b > 0).all()  # B = 0 at init, then learns
    with pytest.raises(ValueError, match="widths"):
        coord_check(factory, [0], steps=1)


def test_coord_check_on_a_peft_model():
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    def factory(n):
        base = nn.Sequential(nn.Linear(4, n), nn.ReLU(), nn.Linear(n, 1))
        model = get_peft_model(base, LoraConfig(r=2, lora_alpha=2, target_modules=["0"]))
        x = torch.randn(8, 4)

        def loss_fn(m):
            return m(x).pow(2).mean()

        return model, loss_fn, lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)

    df = coord_check(factory, [8, 16], steps=1)
    assert len(df) == 2 * 2 and (df[df.step == 1].z_b > 0).all() and (df[df.step == 0].z_b == 0).all()


def test_coord_check_rejects_a_model_without_lora():
    def factory(n):
        model = nn.Linear(4, n)
        return model, lambda m: m(torch.ones(2, 4)).sum(), lambda m: torch.optim.SGD(m.parameters(), lr=0.1)

    with pytest.raises(ValueError, match="model_factory: expected a model with LoRA layers"):
        coord_check(factory, [8], steps=1)


def test_coord_check_delta_split_at_step_one():
    """Init[1] (B = 0), SGD, LoRA on the input layer: at t = 1 only B moves, so delta1 = delta3 = 0 and delta2 = Z_B^1."""
    def factory(n):
        model = nn.Sequential(nn.Linear(4, n), nn.ReLU(), nn.Linear(n, 1))
        add_lora(model, ["0"], r=2, alpha=2.0)
        x = torch.randn(8, 4)
        return model, lambda m: m(x).pow(2).mean(), lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)

    df = coord_check(factory, [16, 32], steps=2, seeds=(0, 1))
    one = df[df.step == 1]
    assert (one.delta1 == 0).all() and (one.delta3 == 0).all() and (one.delta2 > 0).all()
    assert one.delta2.to_numpy() == pytest.approx(one.z_b.to_numpy(), rel=tolerance(torch.float32))  # float32 model
    assert df[df.step == 0].delta1.isna().all() and (df[df.step == 2][["delta1", "delta2", "delta3"]] > 0).all().all()
