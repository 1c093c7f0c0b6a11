"""Tests for lora_theory.limits.random_features, the FAVOR+ peer (claims limits.thm3.1, limits.thmA.1)."""
from __future__ import annotations

import math
import statistics

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lora_theory as lt
from lora_theory import strategies as lts
from lora_theory.limits.approx import ApproximationError, approx_gradients
from lora_theory.limits.random_features import positive_random_features, random_directions, random_feature_gradients


@given(m=st.integers(1, 20), d=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_orthogonal_blocks(m, d, seed):
    W = random_directions(m, d, seed)
    assert W.shape == (m, d) and W.dtype == torch.float64
    assert torch.equal(W, random_directions(m, d, seed))  # reproducible per seed
    for b in range(0, m, d):  # rows inside each block of d are mutually orthogonal
        B = W[b:b + d]
        G = B @ B.T
        off = G - torch.diag(torch.diagonal(G))
        assert float(off.abs().max()) <= 1e-12 * float(torch.diagonal(G).max())


@pytest.mark.parametrize("orthogonal", [False, True])
def test_directions_are_standard_normal(orthogonal):
    """Each row is N(0, I_d): E||w||^2 = d (Var 2d) and E[w w^T] = I, within 6 standard errors."""
    d, m = 4, 8000
    W = random_directions(m, d, 7, orthogonal=orthogonal)
    sq = (W * W).sum(dim=1)
    assert abs(float(sq.mean()) - d) <= 6 * math.sqrt(2 * d / m)
    C = W.T @ W / m  # (d, d); each entry's standard error is at most sqrt(2 / m)
    assert float((C - torch.eye(d, dtype=torch.float64)).abs().max()) <= 6 * math.sqrt(2 / m)


def test_features_are_unbiased_for_exp():
    """E[phi(x) . phi(y)] = exp(x . y): with m i.i.d. features every entry is within 6 standard
    deviations sqrt((exp(||x + y||^2) - 1) / m) (relative), the exact variance of FAVOR+."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(5, 3, generator=gen, dtype=torch.float64) * 0.4
    Y = torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.4
    m = 20000
    W = random_directions(m, 3, 1, orthogonal=False)
    est = torch.exp(positive_random_features(X, W)) @ torch.exp(positive_random_features(Y, W)).T / m  # (5, 6)
    exact = torch.exp(X @ Y.T)
    rel_sd = torch.sqrt((torch.exp(((X[:, None, :] + Y[None, :, :]) ** 2).sum(-1)) - 1) / m)
    z = ((est / exact - 1) / rel_sd).abs()
    assert float(z.max()) <= 6.0


@given(inst=lts.instances(max_L=24, max_d=4, bound=st.sampled_from((0.3, 1.0))), m=st.integers(1, 40))
def test_interface_matches_exact(inst, m):
    """Same keys, shapes, dtype and device as exact_gradients; finite; info records m."""
    ex = lt.exact_gradients(inst)
    g, info = random_feature_gradients(inst, m, seed=1)
    assert set(g) == set(ex) and all(g[k].shape == ex[k].shape and g[k].dtype == ex[k].dtype for k in ex)
    assert all(bool(torch.isfinite(v).all()) for v in g.values())
    assert info.valid and info.rank == m and info.method == "random_features" and info.error_bound == {}


@pytest.mark.parametrize("adapt", ["qv", "qkv"])
@pytest.mark.parametrize("attention", ["self", "cross"])
def test_error_shrinks_with_m(adapt, attention):
    """The estimate converges: at fixed seeds, 4096 features beat 16 by > 4x (1/sqrt(m) predicts 16x)."""
    inst = lt.make_instance(256, 4, 2, adapt=adapt, attention=attention, bound=1.0, beta=0.25, seed=5)
    ex = lt.exact_gradients(inst)

    def err(m):
        return statistics.median(max(lt.max_rel_error(g[k], ex[k]) for k in ex)
                                 for g, _ in (random_feature_gradients(inst, m, seed=s) for s in range(3)))

    assert err(4096) < err(16) / 4


def test_polynomial_beats_random_features_at_equal_rank():
    """limits.thm3.1 peer: at R <= 2 and equal feature count k, the polynomial's error is >= 10x lower."""
    inst = lt.make_instance(512, 4, 2, adapt="qkv", bound=2.0, beta=0.25, seed=2)
    ex = lt.exact_gradients(inst)
    g, info = approx_gradients(inst, eps=1e-3)
    poly = max(lt.max_rel_error(g[k], ex[k]) for k in ex)
    rf = statistics.median(max(lt.max_rel_error(gr[k], ex[k]) for k in ex)
                           for gr, _ in (random_feature_gradients(inst, info.rank, seed=s) for s in range(3)))
    assert info.R <= 2.0 and poly * 10 <= rf, (poly, rf)


def test_float32_returns_float32_computed_in_float64():
    """A float32 instance gets float32 gradients, computed in float64 (the moments are differences):
    they equal the float64 instance's result rounded to float32."""
    inst = lt.make_instance(64, 4, 2, adapt="qkv", bound=1.0, beta=0.25, dtype=torch.float32)
    g, info = random_feature_gradients(inst, 64)
    g64, _ = random_feature_gradients(inst.to(dtype=torch.float64), 64)
    assert all(v.dtype == torch.float32 for v in g.values()) and info.valid
    assert all(torch.equal(g[k], g64[k].float()) for k in g)


def test_underflow_is_flagged_not_returned_silently():
    """Scores ~1e7 underflow D~ to 0 in some rows even in float64: raise, or return with valid = False
    (an earlier float32 chain returned inf gradients marked valid)."""
    inst = lt.make_instance(16, 2, 1, bound=3000, beta=1.0, seed=3, dtype=torch.float32)
    with pytest.raises(ApproximationError, match="not positive|non-finite"):
        random_feature_gradients(inst, 2, seed=3)
    _, info = random_feature_gradients(inst, 2, seed=3, on_invalid="flag")
    assert not info.valid and info.reason


@pytest.mark.gpu
def test_cuda_matches_cpu():
    inst = lt.make_instance(512, 4, 2, adapt="qkv", bound=1.0, beta=0.25, seed=1)
    g_cpu, _ = random_feature_gradients(inst, 100, seed=4)
    g_gpu, _ = random_feature_gradients(inst.to(device="cuda"), 100, seed=4)
    for k in g_cpu:
        assert g_gpu[k].device.type == "cuda"
        assert lt.max_rel_error(g_gpu[k].cpu(), g_cpu[k]) <= 1e-10, k


def test_bad_input():
    inst = lt.make_instance(8, 3, 1)
    for kwargs, match in [({"m": 0}, "m"), ({"m": 2.5}, "m"), ({"m": 4, "seed": -1}, "seed"), ({"m": 4, "on_invalid": "x"}, "on_invalid"),
                          ({"m": 4, "orthogonal": "yes"}, "orthogonal")]:
        with pytest.raises(ValueError, match=match):
            random_feature_gradients(inst, **kwargs)
    with pytest.raises(ValueError, match="inst"):
        random_feature_gradients(None, 4)
    with pytest.raises(ValueError, match="W"):
        positive_random_features(torch.ones(3, 2, dtype=torch.float64), torch.ones(4, 3, dtype=torch.float64))
