"""Tests for lora_theory.limits.lowrank: the moment form of the low-rank gradient chain (claims limits.thm3.1, limits.thmA.1)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lora_theory as lt
from lora_theory import strategies as lts
from lora_theory.limits.lowrank import key_inputs, key_moments, lowrank_gradients, row_score_ranges, run_lowrank


def _exact_factorization(inst):
    """U = exp(S) (L, L), V = I: an exact positive factorization, so the low-rank chain must give the exact gradient."""
    Q, K, _ = inst.projections()
    return torch.exp(inst.beta * Q @ K.T), torch.eye(inst.L, dtype=Q.dtype)


@given(inst=lts.instances(max_L=30, max_d=6, bound=st.sampled_from((0.5, 1.0, 2.0))))
def test_moment_form_is_exact_for_an_exact_factorization(inst):
    """limits.thm3.1 / thmA.1 chain: with U V^T = exp(S) exactly, the moment form reproduces the closed
    form (an independent algorithm, exact.py) for every adapted weight: fails on a wrong covariance block,
    a missing beta, W_K vs W_K^T, or the V-side mean."""
    U, V = _exact_factorization(inst)
    g, G, aux = lowrank_gradients(inst, U, V)
    ex = lt.exact_gradients(inst)
    assert set(g) == set(ex)
    scale = max(float(v.abs().max()) for v in ex.values())  # L = 1: the dL/dS = 0 gradients are ~1e-17 rounding, exactly 0 here
    for k in ex:
        assert float((g[k] - ex[k]).abs().max()) <= 1e-9 * scale + 1e-15, k


def test_general_attention_stacks_key_inputs():
    """X_K != X_V: Z = [X_K, X_V] (m = 2n) and the result is still exact."""
    base = lt.make_instance(20, 3, 2, adapt="qkv", attention="cross", seed=1)
    inst = base.replace(Xv=base.Xk * 0.5 + 1.0, attention="general")
    Z, sk, sv = key_inputs(inst)
    assert Z.shape == (20, 6) and (sk, sv) == (slice(0, 3), slice(3, 6))
    U, V = _exact_factorization(inst)
    g, _, _ = lowrank_gradients(inst, U, V)
    ex = lt.exact_gradients(inst)
    assert max(lt.max_rel_error(g[k], ex[k]) for k in ex) <= 1e-9


@pytest.mark.parametrize("block", [1, 7, 64])
def test_blocked_moments_match_one_block(block):
    inst = lt.make_instance(50, 3, 2, adapt="qkv", bound=1.0, seed=4)
    U, V = _exact_factorization(inst)
    Z, _, _ = key_inputs(inst)
    one = key_moments(Z, lambda a, b: U.T[:, a:b], lambda a, b: V.T[:, a:b], inst.L, block=inst.L)
    blk = key_moments(Z, lambda a, b: U.T[:, a:b], lambda a, b: V.T[:, a:b], inst.L, block=block)
    assert torch.allclose(one.cov, blk.cov, rtol=1e-12, atol=1e-14) and torch.allclose(one.mean, blk.mean, rtol=1e-12)
    f = torch.softmax(inst.beta * inst.projections()[0] @ inst.projections()[1].T, dim=1)
    assert torch.allclose(blk.mean, f @ Z, rtol=1e-10)  # E~[Z] is the softmax-weighted mean


def test_nonpositive_normalizer_is_a_reason_not_an_exception():
    inst = lt.make_instance(10, 2, 1, seed=0)
    U = -torch.ones(10, 3, dtype=torch.float64)
    V = torch.ones(10, 3, dtype=torch.float64)
    run = run_lowrank(inst, U, V, 0.0)
    assert any("not positive" in r for r in run.reasons)


@given(inst=lts.instances(max_L=30, max_d=5))
def test_row_score_ranges_bound_every_score(inst):
    Q, K, _ = inst.projections()
    rho = row_score_ranges(Q, K, inst.beta)
    assert bool(((inst.beta * Q @ K.T).abs().amax(dim=1) <= rho * (1 + 1e-12)).all())


def test_bad_factors():
    inst = lt.make_instance(10, 2, 1)
    with pytest.raises(ValueError, match="U, V"):
        lowrank_gradients(inst, torch.ones(10, 3, dtype=torch.float64), torch.ones(9, 3, dtype=torch.float64))
