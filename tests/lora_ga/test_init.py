"""Tests for lora_theory.lora_ga.init (claims lora_ga.thm3.1, eckart_young, stable_output, toolkit.sign_invariance)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from lora_theory.claims import run_check
from lora_theory.claims.lora_ga import spectrum_matrix
from lora_theory.lora_ga.init import (
    DIRECTIONS,
    SCALES,
    alignment_report,
    first_step_update,
    gradient_svd,
    lora_ga_init,
    split_indices,
    stable_scale_report,
)


@st.composite
def gradients(draw):
    """G with m != n allowed (tall and wide), 2r <= min(m, n), and a chosen spectrum."""
    m, n = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    k = min(m, n)
    r = draw(st.integers(1, k // 2))
    kind = draw(st.sampled_from(("flat", "decay", "repeated")))
    if kind == "flat":
        s = 1.0 + 0.5 * torch.linspace(1, 0, k, dtype=torch.float64)
    elif kind == "decay":
        s = torch.exp(-torch.arange(k, dtype=torch.float64) / draw(st.sampled_from((0.5, 2.0, 8.0))))
    else:  # repeated values away from the cut 2r / 2r + 1, so G_2r stays unique
        s = torch.ones(k, dtype=torch.float64)
        s[: 2 * r] = 3.0
        s[: max(1, r // 2)] = 5.0
    return spectrum_matrix(m, n, s, seed=draw(st.integers(0, 10**6))), r, kind


@given(g=gradients(), direction=st.sampled_from(DIRECTIONS), scale=st.sampled_from(SCALES), rslora=st.booleans())
def test_theorem_identity(g, direction, scale, rslora):
    """lora_ga.thm3.1: eta^2 (G A^T A + B B^T G) = zeta G_2r to float64 precision when sigma_2r > sigma_2r+1."""
    G, r, kind = g
    W0 = spectrum_matrix(*G.shape, torch.ones(min(G.shape), dtype=torch.float64), seed=5)
    init = lora_ga_init(G, r, alpha=4.0, direction=direction, scale=scale, rslora=rslora, W0=W0, seed=1)
    assert init.A.shape == (r, G.shape[1]) and init.B.shape == (G.shape[0], r)
    assert set(init.idx_A).isdisjoint(init.idx_B) and set(init.idx_A) | set(init.idx_B) == set(range(2 * r))
    rep = alignment_report(G, init.A, init.B, init.eta)
    note(f"{kind}: gap {rep.spectral_gap:.3g} residual {rep.rel_residual:.2e}")
    if rep.spectral_gap > 1 + 1e-6:
        assert rep.rel_residual <= 1e-11
        assert math.isclose(rep.multiple, init.zeta, rel_tol=1e-11)
        assert math.isclose(rep.residual_to_G, rep.eckart_young, rel_tol=1e-9, abs_tol=1e-12)


@given(g=gradients(), seed=st.integers(0, 1000))
def test_optimal_against_random_alternatives(g, seed):
    """lora_ga.eckart_young: no random rank-2r (A, B) beats LoRA-GA's residual to G."""
    G, r, _ = g
    init = lora_ga_init(G, r, alpha=4.0)
    best = alignment_report(G, init.A, init.B, init.eta).residual_to_G
    gen = torch.Generator().manual_seed(seed)
    for _ in range(3):
        A = torch.randn(r, G.shape[1], generator=gen, dtype=torch.float64)
        B = torch.randn(G.shape[0], r, generator=gen, dtype=torch.float64)
        assert alignment_report(G, A, B, 1.0).residual_to_G >= best - 1e-12


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_first_step_exact_vs_first_order(direction):
    G = spectrum_matrix(30, 20, torch.exp(-torch.arange(20.0) / 3), seed=2)
    init = lora_ga_init(G, 3, alpha=8.0, direction=direction)
    for lr in (1e-2, 1e-3):
        first = first_step_update(G, init, lr)
        exact = first_step_update(G, init, lr, exact=True)
        second = lr**2 * init.eta**3 * (G @ init.A.T @ init.B.T @ G)
        assert torch.allclose(exact - first, second, rtol=1e-10, atol=1e-15)
    G2r = gradient_svd(G, 6)
    U, S, V = G2r
    assert torch.allclose(first_step_update(G, init, 1.0), -init.zeta * (U * S) @ V.T, atol=1e-12)


def test_sign_invariance():
    assert run_check("toolkit.sign_invariance")["verdict"] == "holds"


def test_randomized_svd_close_to_exact_on_decaying_spectrum():
    G = spectrum_matrix(200, 150, torch.exp(-torch.arange(150.0) / 4), seed=3)
    ex = lora_ga_init(G, 4, alpha=8.0)
    rnd = lora_ga_init(G, 4, alpha=8.0, svd="randomized", seed=0)
    r1 = alignment_report(G, ex.A, ex.B, ex.eta).rel_residual
    r2 = alignment_report(G, rnd.A, rnd.B, rnd.eta).rel_residual
    assert r1 <= 1e-12 and r2 <= 1e-6
    again = lora_ga_init(G, 4, alpha=8.0, svd="randomized", seed=0)
    assert torch.equal(again.A, rnd.A)  # seeded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    G = spectrum_matrix(24, 16, torch.exp(-torch.arange(16.0) / 3), seed=4, dtype=dtype)
    init = lora_ga_init(G, 2, alpha=4.0)
    assert init.A.dtype == dtype and init.offset.dtype == dtype
    assert alignment_report(G, init.A, init.B, init.eta).rel_residual <= (1e-5 if dtype == torch.float32 else 1e-12)


def test_stable_scale_moments():
    """lora_ga.stable_output: forward moment alpha^2/gamma^2 for every (m, n, r); backward times m/n (seeded MC)."""
    df = stable_scale_report(ms=(32, 128), ns=(32, 128), ranks=(2, 8), alpha=8.0, gamma=4.0, samples=4096, seed=0)
    assert len(df) == 8
    tol = 5 * math.sqrt(2 / (2 * 4096))  # 5 standard errors of the r = 2 Monte Carlo mean
    assert ((df.forward / df.forward_pred - 1).abs() <= tol).all()
    assert ((df.backward / df.backward_pred - 1).abs() <= tol).all()
    assert ((df.forward_pred - 4.0).abs() <= 1e-12).all()  # alpha^2 / gamma^2, independent of m, n, r


def test_split_indices():
    assert split_indices(2, "ArB2r") == ([0, 1], [2, 3])
    assert split_indices(2, "A2rBr") == ([2, 3], [0, 1])
    assert split_indices(2, "ArBr") == ([1, 3], [0, 2])
    a, b = split_indices(3, "random", seed=4)
    assert sorted(a + b) == list(range(6)) and split_indices(3, "random", seed=4) == (a, b)


def test_bad_input():
    G = torch.randn(6, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"r: expected 2r <= min\(m, n\) = 5"):
        lora_ga_init(G, 3, alpha=1.0)
    bad = G.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="G: expected finite"):
        lora_ga_init(bad, 1, alpha=1.0)
    with pytest.raises(ValueError, match="G: expected a non-zero"):
        lora_ga_init(torch.zeros(6, 5), 1, alpha=1.0)
    with pytest.raises(ValueError, match="direction"):
        lora_ga_init(G, 1, alpha=1.0, direction="BrAr")
    with pytest.raises(ValueError, match="scale"):
        lora_ga_init(G, 1, alpha=1.0, scale="huge")
    with pytest.raises(ValueError, match="W0: expected the"):
        lora_ga_init(G, 1, alpha=1.0, scale="weight_svd")
    with pytest.raises(ValueError, match=r"W0: expected shape \(6, 5\)"):
        lora_ga_init(G, 1, alpha=1.0, W0=torch.zeros(5, 6))
    with pytest.raises(ValueError, match="alpha"):
        lora_ga_init(G, 1, alpha=0.0)


# -- half precision (issue 11) ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", ["stable", "gd", "weight_svd"])
def test_half_precision_computed_in_float32(dtype, scale):
    """float16 / bfloat16 G used to end in torch's "linalg_svd_cpu not implemented for 'Half'"; now the
    SVD runs in float32 and A, B, offset come back in G's dtype, equal to the float32 result rounded
    (fails if the half tensor is decomposed directly or the result is left in float32)."""
    gen = torch.Generator().manual_seed(0)
    G32 = torch.randn(24, 16, generator=gen)
    W0 = torch.randn(24, 16, generator=gen)
    G = G32.to(dtype)
    init = lora_ga_init(G, 3, alpha=8.0, scale=scale, W0=W0.to(dtype))
    ref = lora_ga_init(G.float(), 3, alpha=8.0, scale=scale, W0=W0.to(dtype).float())
    for name in ("A", "B", "offset"):
        got = getattr(init, name)
        assert got.dtype == dtype, name
        assert torch.equal(got, getattr(ref, name).to(dtype)), name
    assert init.eta == ref.eta and init.c == ref.c


def test_half_precision_overflow_is_refused():
    """A scale that overflows float16 (max 65504) is refused with the dtype named, not returned as inf."""
    G = torch.randn(16, 12, generator=torch.Generator().manual_seed(1)).half()
    with pytest.raises(ValueError, match="float16"):
        lora_ga_init(G, 2, alpha=1e9, scale="unit")
