"""Tests for lora_theory.lora_ga.model on plain torch models (claim lora_ga.offset_exact)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_theory.lora.layer import add_lora
from lora_theory.lora.peft_bridge import target_linears
from lora_theory.lora_ga.init import DIRECTIONS, SCALES, alignment_report
from lora_theory.lora_ga.model import apply_lora_ga, estimate_gradients


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 10)).to(dtype)


def _batches(dtype=torch.float64, k=3):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 12, generator=gen, dtype=dtype), torch.randn(8, 10, generator=gen, dtype=dtype)) for _ in range(k)]


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def test_estimate_gradients_is_the_batch_average():
    model, batches = _model(), _batches()
    G = estimate_gradients(model, batches, _loss, ["0", "2"], dtype=torch.float64)
    assert all(p.grad is None for p in model.parameters())  # the per-layer gradients were freed
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    ref = {}
    for b in batches:
        model.zero_grad()
        _loss(model, b).backward()
        for name in ("0", "2"):
            ref[name] = ref.get(name, 0) + model.get_submodule(name).weight.grad / len(batches)
    for name in ref:
        assert torch.allclose(G[name], ref[name], rtol=1e-12, atol=1e-15)


def test_estimate_through_lora_wrapper_and_offload():
    model = _model()
    plain = estimate_gradients(model, _batches(), _loss, ["0", "2"], dtype=torch.float64)
    add_lora(model, ["0", "2"], r=2, alpha=4.0)  # B = 0: the effective weight is still W0
    wrapped = estimate_gradients(model, _batches(), _loss, ["0", "2"], dtype=torch.float64, offload="cpu")
    assert set(target_linears(model, ["0", "2"])) == {"0", "2"}
    for name in plain:
        assert torch.allclose(plain[name], wrapped[name], rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("scale", SCALES)
def test_output_unchanged_at_step0(dtype, direction, scale):
    """lora_ga.offset_exact: W_res + eta B A = W0, so the output does not move at step 0."""
    model, batches = _model(dtype), _batches(dtype)
    x = batches[0][0]
    with torch.no_grad():
        y0 = model(x)
    G = estimate_gradients(model, batches, _loss, ["0", "2"], dtype=torch.float64)
    add_lora(model, ["0", "2"], r=2, alpha=4.0, rslora=True)
    inits = apply_lora_ga(model, G, direction=direction, scale=scale)
    with torch.no_grad():
        y1 = model(x)
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    assert float((y1 - y0).abs().max() / y0.abs().max()) <= tol
    for name, init in inits.items():  # the layers' factors are the theorem's
        mod = model.get_submodule(name)
        rep = alignment_report(G[name], mod.lora_A, mod.lora_B, mod.eta)
        assert rep.rel_residual <= (1e-10 if dtype == torch.float64 else 1e-5)


def test_first_lora_step_matches_theorem_on_a_model():
    """One SGD step of the LoRA-GA model moves W_eff by -lr zeta G_2r + O(lr^2)."""
    model, batches = _model(), _batches(k=1)
    G = estimate_gradients(model, batches, _loss, ["2"], dtype=torch.float64)
    add_lora(model, ["2"], r=2, alpha=4.0, rslora=True)
    (init,) = apply_lora_ga(model, G).values()
    lay = model.get_submodule("2")
    W_before = lay.base.weight + lay.delta_weight()
    opt = torch.optim.SGD([lay.lora_A, lay.lora_B], lr=1e-4)
    _loss(model, batches[0]).backward()
    opt.step()
    step = (lay.base.weight + lay.delta_weight() - W_before).detach()
    U, S, Vh = torch.linalg.svd(G["2"])
    G2r = (U[:, :4] * S[:4]) @ Vh[:4]
    pred = -1e-4 * init.zeta * G2r
    assert float((step - pred).norm() / pred.norm()) <= 1e-3  # the O(lr^2) term


def test_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="target_modules"):
        estimate_gradients(model, _batches(), _loss, ["nope"])
    with pytest.raises(ValueError, match="batches"):
        estimate_gradients(model, [], _loss, ["0"])
    with pytest.raises(ValueError, match="loss_fn"):
        estimate_gradients(model, _batches(), lambda m, b: m(b[0]), ["0"])
    with pytest.raises(ValueError, match="grads"):
        apply_lora_ga(model, {"0": torch.ones(16, 12)})  # no LoRA layers in the model
