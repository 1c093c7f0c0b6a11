"""approx_gradients / random_feature_gradients on batched multi-head instances (issues 13, 15; claims limits.thm3.1, limits.thmA.1).

The batched call must be the per-head loop over ``inst.element(...)`` (each element with the
polynomial the batched call reports for it: ``info.element_range`` and ``info.element_degree``) run in
one pass per degree group: equal gradients after summing shared factors, equal per-element bounds, and the central promise of test_approx.py (every call raises a documented
error or is within its bounds) over random batch shapes and sharing patterns.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import lora_theory as lt
from lora_theory._validate import InvalidArgumentError
from lora_theory.limits.approx import ApproximationError, approx_gradients
from lora_theory.limits.exact import rounding_slack
from lora_theory.limits.random_features import random_feature_gradients

F64 = torch.float64


def batched_instance(*, batch=2, heads=3, L=24, n=5, d=4, r=2, adapt="qkv", attention="self", share_x=True, share_b=True,
                     bound=1.0, beta=0.8, alpha=2.0, seed=0, identical=False, causal=False):
    """A random (batch, heads) instance: X (batch, 1, L, n) when ``share_x`` (else per head), W* and A per head
    (heads, ., .), B (n, r) shared by every element when ``share_b`` (else per head), Y per element.

    ``bound`` scales Q and K so that the largest entry of X W is about ``bound``; ``identical`` repeats one
    head (every element the same), so a shared factor's gradient is exactly E times one element's.
    """
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=F64) * std

    hx = 1 if share_x else heads
    hh = 1 if identical else heads
    bb = 1 if identical else batch
    Xq = rnd(bb, 1 if identical else hx, L, n).expand(batch, hx if not identical else 1, L, n).contiguous()
    Xk = Xq if attention == "self" else rnd(batch, hx, L, n)
    Xv = Xk if attention in ("self", "cross") else rnd(batch, hx, L, n)
    W = {mu: rnd(hh, n, d, std=1 / math.sqrt(n)).expand(heads, n, d).contiguous() for mu in "qkv"}
    A = {mu: rnd(hh, r, d, std=0.5).expand(heads, r, d).contiguous() for mu in adapt}
    B = {mu: rnd(n, r, std=0.5) if share_b else rnd(hh, n, r, std=0.5).expand(heads, n, r).contiguous() for mu in adapt}
    Y = rnd(bb, hh, L, d).expand(batch, heads, L, d).contiguous()
    inst = lt.AttentionLoRAInstance(Xq, Xk, Xv, W["q"], W["k"], W["v"], A, B, alpha, r, beta, Y, attention, causal)
    Q, K, _ = inst.projections()
    s = bound / max(float(Q.abs().max()), float(K.abs().max()))
    Wq = W["q"] * s
    Wk = W["k"] * s
    Bs = {mu: B[mu] * s if mu in "qk" else B[mu] for mu in adapt}
    return inst.replace(Wq=Wq, Wk=Wk, B=Bs)


def per_head_loop(inst, fn):
    """(summed gradients, {element index: (grads, info)}) of ``fn(element, index)`` on every ``inst.element(...)``, the
    gradients of each factor summed over the dims it is shared along (autograd's convention)."""
    out, per = {}, {}
    for idx in itertools.product(*map(range, inst.batch_shape)):
        g, info = fn(inst.element(*idx), idx)
        per[idx] = (g, info)
        for name, v in g.items():
            mu = name[2]
            shape = (inst.A if name[0] == "A" else inst.B)[mu].shape
            lead = shape[:-2]
            key = tuple(i if s != 1 else 0 for i, s in zip(idx[len(idx) - len(lead):], lead))  # the slot this element adds into
            out.setdefault(name, torch.zeros(shape, dtype=v.dtype))
            out[name][key] += v
    return out, per


def element_call(e, idx, info, eps=1e-6):
    """approx_gradients on one element with the polynomial the batched call reports for it (its range, up to the
    rounding of the element's own Cauchy-Schwarz bound, which may differ from the batched one in the last bit)."""
    R = max(float(info.element_range[idx]), lt.score_range_bound(e))
    return approx_gradients(e, eps=eps, R=R, degree=int(info.element_degree[idx]))


LAYOUTS = {
    "self_shared_x_shared_b": {},
    "self_per_head_x_per_head_b": {"share_x": False, "share_b": False},
    "general_qv": {"attention": "general", "adapt": "qv", "share_x": False},
    "cross_rect_n8_d3": {"attention": "cross", "n": 8, "d": 3},
    "one_batch_many_heads": {"batch": 1, "heads": 4},
    "qk_only_rect_n3_d5": {"adapt": "qk", "n": 3, "d": 5, "r": 2},
    "causal_self": {"causal": True, "L": 30},
    "causal_general_qv": {"causal": True, "attention": "general", "adapt": "qv", "share_b": False},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batched_equals_per_head_loop(layout):
    """issue 13 / 15: one batched call = the loop over inst.element(...) with each element's polynomial (R, degree):
    gradients equal to float64 rounding after summing shared factors (X and B shared by heads, per-head X and
    B, general and cross attention, rectangular n != d), and each element's bound equals the single-head
    call's bound. Fails on: a wrong sum over a shared factor (e.g. a mean, or only the first element), an
    element's moments mixed with another's (a wrong reshape/transpose of the (k, E, b) features), any
    per-element quantity taken over the whole batch (the key statistics, the rounding length n_sum)."""
    inst = batched_instance(**LAYOUTS[layout])
    g, info = approx_gradients(inst, eps=1e-6)
    assert info.valid and info.batch_shape == inst.batch_shape
    assert info.element_R.shape == inst.batch_shape and info.element_min_normalizer.shape == inst.batch_shape
    assert info.R == pytest.approx(float(info.element_R.max()), rel=1e-12) and info.degree == int(info.element_degree.max())
    assert np.all(info.element_range >= info.element_R)
    loop, per = per_head_loop(inst, lambda e, idx: element_call(e, idx, info))
    assert set(g) == set(loop)
    for name in g:
        assert g[name].shape == loop[name].shape
        scale = float(loop[name].abs().max())
        assert float((g[name] - loop[name]).abs().max()) <= 1e-12 * scale, name
        for idx, (_, ie) in per.items():
            assert info.element_error_bound[name][idx] == pytest.approx(ie.error_bound[name], rel=1e-9), (name, idx)
    for idx, (_, ie) in per.items():
        assert info.element_min_normalizer[idx] == pytest.approx(ie.min_normalizer, rel=1e-12)
        assert info.element_R[idx] == pytest.approx(lt.score_range_bound(inst.element(*idx)), rel=1e-12)


def test_batched_equals_exact_within_bound():
    """The batched result against exact_gradients on the same batched instance (an independent algorithm):
    within info.error_bound for every factor, shared or not."""
    inst = batched_instance(batch=2, heads=3, L=40, share_b=True)
    g, info = approx_gradients(inst, eps=1e-4)
    ex = lt.exact_gradients(inst)
    for name in ex:
        err = float((g[name] - ex[name]).abs().max())
        assert 0 < err <= info.error_bound[name], (name, err, info.error_bound[name])


def test_shared_factor_bound_is_the_sum_of_element_bounds():
    """A factor shared by E identical elements: its gradient is exactly E times one element's, and so must its
    bound be (the entrywise sum of the per-element bounds). Fails when the bound of a summed factor is the
    largest per-element bound (or any per-element figure) instead of their sum: that would be E times too small."""
    inst = batched_instance(batch=2, heads=3, identical=True, share_b=True)
    E = math.prod(inst.batch_shape)
    g, info = approx_gradients(inst, eps=1e-6)
    one, i1 = approx_gradients(inst.element(0, 0), eps=1e-6)
    for mu in inst.adapt:
        name = f"B_{mu}"  # B (n, r) is shared by all E elements
        assert torch.allclose(g[name], E * one[name], rtol=1e-12, atol=0)
        assert np.allclose(info.element_error_bound[name], i1.error_bound[name], rtol=1e-9)
        assert info.error_bound[name] >= E * i1.error_bound[name] * (1 - 1e-9)
        assert info.error_bound[name] <= E * i1.error_bound[name] * (1 + 1e-6)  # + only the longer sum's rounding
        name = f"A_{mu}"  # A (heads, r, d): summed over the batch dimension only
        assert info.error_bound[name] >= inst.batch_shape[0] * i1.error_bound[name] * (1 - 1e-9)


def test_batch_shape_one_is_the_single_head():
    """A (1, 1) batch gives the single head's gradients (squeezed) and bounds."""
    inst = lt.make_instance(32, 4, 2, bound=1.0, adapt="qkv")
    b = inst.replace(Xq=inst.Xq[None, None], Xk=inst.Xq[None, None], Xv=inst.Xq[None, None], Y=inst.Y[None, None])
    g1, i1 = approx_gradients(inst)
    gb, ib = approx_gradients(b)
    for name in g1:
        assert torch.allclose(gb[name], g1[name], rtol=1e-12, atol=0)
        assert ib.error_bound[name] == pytest.approx(i1.error_bound[name], rel=1e-9)
    assert ib.degree == i1.degree and ib.element_R.shape == (1, 1)


@pytest.mark.parametrize("block_size", [None, 7])
def test_causal_within_bound_and_masked(block_size):
    """Causal instances (prefix moments + a masked diagonal block): within the bound of the causal exact
    gradient, independent of the block size (blocks of 7 rows cut through the diagonal blocks), and far from
    the unmasked gradient (so a dropped or shifted mask, e.g. j < i or keys of the next block, fails)."""
    inst = batched_instance(batch=2, heads=2, L=45, share_b=True, causal=True)
    g, info = approx_gradients(inst, eps=1e-6, block_size=block_size)
    ex = lt.exact_gradients(inst)
    unmasked = lt.exact_gradients(inst.replace(causal=False))
    g_ref, _ = approx_gradients(inst, eps=1e-6, block_size=45)  # one block: the diagonal block is the whole matrix
    for name in ex:
        err = float((g[name] - ex[name]).abs().max())
        assert err <= info.error_bound[name], (name, err, info.error_bound[name])
        assert float((unmasked[name] - ex[name]).abs().max()) > 100 * info.error_bound[name]
        assert float((g[name] - g_ref[name]).abs().max()) <= 1e-12 * float(ex[name].abs().max())
    gr, _ = random_feature_gradients(inst, 256, seed=1)
    for name in ex:  # the random-feature peer runs the same causal driver: closer to the masked than to the unmasked gradient
        assert float((gr[name] - ex[name]).abs().max()) < float((gr[name] - unmasked[name]).abs().max())


def test_causal_moment_source_takes_consecutive_blocks():
    """A causal MomentSource accumulates prefix sums: a skipped block is refused, not silently wrong."""
    from lora_theory.limits.lowrank import MomentSource

    Z = torch.randn(10, 2, dtype=F64)
    M = torch.rand(3, 10, dtype=F64) + 0.1
    src = MomentSource(Z, lambda a, b: M[:, a:b], lambda a, b: M[:, a:b], block=4, causal=True)
    src.moments(0, 4)
    with pytest.raises(InvalidArgumentError, match="consecutive"):
        src.moments(8, 10)


def test_each_head_runs_at_its_own_degree():
    """Heads with 1x, 2x, 4x score ranges: each element runs at the degree its own range needs (degree groups,
    not the worst head's degree for all), the batch equals the per-head loop at those degrees, and every head
    is certified. Fails when one polynomial is forced on all heads (info.element_degree would all be the max),
    or when a group's results land in another group's elements (the reassembly by index)."""
    inst = batched_instance(batch=2, heads=3, bound=1.0, share_b=True)
    Wq = inst.Wq.clone()
    Wq[1] *= 2.0
    Wq[2] *= 4.0
    inst = inst.replace(Wq=Wq)
    g, info = approx_gradients(inst, eps=1e-6)
    own = np.array([[approx_gradients(inst.element(b, h), eps=1e-6)[1].degree for h in range(3)] for b in range(2)])
    assert np.array_equal(info.element_degree, own) and len(set(own.ravel().tolist())) > 1
    assert info.degree == own.max()
    loop, per = per_head_loop(inst, lambda e, idx: element_call(e, idx, info))
    for name in g:
        assert float((g[name] - loop[name]).abs().max()) <= 1e-12 * float(loop[name].abs().max()), name
        for idx, (_, ie) in per.items():
            assert info.element_error_bound[name][idx] == pytest.approx(ie.error_bound[name], rel=1e-9), (name, idx)
    ex = lt.exact_gradients(inst)
    for name in ex:
        assert float((g[name] - ex[name]).abs().max()) <= info.error_bound[name]


def test_random_features_batched_equals_per_head_loop():
    """random_feature_gradients on a batch = the loop with the same seed (the same directions for every element)."""
    inst = batched_instance(batch=2, heads=2, share_b=True, attention="cross")
    g, info = random_feature_gradients(inst, 32, seed=5)
    loop, _ = per_head_loop(inst, lambda e, idx: random_feature_gradients(e, 32, seed=5))
    for name in g:
        assert float((g[name] - loop[name]).abs().max()) <= 1e-12 * float(loop[name].abs().max()), name
    assert info.element_R.shape == inst.batch_shape and info.batch_shape == inst.batch_shape


def test_plan_of_a_batched_instance():
    """approx_plan on a batch: the worst element's R and degree (the largest approx_gradients runs), and flops that
    are the sum over the elements, each at the degree approx_gradients runs it at (info.element_degree). Fails when
    the plan counts every element at the worst degree, or forgets the elements."""
    inst = batched_instance(batch=2, heads=3, L=32)
    Wq = inst.Wq.clone()
    Wq[2] *= 3.0  # the third head needs a higher degree
    inst = inst.replace(Wq=Wq)
    plan = lt.approx_plan(inst, 1e-6)
    _, info = approx_gradients(inst, eps=1e-6)
    assert len(set(info.element_degree.ravel().tolist())) > 1
    assert plan.batch == 6 and plan.R == pytest.approx(info.R) and plan.degree == info.degree and plan.k == info.rank
    per = sum(lt.limits.plan.approx_flops(inst.L, inst.d, math.comb(int(g) + inst.d, inst.d), len(inst.adapt), inst.n)
              for g in info.element_degree.ravel())
    assert plan.approx_flops == pytest.approx(per, rel=1e-12)
    one = lt.approx_plan(inst.element(0, 0), 1e-6)
    assert plan.exact_flops == pytest.approx(6 * one.exact_flops) and plan.approx_bytes > one.approx_bytes


@st.composite
def batched_cases(draw):
    """Small batched instances with random batch shapes, sharing patterns, score ranges and eps."""
    kw = {"batch": draw(st.integers(1, 2)), "heads": draw(st.integers(1, 3)), "L": draw(st.integers(1, 20)),
          "n": draw(st.integers(1, 5)), "d": draw(st.integers(1, 4)), "adapt": draw(st.sampled_from(("qv", "qkv", "k"))),
          "attention": draw(st.sampled_from(("self", "cross", "general"))), "share_x": draw(st.booleans()),
          "share_b": draw(st.booleans()), "bound": 10 ** draw(st.floats(-1.5, 0.9)), "beta": draw(st.sampled_from((0.5, 1.0))),
          "seed": draw(st.integers(0, 2**16)), "causal": draw(st.booleans())}
    kw["r"] = draw(st.integers(1, max(kw["n"], kw["d"])))
    eps = 10 ** draw(st.floats(-9, -1))
    compute_dtype = draw(st.sampled_from((F64, torch.float32)))
    block_size = draw(st.sampled_from((None, 3, 8)))  # several query blocks: the causal prefix sums and the bound's per-block sums
    return kw, {"eps": eps, "compute_dtype": compute_dtype, "max_features": 20_000, "block_size": block_size}


@settings(max_examples=max(30, 2 * settings.default.max_examples), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=batched_cases())
def test_batched_certified_or_refused(case):
    """THE central promise on batched instances (causal or not): a documented error, or gradients within
    info.error_bound (every factor, shared or not, vs exact_gradients in float64), and every unshared factor's
    element within its own element bound. Fails on a bound that is not summed over a shared factor, a per-element bound
    computed from another element's moments, or a degree that certifies only the first head."""
    kw, kwargs = case
    try:
        inst = batched_instance(**kw)
    except InvalidArgumentError:
        event("invalid instance")
        return
    try:
        g, info = approx_gradients(inst, **kwargs)
    except (ApproximationError, InvalidArgumentError) as e:
        assert str(e)
        event(f"raised {type(e).__name__}")
        return
    note(f"{inst!r} degree {info.degree} R {info.R:.3g} bounds {info.error_bound}")
    assert info.valid
    ex = lt.exact_gradients(inst)
    slack = {}  # the exact reference's own rounding, summed over the elements
    for idx in itertools.product(*map(range, inst.batch_shape)):
        for name, v in rounding_slack(inst.element(*idx)).items():
            slack[name] = slack.get(name, 0.0) + v
    for name in ex:
        err = float((g[name] - ex[name]).abs().max())
        note(f"{name}: err {err:.3e} bound {info.error_bound[name]:.3e}")
        assert err <= info.error_bound[name] + slack[name], name
        factor = (inst.A if name[0] == "A" else inst.B)[name[2]]
        if tuple(factor.shape[:-2]) == inst.batch_shape:  # not shared: each element's own gradient is returned
            for idx in itertools.product(*map(range, inst.batch_shape)):
                e_err = float((g[name][idx] - ex[name][idx]).abs().max())
                assert e_err <= info.element_error_bound[name][idx] + slack[name], (name, idx)
    event("certified")


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_batched_matches_cpu(causal):
    """The batched (and causal) driver on CUDA: the same degrees and gradients as on the CPU, within the CPU's bound
    (unmeasured without a GPU: skipped)."""
    inst = batched_instance(batch=2, heads=3, L=300, share_b=True, causal=causal)
    g_cpu, info_cpu = approx_gradients(inst, eps=1e-6)
    g_gpu, info_gpu = approx_gradients(inst.to(device="cuda"), eps=1e-6)
    assert info_gpu.valid and np.array_equal(info_gpu.element_degree, info_cpu.element_degree)
    for name in g_cpu:
        assert g_gpu[name].device.type == "cuda"
        assert float((g_gpu[name].cpu() - g_cpu[name]).abs().max()) <= info_cpu.error_bound[name], name
