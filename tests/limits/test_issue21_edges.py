"""Regression tests for issue 21 (never silently wrong, round two): cases 1-7, one test per case.

Each test states the case as the issue filed it and fails on the code before the fix:
1. underflow (float16 output, subnormal gradients in float32/float64) certified but wrong;
2. float16 overflow to inf returned valid;
3. compute_dtype=float32 with cancellation in W = W* + (alpha/r) B A;
4. batched, shared B, caller's R= / degree=: per-head shared-factor gradient;
5. requires_grad inputs: raw RuntimeError after the whole computation;
6. the memory budget not enforced when n >> d;
7. approx_plan off by > 2x on causal / n != d / batched, and OverflowError at d = 128, R = 1e4.
Cases 8 and 9 (the CLI) are in tests/cli/test_fuzz_cli.py. Claims ``limits.thm3.1``, ``limits.thmA.1``.
"""
from __future__ import annotations

import math

import pytest
import torch

import lora_theory as lt
from lora_theory.limits.approx import ApproximationError, approx_gradients
from lora_theory import strategies as lts
from lora_theory.limits.plan import approx_bytes, approx_plan

from .mp_reference import max_abs_error, mp_gradients


def _check(inst: lt.AttentionLoRAInstance, **kw) -> lt.ApproxInfo:
    """valid implies every gradient within info.error_bound of the exact gradient (mpmath, no reference slack)."""
    g, info = approx_gradients(inst, on_invalid="flag", **kw)
    if not info.valid:
        assert info.reason
        return info
    ref = mp_gradients(inst)
    for k, r in ref.items():
        assert tuple(g[k].shape) == r.shape, k
        err = max_abs_error(g[k], r)
        assert err <= info.error_bound[k], (k, err, info.error_bound[k])
    return info


def _scaled_v(inst: lt.AttentionLoRAInstance, s: float) -> lt.AttentionLoRAInstance:
    """V and Y scaled by s (W_V* and B_V): the gradients scale by s or s^2 and become subnormal for small s."""
    return inst.replace(Wv=inst.Wv * s, Y=inst.Y * s, B={k: (v * s if k == "v" else v) for k, v in inst.B.items()})


def test_case1_float16_underflow_is_in_the_bound():
    """Case 1: float16, bound=0.01, eps=1e-6: gradients ~5e-7 are float16 subnormals; the cast's absolute
    error (half the subnormal spacing, 3e-8) must be in the bound (it was 3e-10, the error 2.9e-8)."""
    inst = lt.make_instance(256, 8, 2, adapt="qkv", bound=0.01, seed=0, dtype=torch.float16)
    info = _check(inst, eps=1e-6)
    assert info.valid
    assert min(info.error_bound.values()) >= torch.finfo(torch.float16).tiny * torch.finfo(torch.float16).eps


@pytest.mark.parametrize("dtype, s", [(torch.float32, 2.0**-70), (torch.float64, 2.0**-540)])
def test_case1_subnormal_gradients_in_float32_and_float64(dtype, s):
    """Case 1, float32 / float64: V and Y scaled so the gradients are subnormal; the bound is never 0 below an error."""
    inst = _scaled_v(lt.make_instance(32, 4, 2, adapt="qkv", bound=1.0, seed=0), s).to(dtype=dtype)
    info = _check(inst, eps=1e-3)
    assert info.valid and all(b > 0 for b in info.error_bound.values())


def test_case2_float16_overflow_is_not_valid():
    """Case 2: a float16 gradient that overflows to inf in the cast back is never returned valid."""
    big = lts.edge_instance(L=6, dtype=torch.float16, scales={"Y": 13, "Wv": 4})  # gradients past float16's 65504
    g, info = approx_gradients(big, eps=1e-3, on_invalid="flag")
    assert not all(bool(torch.isfinite(v).all()) for v in g.values())
    assert not info.valid and "non-finite" in info.reason
    with pytest.raises(ApproximationError, match="non-finite"):
        approx_gradients(big, eps=1e-3)


@pytest.mark.parametrize("L, n", [(8, 4), (16, 8)])
def test_case3_float32_cancellation_in_W(L, n):
    """Case 3: B times 1e6 and W* = W - (alpha/r) B A (W unchanged): forming W in float32 costs u |W*|, now in the
    bound (before: certified with the error 46x the bound at L = 8, 15x at L = 16)."""
    canc = lts.edge_instance(L=L, n=n, d=4, cancel=6.0, adapt="qkv")
    for cd in (torch.float32, torch.float64):
        _check(canc, eps=1e-3, compute_dtype=cd)


@pytest.mark.parametrize("hint", [{"R": 10.0}, {"degree": 8}])
def test_case4_batched_shared_b_with_a_hint(hint):
    """Case 4: heads sharing B, a caller's R= or degree=: the shared factor's gradient is (n, r), the sum over heads
    (it came back per head, (heads, n, r)), within the bound of the sum."""
    inst = lts.edge_instance(batch=1, heads=3, L=16, n=5, d=4, share_b=True, adapt="qv")
    g, info = approx_gradients(inst, eps=1e-2, **hint)
    ref = mp_gradients(inst)
    for k, r in ref.items():
        assert tuple(g[k].shape) == r.shape, k
        assert max_abs_error(g[k], r) <= info.error_bound[k], k
    assert tuple(g["B_q"].shape) == (5, 2)


@pytest.mark.parametrize("method", ["approx", "random_features"])
def test_case5_requires_grad_is_detached(method):
    """Case 5: an nn.Parameter B: both low-rank methods detach it (documented) and return what they return without it."""
    inst = lt.make_instance(32, 4, 2, adapt="qv", bound=1.0, seed=0)
    p = inst.replace(B={k: torch.nn.Parameter(v.clone()) for k, v in inst.B.items()})
    fn = (lambda i: approx_gradients(i, eps=1e-3)) if method == "approx" else (lambda i: lt.random_feature_gradients(i, 64, seed=0))
    g1, _ = fn(p)
    g0, _ = fn(inst)
    for k in g0:
        assert not g1[k].requires_grad and torch.equal(g1[k], g0[k]), k


def test_case6_budget_enforced_when_n_much_larger_than_d():
    """Case 6: L = 64, n = 256, d = 32, memory_budget = 1e9: the bound's (m^2 P) and (m^2 d (d + n)) tensors and n != d are
    planned, and the budget refuses before allocating (it tried 4 GiB)."""
    inst = lts.edge_instance(L=64, n=256, d=32, r=2, adapt="qkv", bound=0.05)
    with pytest.raises(ApproximationError, match="memory budget"):
        approx_gradients(inst, eps=1e-1, memory_budget=1e9)
    assert approx_bytes(64, 32, 1, m=256, n=256) > 1e9


def test_case7_plan_of_a_huge_shape_is_finite_or_refused():
    """Case 7: approx_plan(L=4096, d=128, R=1e4) raised OverflowError (k does not fit a float): now a finite plan of inf bytes."""
    plan = approx_plan(L=4096, d=128, R=1e4)
    assert not plan.certifiable and plan.faster == "exact" and plan.k > 10**300
    assert plan.approx_bytes == math.inf and math.isfinite(plan.exact_bytes)
