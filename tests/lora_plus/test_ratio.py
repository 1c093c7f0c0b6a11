"""Tests for lora_theory.lora_plus.ratio: the Fig. 2 toy network's learning-rate grid (claim lora_plus.ratio)."""
from __future__ import annotations

import pytest
import torch

from lora_theory.lora_plus.ratio import ratio_grid, toy_network
from lora_theory.tolerances import tolerance


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
        assert abs(float(test) - row.test_loss) <= tolerance(torch.float64) * max(1.0, row.test_loss)


def test_bad_input():
    with pytest.raises(ValueError, match="eta_As"):
        ratio_grid((0.1, -1.0), (0.1,), steps=1)
    with pytest.raises(ValueError, match="eta_Bs"):
        ratio_grid((0.1,), (), steps=1)
    with pytest.raises(ValueError, match="steps"):
        ratio_grid((0.1,), (0.1,), steps=0)
