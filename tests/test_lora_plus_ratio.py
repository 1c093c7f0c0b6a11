"""Tests for the Fig. 2 ratio grid (lora_plus.ratio) and the coordinate check, at small size."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_theory.lora_layer import add_lora
from lora_theory.lora_plus.coord_check import coord_check
from lora_theory.lora_plus.ratio import ratio_grid, toy_network


def test_ratio_grid_small():
    """The batched grid equals plain autograd GD on the same frozen network, point by point."""
    grid = (0.05, 0.5)
    df = ratio_grid(grid, grid, steps=20, n_train=200, n_test=50)
    assert len(df) == 4 and sorted(df.ratio.round(6)) == [0.1, 1.0, 1.0, 10.0]
    Htr, Hte, Ytr, Yte, W, W_out, A0 = toy_network(n_train=200, n_test=50)
    for row in df.itertuples():
        A = A0.clone().requires_grad_(True)
        B = torch.zeros(W.shape[0], A0.shape[0], dtype=torch.float64, requires_grad=True)
        for _ in range(20):
            loss = 0.5 * ((torch.relu(Htr @ (W + B @ A).T) @ W_out - Ytr) ** 2).mean()
            gA, gB = torch.autograd.grad(loss, [A, B])
            with torch.no_grad():
                A -= row.eta_A * gA
                B -= row.eta_B * gB
        with torch.no_grad():
            test = 0.5 * ((torch.relu(Hte @ (W + B @ A).T) @ W_out - Yte) ** 2).mean()
        assert abs(float(test) - row.test_loss) <= 1e-10 * max(1.0, row.test_loss)


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
