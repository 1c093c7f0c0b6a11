"""Tests for lora_theory.limits.features (claim limits.rank_count)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from lora_theory.claims import run_check
from lora_theory.limits.features import feature_rank, polynomial_features
from lora_theory.limits.polynomial import exp_polynomial


@given(d=st.integers(1, 5), g=st.integers(0, 6), L=st.integers(1, 12), seed=st.integers(0, 999))
@example(d=3, g=30, L=2, seed=0)  # multinomial weights beyond 20! (an int64 overflow once)
def test_features_reproduce_polynomial(d, g, L, seed):
    """limits.rank_count: phi(Q) psi(K)^T = P(Q K^T) with k = C(g + d, d) columns."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=g + 1)
    Q = torch.as_tensor(rng.normal(size=(L, d)) / math.sqrt(d))
    K = torch.as_tensor(rng.normal(size=(L + 2, d)) / math.sqrt(d))
    U, V = polynomial_features(Q, coef, "query"), polynomial_features(K, coef, "key")
    assert U.shape == (L, feature_rank(g, d)) == (L, math.comb(g + d, d))
    S = Q @ K.T
    P = sum(c * S**j for j, c in enumerate(coef))
    assert torch.allclose(U @ V.T, P, rtol=1e-11, atol=1e-11 * max(1.0, float(P.abs().max())))


def test_exp_features_relative_error():
    gen = torch.Generator().manual_seed(0)
    Q = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    K = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    S = Q @ K.T
    # Scale by the Cauchy-Schwarz range max||q|| max||k|| (as approx_gradients does), not by
    # max|q . k|: the monomial sum adds terms of size (sum_i |q_i k_i|)^j, which only the former bounds.
    R = float(Q.norm(dim=1).max() * K.norm(dim=1).max())
    p = exp_polynomial(R, 1e-6)
    U = polynomial_features(Q / math.sqrt(R), p, "query")
    V = polynomial_features(K / math.sqrt(R), p, "key")
    bound = p.rel_error + p.feature_rounding(U.shape[1] + p.degree, torch.finfo(torch.float64).eps)
    assert float(((U @ V.T) / torch.exp(S) - 1).abs().max()) <= bound


def test_float32_and_device_follow_input():
    U = polynomial_features(torch.ones(4, 2, dtype=torch.float32), np.array([1.0, 2.0, 3.0]))
    assert U.dtype == torch.float32 and U.shape == (4, 6)


def test_rank_claim_holds():
    assert run_check("limits.rank_count")["verdict"] == "holds"


def test_bad_input():
    with pytest.raises(ValueError, match="Z"):
        polynomial_features(torch.ones(3), np.array([1.0]))
    with pytest.raises(ValueError, match="side"):
        polynomial_features(torch.ones(3, 2), np.array([1.0]), side="value")
    with pytest.raises(ValueError, match="poly"):
        polynomial_features(torch.ones(3, 2), np.ones((2, 2)))


@given(d=st.integers(1, 6), g=st.integers(0, 7), b=st.integers(1, 9), seed=st.integers(0, 999))
def test_feature_map_blocks_and_tables_agree(d, g, b, seed):
    """FeatureMap built block by block, transposed, equals the per-monomial products of its own index
    tables (parent * coordinate), and its weights are a_|alpha| |alpha|!/alpha!: fails on a wrong prefix
    length in the build plan or a wrong multinomial."""
    from lora_theory.limits.features import FeatureMap, monomial_table

    rng = np.random.default_rng(seed)
    Z = torch.as_tensor(rng.normal(size=(11, d)))
    fm = FeatureMap(g, d)
    full = torch.cat([fm(Z[i:i + b]).clone() for i in range(0, 11, b)], dim=1)  # (k, 11)
    parent, var, deg, mult = monomial_table(g, d)
    ref = torch.ones(fm.k, 11, dtype=torch.float64)
    for m in range(1, fm.k):
        ref[m] = ref[parent[m]] * Z[:, var[m]]
    assert torch.equal(full, ref)
    coef = rng.normal(size=g + 1)
    assert np.allclose(fm.weights(coef), coef[deg] * mult)
    counts = np.zeros((fm.k, d), dtype=int)
    for m in range(1, fm.k):
        counts[m] = counts[parent[m]]
        counts[m, var[m]] += 1
    assert len({tuple(c) for c in counts}) == fm.k == math.comb(g + d, d)  # every monomial exactly once
    assert all(mult[m] == math.factorial(int(deg[m])) // math.prod(math.factorial(int(c)) for c in counts[m]) for m in range(fm.k))
