"""Tests for lora_theory.limits.approx (claims limits.thm3.1, limits.thmA.1, limits.thm4.1_regime)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

import lora_theory as lt
from lora_theory import strategies as lts
from lora_theory.limits.approx import ApproximationError, approx_gradients, score_range_bound
from lora_theory.tolerances import tolerance


@given(inst=lts.instances(max_d=4, bound=st.sampled_from((0.3, 0.7, 1.2))), eps=st.sampled_from((1e-3, 1e-6)), method=st.sampled_from(("chebyshev", "taylor")))
def test_error_within_bound(inst, eps, method):
    """limits.thm3.1 / limits.thmA.1: every gradient's error is within the computed a-priori bound."""
    ex = lt.exact_gradients(inst)
    g, info = approx_gradients(inst, eps=eps, method=method)
    assert info.valid and info.poly_rel_error <= eps
    assert info.rank == math.comb(info.degree + inst.d, inst.d)
    for k in ex:
        err = float((g[k] - ex[k]).abs().max())
        note(f"{k}: err {err:.2e} bound {info.error_bound[k]:.2e}")
        assert err <= info.error_bound[k] + 1e-12 * max(1.0, float(ex[k].abs().max()))


@pytest.mark.parametrize("adapt", ["qv", "qkv"])
@pytest.mark.parametrize("attention", ["self", "cross"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_approx_matches_exact(adapt, attention, dtype):
    inst = lt.make_instance(300, 4, 2, adapt=adapt, attention=attention, bound=1.5, beta=0.25, seed=3, dtype=dtype)
    ex = lt.exact_gradients(inst.to(dtype=torch.float64))
    # float32 cannot certify 1e-5: the feature sum's rounding alone is ~k u sum|c_j| e^R (see ExpPolynomial.feature_rounding)
    g, info = approx_gradients(inst, eps=1e-5 if dtype == torch.float64 else 1e-3)
    assert set(g) == set(ex) and all(v.dtype == dtype for v in g.values())
    for k in ex:
        # the approximation's a-priori bound plus the dtype's evaluation tolerance (the same
        # allowance the exact float32 gradient gets against float64)
        allowed = info.error_bound[k] + tolerance(dtype) * float(ex[k].abs().max())
        assert float((g[k].double() - ex[k]).abs().max()) <= allowed, k
        if dtype == torch.float64:
            assert lt.max_rel_error(g[k], ex[k]) <= 1e-4, k


def test_score_range_bound_covers_scores():
    inst = lt.make_instance(200, 5, 2, adapt="qkv", bound=2.0, seed=1)
    assert score_range_bound(inst) >= lt.norm_bounds(inst)["R"]


def test_hard_instances_past_threshold_flagged():
    """limits.thm4.1_regime: past sqrt(ln L) the requested eps cannot be certified: raise or flag."""
    L = 256
    easy = lt.hard_instance(L, 4, 2, kappa=0.3)
    _, info = approx_gradients(easy, eps=1e-3)
    assert info.valid
    hard = lt.hard_instance(L, 4, 2, kappa=2.0)
    with pytest.raises(ApproximationError, match="cannot certify"):
        approx_gradients(hard, eps=1e-3, max_degree=20)
    g, info = approx_gradients(hard, eps=1e-3, max_degree=20, on_invalid="flag")
    assert not info.valid and "eps" in info.reason and set(g) == {"A_q", "B_q", "A_v", "B_v"}


def test_error_explodes_at_fixed_degree():
    errs = []
    for gamma in (0.5, 3.0):
        inst = lt.hard_instance(256, 4, 2, bound=gamma)
        ex = lt.exact_gradients(inst)
        g, _ = approx_gradients(inst, degree=8, on_invalid="flag")
        errs.append(max(lt.max_rel_error(g[k], ex[k]) for k in ex))
    assert errs[1] > 1e6 * errs[0]


def test_never_forms_L_by_L():
    """At L = 2^14 one float64 L x L matrix is 2 GiB; the approximation must stay far below."""
    from lora_theory._memory import peak_memory_bytes

    mem = peak_memory_bytes("import lora_theory as lt\nfrom lora_theory.limits.approx import approx_gradients\ninst = lt.make_instance(16384, 4, 2, adapt='qkv', bound=1.0, beta=0.25)",
                            "approx_gradients(inst, eps=1e-3)")
    assert mem["peak_bytes"] < 256 * 2**20, mem


def test_bad_input():
    inst = lt.make_instance(8, 3, 1)
    for kwargs, match in [({"eps": 0.0}, "eps"), ({"eps": 2.0}, "eps"), ({"method": "remez"}, "method"), ({"on_invalid": "ignore"}, "on_invalid"), ({"degree": -1}, "degree")]:
        with pytest.raises(ValueError, match=match):
            approx_gradients(inst, **kwargs)
    with pytest.raises(ValueError, match="inst"):
        approx_gradients(None)


@pytest.mark.gpu
@pytest.mark.parametrize("adapt", ["qv", "qkv"])
@pytest.mark.parametrize("attention", ["self", "cross"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(adapt, attention, dtype):
    inst = lt.make_instance(600, 4, 2, adapt=adapt, attention=attention, bound=1.5, beta=0.25, seed=4, dtype=dtype)
    eps = 1e-5 if dtype == torch.float64 else 1e-3
    g_cpu, info_cpu = approx_gradients(inst, eps=eps)
    g_gpu, info_gpu = approx_gradients(inst.to(device="cuda"), eps=eps)
    assert info_gpu.valid and info_gpu.degree == info_cpu.degree
    for k in g_cpu:
        assert g_gpu[k].device.type == "cuda" and g_gpu[k].dtype == dtype
        assert lt.max_rel_error(g_gpu[k].cpu(), g_cpu[k]) <= tolerance(dtype), k


@pytest.mark.gpu
def test_never_forms_L_by_L_cuda():
    """At L = 2^16 one float32 L x L matrix is 16 GiB; the allocator's exact peak must stay below 1 GiB."""
    from lora_theory._memory import PeakMemory

    inst = lt.make_instance(1 << 16, 4, 2, adapt="qkv", bound=1.0, beta=0.25, dtype=torch.float32, device="cuda")
    with PeakMemory(cuda=True) as pm:
        _, info = approx_gradients(inst, eps=1e-3)
    assert info.valid and pm.peak_bytes < 2**30, pm.peak_bytes


@given(inst=lts.instances(max_d=4, bound=st.sampled_from((0.3, 1.0, 2.0))))
def test_normalizer_lower_bound(inst):
    """D~_i = sum_j P(t_ij) >= (1 - delta) sum_j e^{S_ij} >= (1 - delta) L e^{-R}: info.min_normalizer obeys it."""
    _, info = approx_gradients(inst, eps=1e-3)
    assert info.min_normalizer >= (1 - info.poly_rel_error) * inst.L * math.exp(-info.R) * (1 - 1e-12)
