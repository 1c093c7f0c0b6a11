"""Tests for lora_theory.lora_plus.layer_sim (the Sec. 4 LoRA layer; claim lora_plus.thm1_layer)."""
from __future__ import annotations

import pytest
import torch

from lora_theory.lora_plus import fit_exponents, predict_exponents
from lora_theory.lora_plus.layer_sim import simulate_layer
from lora_theory.lora_plus.width_sweep import compare
from lora_theory.tolerances import tolerance

RTOL = tolerance(torch.float64)


def _rms(v):
    return float(v.pow(2).mean().sqrt())


@pytest.mark.parametrize("optimizer,init", [("gd", 1), ("gd", 2), ("adam", 1), ("adam", 2)])
def test_layer_equals_torch_optimizers_on_autograd(optimizer, init):
    """Z_B = B A Z on 1/2 ||Z_B - Y||^2, trained by torch.optim.SGD / Adam(eps=1e-12) on autograd gradients: same Z_A, Z_B, Delta Z_B, loss."""
    n, r, seed, steps, c_a, c_b = 24, 3, 5, 4, 0.3, 0.2
    df = simulate_layer([n], steps, optimizer=optimizer, init=init, a=-1.0, b=0.0, c_a=c_a, c_b=c_b, r=r, seeds=(seed,))
    g = torch.Generator().manual_seed(seed * 104729 + n)  # the simulator's per-(seed, width) stream
    f64 = torch.float64
    Z = torch.randint(0, 2, (n,), generator=g).to(f64) * 2 - 1
    Y = torch.randint(0, 2, (n,), generator=g).to(f64) * 2 - 1
    if init == 1:
        A, B = torch.randn(r, n, generator=g, dtype=f64) / n**0.5, torch.zeros(n, r, dtype=f64)
    else:
        A, B = torch.zeros(r, n, dtype=f64), torch.randn(n, r, generator=g, dtype=f64)
    A.requires_grad_(True)
    B.requires_grad_(True)
    groups = [{"params": [A], "lr": c_a / n}, {"params": [B], "lr": c_b}]
    opt = torch.optim.SGD(groups) if optimizer == "gd" else torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-12)
    for row in df.itertuples():
        zb_old = (B @ (A @ Z)).detach()
        opt.zero_grad()
        (0.5 * (B @ (A @ Z) - Y).pow(2).sum()).backward()
        opt.step()
        with torch.no_grad():
            za, zb = A @ Z, B @ (A @ Z)
            for got, want in ((row.Z_A, _rms(za)), (row.Z_B, _rms(zb)), (row.df, _rms(zb - zb_old)), (row.loss, float(0.5 * (zb - Y).pow(2).sum()))):
                assert got == pytest.approx(want, rel=RTOL, abs=1e-300)


def test_layer_thm1_first_steps():
    """lora_plus.thm1_layer: RMS deltas follow the Thm 1 exponents at steps 1-2 (Adam, LoRA+ rates, Init[2]; SignSGD, equal rates)."""
    widths = tuple(2**k for k in range(6, 12))
    for opt, init, a, b in (("adam", 2, -1, 0), ("signsgd", 1, -1, -1)):
        df = simulate_layer(widths, 2, optimizer=opt, init=init, a=float(a), b=float(b), seeds=(0, 1))
        cmp = compare(fit_exponents(df), predict_exponents(opt, init, a, b, 2))
        assert cmp.ok.all(), cmp[~cmp.ok].to_string()


def test_bad_input():
    with pytest.raises(ValueError, match="widths"):
        simulate_layer([4], 1, r=4)
    with pytest.raises(ValueError, match="widths"):
        simulate_layer([16.0], 1)
    with pytest.raises(ValueError, match="seeds"):
        simulate_layer([16], 1, seeds=())
    with pytest.raises(ValueError, match="optimizer"):
        simulate_layer([16], 1, optimizer="lion")
    with pytest.raises(ValueError, match="init"):
        simulate_layer([16], 1, init=0)
