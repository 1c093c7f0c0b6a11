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


# -- helpers of the batched driver (mutation survivors, issue 20) ------------------------------------------------


def test_key_range_stats_are_the_largest_row_norm_and_coordinate():
    from lora_theory.limits.lowrank import key_range_stats

    K = torch.randn(2, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    norm, coord = key_range_stats(K)
    for b in range(2):
        assert float(norm[b]) == pytest.approx(max(float(K[b, j].pow(2).sum().sqrt()) for j in range(7)), rel=1e-15)
        for a in range(3):
            assert float(coord[b, a]) == max(abs(float(K[b, j, a])) for j in range(7))


@pytest.mark.parametrize("attention", ["self", "cross", "general"])
def test_select_elements_picks_every_field_and_keeps_ties(attention):
    """select_elements(flat, idx) is flat with every per-element tensor indexed by idx; X_Q = X_K = X_V (self) and
    X_K = X_V (cross) stay the same object, general attention's three inputs are picked separately."""
    from lora_theory.limits.lowrank import flat_instance, select_elements

    gen = torch.Generator().manual_seed(3)

    def g(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    E, L, n, d, r = 4, 5, 3, 2, 1
    Xq = g(E, L, n)
    Xk = Xq if attention == "self" else g(E, L, n)
    Xv = Xk if attention in ("self", "cross") else g(E, L, n)
    inst = lt.AttentionLoRAInstance(Xq, Xk, Xv, g(E, n, d), g(E, n, d), g(E, n, d), {"q": g(E, r, d), "v": g(E, r, d)},
                                    {"q": g(E, n, r), "v": g(E, n, r)}, 2.0, r, 0.5, g(E, L, d), attention)
    flat = flat_instance(inst)
    idx = torch.tensor([2, 0, 3])
    sel = select_elements(flat, idx)
    for name in ("Xq", "Xk", "Xv", "Wq", "Wk", "Wv", "Y"):
        torch.testing.assert_close(getattr(sel, name), getattr(flat, name)[idx], rtol=0, atol=0, msg=name)
    for mu in ("q", "v"):
        torch.testing.assert_close(sel.A[mu], flat.A[mu][idx], rtol=0, atol=0)
        torch.testing.assert_close(sel.B[mu], flat.B[mu][idx], rtol=0, atol=0)
    assert (sel.Xk is sel.Xq) == (attention == "self") and (sel.Xv is sel.Xk) == (attention in ("self", "cross"))


def test_causal_moment_sums_are_one_addition_longer():
    """n_sum (the longest float sum behind a moment, for the rounding allowance) is L_key + k, one more when causal
    (prefix part + diagonal-block part), whatever the blocks."""
    from lora_theory.limits.lowrank import MomentSource

    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(10, 2, dtype=torch.float64, generator=gen)
    M = torch.rand(3, 10, dtype=torch.float64, generator=gen) + 0.1
    causal = MomentSource(Z, lambda a, b: M[:, a:b], lambda a, b: M[:, a:b], block=4, causal=True)
    plain = MomentSource(Z, lambda a, b: M[:, a:b], lambda a, b: M[:, a:b], block=4)
    sums = [causal.moments(i0, i1).n_sum for i0, i1 in ((0, 4), (4, 8), (8, 10))]
    assert plain.moments(0, 4).n_sum == 10 + 3
    assert sums == [10 + 3 + 1] * 3


@pytest.mark.parametrize("V", [torch.ones(10, 4, dtype=torch.float64), torch.ones(9, 3, dtype=torch.float64), "not a tensor"])
def test_run_lowrank_refuses_mismatched_factors(V):
    """run_lowrank with tensor factors: V must be a tensor of U's shape ((*lead, L, k)); a wrong k or L is refused, naming U, V."""
    inst = lt.make_instance(10, 2, 1)
    with pytest.raises(lt.InvalidArgumentError, match="U, V"):
        run_lowrank(inst, torch.ones(10, 3, dtype=torch.float64), V, 0.0)
