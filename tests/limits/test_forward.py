"""Tests for lora_theory.limits.forward (claim limits.lemma1.1): the exact blocked forward and the certified fast one.

The reference is a dense float64 softmax written here (not the code under test). The central promise:
approx_forward raises a documented error, or its output is within info.row_error_bound of the exact
attention, row by row, over random shapes, batch patterns, causal masks, score ranges and eps.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from lora_theory._validate import InvalidArgumentError
from lora_theory.limits.forward import approx_forward, attention_forward
from lora_theory.limits.lowrank import ApproximationError

F64 = torch.float64


def dense_attention(Q, K, V, beta=1.0, causal=False):
    S = beta * Q.double() @ K.double().mT
    if causal:
        S = S.masked_fill(torch.ones(S.shape[-2], S.shape[-1], dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(S, dim=-1) @ V.double()


def qkv(batch=(), Lq=40, Lk=40, d=4, dv=3, R=1.0, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    Q, K = (torch.randn(*batch, L, d, generator=gen, dtype=F64) for L in (Lq, Lk))
    V = torch.randn(*batch, Lk, dv, generator=gen, dtype=F64)
    s = math.sqrt(R / float(Q.norm(dim=-1).max() * K.norm(dim=-1).max()))
    return (Q * s).to(dtype), (K * s).to(dtype), V.to(dtype)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block_size", [None, 7, 1000])
def test_exact_forward_matches_dense(causal, block_size):
    Q, K, V = qkv((2, 3), R=30.0, seed=1)
    torch.testing.assert_close(attention_forward(Q, K, V, beta=0.7, causal=causal, block_size=block_size),
                               dense_attention(Q, K, V, 0.7, causal), rtol=1e-12, atol=1e-13)


def test_exact_forward_cross_lengths():
    Q, K, V = qkv((), Lq=13, Lk=50, seed=2)
    torch.testing.assert_close(attention_forward(Q, K, V), dense_attention(Q, K, V), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
def test_approx_forward_within_bound(causal):
    """limits.lemma1.1: bounded entries (R = 2): the error against the dense reference is within the certified bound, row by row."""
    Q, K, V = qkv((2, 2), Lq=96, Lk=96, R=2.0, seed=3)
    O, info = approx_forward(Q, K, V, causal=causal, eps=1e-6, block_size=16)
    err = (O - dense_attention(Q, K, V, causal=causal)).abs().amax(dim=-1)
    assert info.valid and info.error_bound < 1e-3
    assert bool((err <= info.row_error_bound).all())
    assert float(err.max()) > 0  # an approximation, not a copy of the exact pass


def test_refused_past_the_range():
    """Entries far beyond sqrt(log L): refused with the documented error naming R and the cap, before computing."""
    Q, K, V = qkv((), R=60.0, seed=4)
    with pytest.raises(ApproximationError, match="R must be <="):
        approx_forward(Q, K, V, eps=1e-3)


def test_bad_input():
    Q, K, V = qkv(())
    with pytest.raises(InvalidArgumentError, match="K, V"):
        approx_forward(Q, K, V[:-1])
    with pytest.raises(InvalidArgumentError, match="causal"):
        approx_forward(Q, K[:-1], V[:-1], causal=True)
    with pytest.raises(InvalidArgumentError, match="eps"):
        approx_forward(Q, K, V, eps=2.0)
    with pytest.raises(InvalidArgumentError, match="finite"):
        approx_forward(Q * float("nan"), K, V)


@st.composite
def forward_cases(draw):
    batch = draw(st.sampled_from(((), (1,), (2,), (2, 3))))
    causal = draw(st.booleans())
    Lq = draw(st.integers(1, 40))
    Lk = Lq if causal else draw(st.integers(1, 40))
    kw = {"batch": batch, "Lq": Lq, "Lk": Lk, "d": draw(st.integers(1, 4)), "dv": draw(st.integers(1, 3)), "R": 10 ** draw(st.floats(-2, 1.6)),
          "seed": draw(st.integers(0, 2**16)), "dtype": draw(st.sampled_from((F64, torch.float32)))}
    opts = {"eps": 10 ** draw(st.floats(-10, -1)), "causal": causal, "beta": draw(st.sampled_from((0.5, 1.0))),
            "compute_dtype": draw(st.sampled_from((F64, torch.float32))), "block_size": draw(st.sampled_from((None, 3, 8))),
            "max_features": 20_000}
    return kw, opts


@settings(max_examples=max(40, 2 * settings.default.max_examples), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=forward_cases())
def test_forward_certified_or_refused(case):
    """limits.lemma1.1, the promise: a documented error, or every row within its certified bound of the dense float64
    attention. Fails on a bound without the spread term, a range that does not cover the scores, a dropped normalizer."""
    kw, opts = case
    Q, K, V = qkv(**kw)
    try:
        O, info = approx_forward(Q, K, V, **opts)
    except ApproximationError as e:
        assert str(e)
        event("refused")
        return
    ref = dense_attention(Q, K, V, opts["beta"], opts["causal"])
    err = (O.double() - ref).abs().amax(dim=-1)
    # the float64 reference's own rounding: gamma_{L + d + 4} times the magnitudes (|V| rows)
    u = torch.finfo(F64).eps / 2
    slack = (Q.shape[-2] + Q.shape[-1] + 8) * u * 4 * float(V.double().abs().max())
    note(f"R {info.R:.3g} degree {info.degree} bound {info.error_bound:.3e} err {float(err.max()):.3e}")
    assert info.valid
    assert bool((err <= info.row_error_bound + slack).all())
    event("certified")
