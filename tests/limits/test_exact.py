"""Tests for lora_theory.limits.exact: closed form vs autograd, blocking, invariants, bad input.

Claims: limits.lemma3.1, limits.lemma3.2, limits.grad_closed_form, toolkit.grad_blocked.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, note
from hypothesis import strategies as st

import lora_theory as lt
from lora_theory import strategies as lts
from lora_theory.tolerances import max_rel_error, tolerance


def _note(msg: str) -> None:
    try:
        note(msg)
    except Exception:  # outside a hypothesis test the assertion message says it all
        pass


def _assert_close(g: dict, ref: dict, rtol: float, floor_frac: float = 1e-3) -> None:
    """Max-entry error of each gradient relative to max(|ref_k|, 1e-3 max_j |ref_j|).

    The floor matters only where a gradient vanishes mathematically (L = 1: dL/dS = 0, so
    every Q/K gradient is zero and the closed form returns rounding-level values of
    q - rho ~ 1e-16): those are then judged against the scale of the whole gradient set.
    """
    assert g.keys() == ref.keys()
    floor = floor_frac * max(float(v.abs().max()) for v in ref.values())
    for k in ref:
        assert g[k].shape == ref[k].shape, k
        den = max(float(ref[k].abs().max()), floor)
        err = float((g[k].double() - ref[k].double()).abs().max()) / den if den > 0 else float((g[k] != 0).any()) * float("inf")
        if err > rtol:
            _note(f"{k}: rel err {err:.2e}")
        assert err <= rtol, f"{k}: relative error {err:.2e} > {rtol:.0e}"


@given(inst=lts.instances(), block=st.integers(1, 50))
@example(inst=lt.make_instance(1, 2, 1), block=1)  # a single token
@example(inst=lt.make_instance(20, 8, 8, adapt="qkv", attention="cross", beta=0.5), block=3)  # r = d
def test_exact_equals_autograd(inst, block):
    """limits.grad_closed_form: the blocked closed form equals autograd (float64)."""
    note(repr(inst))
    g = lt.exact_gradients(inst, block_size=block)
    _assert_close(g, lt.autograd_gradients(inst), tolerance(torch.float64))
    _assert_close(g, lt.autograd_gradients(inst, method="dense"), tolerance(torch.float64))


@given(inst=lts.instances(dtype=torch.float32, bound=st.sampled_from((0.5, 1.0, 3.0))))
def test_exact_float32_matches_float64(inst):
    """float32 blocked gradients agree with float64 autograd to the float32 tolerance."""
    ref = lt.autograd_gradients(inst.to(dtype=torch.float64))
    g = lt.exact_gradients(inst, block_size=7)
    assert all(v.dtype == torch.float32 for v in g.values())
    # float32 rounding in q - rho is absolute at the scale of the whole gradient set (it does
    # not shrink with a gradient that vanishes mathematically, e.g. dL/dW_Q at L = 1), so the
    # float32 comparison is relative to the largest gradient of the set (floor_frac = 1).
    _assert_close({k: v.double() for k, v in g.items()}, ref, tolerance(torch.float32), floor_frac=1.0)


@pytest.mark.parametrize("adapt", ["qv", "qkv"])
@pytest.mark.parametrize("attention", ["self", "cross"])
def test_finite_differences(adapt, attention):
    """Central differences of the loss in a few random directions match <grad, direction>."""
    inst = lt.make_instance(7, 4, 2, adapt=adapt, attention=attention, beta=0.8, bound=1.5, seed=3)
    g = lt.exact_gradients(inst)
    gen = torch.Generator().manual_seed(0)
    h = 1e-6
    for _ in range(3):
        dirs = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in g.items()}

        def shifted(t):
            A = {mu: inst.A[mu] + t * dirs[f"A_{mu}"] for mu in inst.adapt}
            B = {mu: inst.B[mu] + t * dirs[f"B_{mu}"] for mu in inst.adapt}
            return float(lt.loss(inst.replace(A=A, B=B)))

        fd = (shifted(h) - shifted(-h)) / (2 * h)
        an = sum(float((g[k] * dirs[k]).sum()) for k in g)
        assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), (fd, an)


@given(inst=lts.instances(max_L=60), block=st.integers(1, 61))
def test_blocked_equals_unblocked(inst, block):
    """toolkit.grad_blocked: any block size gives the one-block result."""
    dense = lt.exact_gradients(inst, block_size=inst.L)
    _assert_close(lt.exact_gradients(inst, block_size=block), dense, tolerance(torch.float64))
    assert abs(float(lt.loss(inst, block_size=block)) - float(lt.loss(inst, block_size=inst.L))) <= 1e-12 * max(1.0, float(lt.loss(inst)))


def test_default_block_size_bounded():
    assert lt.default_block_size(1) == 1
    assert lt.default_block_size(1024) == 256
    assert lt.default_block_size(10) == 10
    assert lt.default_block_size(1 << 16) * (1 << 16) <= 1 << 20  # 4 MiB float32 pieces at L = 2^16
    assert lt.default_block_size(1 << 30) == 16


def test_lemma31_score_gradient():
    """limits.lemma3.1: p = f o q - diag(rho) f equals autograd's dL/dS; rows of p sum to 0."""
    for seed, (adapt, attention) in enumerate([("qv", "self"), ("qkv", "cross")]):
        inst = lt.make_instance(13, 5, 2, adapt=adapt, attention=attention, beta=1.3, seed=seed)
        t = lt.dense_terms(inst)
        S = t["S"].clone().requires_grad_(True)
        _, _, V = inst.projections()
        (dS,) = torch.autograd.grad(0.5 * ((torch.softmax(S, 1) @ V - inst.Y) ** 2).sum(), S)
        assert max_rel_error(t["p"], dS) <= tolerance(torch.float64)
        assert torch.allclose(t["p"].sum(1), torch.zeros(inst.L, dtype=torch.float64), atol=1e-13)
        assert max_rel_error(t["rho"], (t["c"] * t["O"]).sum(1)) <= tolerance(torch.float64)


def test_lora_chain_matches_autograd():
    """limits.lemma3.2: chaining autograd's dL/dW through alpha/r B A gives autograd's dL/dA, dL/dB."""
    inst = lt.make_instance(11, 6, 3, adapt="qkv", attention="cross", alpha=5.0, seed=2)
    G = lt.weight_gradients(inst)
    _assert_close(lt.lora_chain(inst, G), lt.autograd_gradients(inst), tolerance(torch.float64))


@given(inst=lts.instances(), shift=st.floats(-5, 5))
def test_row_shift_invariance(inst, shift):
    """Adding a constant to every score row (through a constant input column) changes no gradient.

    With X_K's last column all ones, changing the last row of W_K* by Delta adds beta Q_i . Delta to
    row i of S. Rows of p sum to zero, so G_Q = beta X_Q^T p K is unchanged too.
    """
    d = inst.d
    Xk = inst.Xk.clone()
    Xk[:, -1] = 1.0
    ties = {"Xk": Xk, "Xv": Xk if inst.attention in ("self", "cross") else inst.Xv, "Xq": Xk if inst.attention == "self" else inst.Xq}
    base = inst.replace(**ties)
    Wk = base.Wk.clone()
    gen = torch.Generator().manual_seed(1)
    Wk[-1] += shift * torch.randn(d, generator=gen, dtype=Wk.dtype)
    moved = base.replace(Wk=Wk)
    g0, g1 = lt.exact_gradients(base), lt.exact_gradients(moved)
    for k in g0:  # G_K = beta X_K^T p^T Q is unchanged as well: p and Q do not move
        assert torch.allclose(g0[k], g1[k], rtol=1e-9, atol=1e-9 * max(1.0, float(g0[k].abs().max()))), k
    assert abs(float(lt.loss(base)) - float(lt.loss(moved))) <= 1e-10 * max(1.0, float(lt.loss(base)))


@given(inst=lts.instances(), t=st.sampled_from((0.25, 2.0, 7.0)))
def test_alpha_b_factor_exchange(inst, t):
    """alpha -> t alpha, B -> B / t leaves W, the loss, G = dL/dW and dL/dA unchanged; dL/dB scales by t."""
    moved = inst.replace(alpha=inst.alpha * t, B={mu: b / t for mu, b in inst.B.items()})
    rtol = tolerance(torch.float64)
    _assert_close(lt.weight_gradients(moved), lt.weight_gradients(inst), rtol)
    g0, g1 = lt.exact_gradients(inst), lt.exact_gradients(moved)
    _assert_close(g1, {k: (t * v if k.startswith("B_") else v) for k, v in g0.items()}, rtol)


@given(inst=lts.instances(lora_init=True))
def test_lora_init_zero_A_gradient(inst):
    """With B = 0 (standard LoRA init), dL/dA = (alpha/r) B^T G = 0 exactly, and dL/dB is not all zero."""
    g = lt.exact_gradients(inst)
    for mu in inst.adapt:
        assert torch.count_nonzero(g[f"A_{mu}"]) == 0
    if inst.L > 1:
        assert any(torch.count_nonzero(g[f"B_{mu}"]) for mu in inst.adapt)


def test_generic_instance_all_gradients_nonzero():
    inst = lt.make_instance(16, 6, 2, adapt="qkv")
    for k, v in lt.exact_gradients(inst).items():
        assert float(v.abs().max()) > 1e-6, k


@pytest.mark.parametrize("adapt", ["qv", "qkv"])
def test_large_scores_finite_and_exact(adapt):
    """Scores of order 1e3: the shifted softmax keeps every gradient finite and exact."""
    inst = lt.make_instance(40, 8, 2, adapt=adapt, bound=30.0, seed=1)
    assert lt.norm_bounds(inst)["R"] > 500
    g = lt.exact_gradients(inst, block_size=6)
    assert all(bool(torch.isfinite(v).all()) for v in g.values())
    _assert_close(g, lt.autograd_gradients(inst, method="dense"), tolerance(torch.float64))
    g32 = lt.exact_gradients(inst.to(dtype=torch.float32))
    assert all(bool(torch.isfinite(v).all()) for v in g32.values())


def test_hard_instance_gradients():
    inst = lt.hard_instance(64, 6, 2, kappa=1.5)
    _assert_close(lt.exact_gradients(inst), lt.autograd_gradients(inst), tolerance(torch.float64))


def test_bad_input():
    inst = lt.make_instance(8, 4, 2)
    with pytest.raises(ValueError, match="inst"):
        lt.exact_gradients("not an instance")
    with pytest.raises(ValueError, match="block_size"):
        lt.exact_gradients(inst, block_size=0)
    with pytest.raises(ValueError, match="method"):
        lt.autograd_gradients(inst, method="flash")
    with pytest.raises(ValueError, match="L <= 4096"):
        lt.dense_terms(lt.make_instance(4097, 2, 1))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    inst = lt.make_instance(300, 8, 2, adapt="qkv", bound=2.0, dtype=dtype)
    g_cpu = lt.exact_gradients(inst)
    g_gpu = lt.exact_gradients(inst.to(device="cuda"), block_size=64)
    assert all(v.device.type == "cuda" for v in g_gpu.values())
    _assert_close({k: v.cpu() for k, v in g_gpu.items()}, g_cpu, tolerance(dtype))
    _assert_close({k: v.cpu() for k, v in lt.autograd_gradients(inst.to(device="cuda")).items()}, g_cpu, tolerance(dtype))


# -- rectangular, batched multi-head and causal instances (issue 13) ----------------------------

def _general_instance(L, n, d, r, *, batch=(), heads=None, adapt="qv", causal=False, beta=0.7, alpha=3.0, seed=0, scale=1.0):
    """A random rectangular instance: X (*batch, 1, L, n) shared by the heads, W* (heads, n, d),
    A (heads, r, d) per head, B (n, r) shared by every head and sequence (LoRA's layout on a
    multi-head projection), Y (*batch, heads, L, d). ``heads=None``: no head dimension."""
    gen = torch.Generator().manual_seed(seed)

    def g(*shape, std=1.0):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std

    hd = () if heads is None else (heads,)
    X = g(*batch, *((1,) if heads else ()), L, n, std=scale)
    W = {mu: g(*hd, n, d, std=n**-0.5) for mu in "qkv"}
    names = lt.limits.instance.parse_adapt(adapt)
    A = {mu: g(*hd, r, d, std=d**-0.5) for mu in names}
    B = {mu: g(n, r, std=n**-0.5) for mu in names}
    Y = g(*batch, *hd, L, d)
    return lt.AttentionLoRAInstance(X, X, X, W["q"], W["k"], W["v"], A, B, alpha, r, beta, Y, "self", causal)


@given(L=st.integers(1, 12), n=st.integers(1, 9), d=st.integers(1, 6), r=st.integers(1, 4), adapt=st.sampled_from(("qv", "qkv", "kv")),
       causal=st.booleans(), block=st.integers(1, 13), seed=st.integers(0, 50))
def test_rectangular_equals_autograd(L, n, d, r, adapt, causal, block, seed):
    """Rectangular W (n, d), n != d in general: blocked closed form = autograd (sdpa and dense).

    Fails on a transpose slip in the chain (B^T G vs G^T B is a shape error only when n != d) and
    on a causal mask applied on the wrong side of the diagonal (sdpa's is_causal is independent)."""
    r = min(r, max(n, d))
    inst = _general_instance(L, n, d, r, adapt=adapt, causal=causal, seed=seed)
    assert (inst.n, inst.d) == (n, d)
    g = lt.exact_gradients(inst, block_size=block)
    for mu in inst.adapt:
        assert g[f"A_{mu}"].shape == (r, d) and g[f"B_{mu}"].shape == (n, r)
    _assert_close(g, lt.autograd_gradients(inst), tolerance(torch.float64))
    _assert_close(g, lt.autograd_gradients(inst, method="dense"), tolerance(torch.float64))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("adapt", ["qv", "qkv"])
def test_batched_multihead_equals_sum_over_heads(adapt, causal):
    """(batch, heads) instance with B shared by all heads: one pass = the sum of per-head instances.

    The reference loops over every (sequence, head) with :meth:`element` and sums (for the shared
    B and the per-head A over the sequences); a reduction over the wrong dimension (B summed
    per head only, A summed over heads) fails it, and so does autograd through the broadcast."""
    inst = _general_instance(9, 7, 3, 2, batch=(2,), heads=4, adapt=adapt, causal=causal, seed=1)
    assert inst.batch_shape == (2, 4)
    g = lt.exact_gradients(inst, block_size=4)
    ref = {k: torch.zeros_like(v) for k, v in g.items()}
    for b in range(2):
        for h in range(4):
            one = lt.exact_gradients(inst.element(b, h))
            for mu in inst.adapt:
                ref[f"A_{mu}"][h] += one[f"A_{mu}"]
                ref[f"B_{mu}"] += one[f"B_{mu}"]
    _assert_close(g, ref, tolerance(torch.float64))
    _assert_close(g, lt.autograd_gradients(inst), tolerance(torch.float64))
    loss_ref = sum(float(lt.loss(inst.element(b, h))) for b in range(2) for h in range(4))
    assert abs(float(lt.loss(inst)) - loss_ref) <= 1e-12 * loss_ref
    G = lt.weight_gradients(inst)
    assert G["q"].shape == (4, 7, 3)  # W* per head, summed over the sequences


def test_causal_masks_future_keys():
    """Causal: the last query's row equals the unmasked head restricted to... nothing changes for the first
    token's output under future edits: moving X at position j > 0 leaves O_0 and the loss of row 0 unchanged."""
    inst = _general_instance(6, 5, 3, 2, causal=True, seed=3)
    t = lt.dense_terms(inst)
    assert torch.count_nonzero(t["f"].triu(1)) == 0 and torch.count_nonzero(t["p"].triu(1)) == 0
    assert torch.allclose(t["f"][0, 0], torch.tensor(1.0, dtype=torch.float64))
    unmasked = lt.dense_terms(inst.replace(causal=False))
    assert torch.equal(t["S"], unmasked["S"])  # S is the softmax input before the mask
    assert not torch.allclose(t["f"], unmasked["f"])


def test_low_rank_methods_take_batched_and_causal():
    """approx_gradients / random_feature_gradients run batched and causal instances (no longer single-head only):
    the certified result is within its bound of exact_gradients on the same instance (more in
    tests/limits/test_approx_batched.py)."""
    batched = _general_instance(8, 4, 4, 2, batch=(2,), heads=2, scale=0.3)
    causal = _general_instance(8, 4, 4, 2, batch=(2,), heads=2, causal=True, scale=0.3)
    for inst in (batched, causal):
        g, info = lt.approx_gradients(inst, eps=1e-3)
        assert info.valid and info.batch_shape == inst.batch_shape
        ex = lt.exact_gradients(inst)
        assert all(float((g[k] - ex[k]).abs().max()) <= info.error_bound[k] for k in ex)
        gr, _ = lt.random_feature_gradients(inst, m=8)
        assert set(gr) == set(ex) and all(gr[k].shape == ex[k].shape for k in ex)


# -- rounding_slack: the reference's own rounding bound (mutation survivors, issue 20) -------------

def _slack_reference(inst) -> dict[str, float]:
    """Higham's gamma_n bound written from rounding_slack's docstring in numpy (independent code path):
    gamma_n max| (alpha/r) |B|^T G~ | and max| (alpha/r) G~ |A|^T | with G~ the chain on absolute values."""
    Q, K, V = (t.numpy() for t in inst.projections())
    Xq, Xk, Xv, Y = (t.numpy() for t in (inst.Xq, inst.Xk, inst.Xv, inst.Y))
    S = inst.beta * Q @ K.T
    e = np.exp(S - S.max(axis=1, keepdims=True))
    f = e / e.sum(axis=1, keepdims=True)
    O = f @ V
    c = O - Y
    pabs = f * (np.abs(c) @ np.abs(V).T + np.abs((c * O).sum(axis=1, keepdims=True)))
    G = {"q": inst.beta * np.abs(Xq).T @ (pabs @ np.abs(K)), "k": inst.beta * np.abs(Xk).T @ (pabs.T @ np.abs(Q)),
         "v": np.abs(Xv).T @ (f.T @ np.abs(c))}
    u = np.finfo(np.float64).eps / 2
    n = inst.L + 3 * max(inst.d, Xq.shape[1]) + 8
    gam = n * u / (1 - n * u)
    out = {}
    for mu in inst.adapt:
        out[f"A_{mu}"] = gam * float((inst.scale * np.abs(inst.B[mu].numpy()).T @ G[mu]).max())
        out[f"B_{mu}"] = gam * float((inst.scale * G[mu] @ np.abs(inst.A[mu].numpy()).T).max())
    return out


@pytest.mark.parametrize("adapt", ["qv", "qkv", "kv"])
@pytest.mark.parametrize("L, n, d", [(7, 9, 4), (12, 3, 5)])
def test_rounding_slack_is_the_documented_bound(adapt, L, n, d):
    """rounding_slack = gamma_n times the chain on absolute values (n = L + 3 max(d, n_in) + 8), per LoRA gradient,
    against an independent numpy evaluation; distinct X_Q, X_K, X_V and n_in != d so that each input, each
    absolute value and the max(d, n_in) are seen."""
    gen = torch.Generator().manual_seed(L + n)
    r = 2

    def g(*shape, std=1.0):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std

    names = lt.limits.instance.parse_adapt(adapt)
    inst = lt.AttentionLoRAInstance(g(L, n), g(L, n, std=1.5), g(L, n, std=0.5), *(g(n, d, std=n**-0.5) for _ in "qkv"),
                                    {mu: g(r, d) for mu in names}, {mu: g(n, r) for mu in names}, 3.0, r, 0.7, g(L, d), "general")
    got = lt.limits.exact.rounding_slack(inst)
    ref = _slack_reference(inst)
    assert got.keys() == ref.keys() == {f"{w}_{mu}" for mu in names for w in "AB"}
    for k in ref:
        assert ref[k] > 0 and got[k] == pytest.approx(ref[k], rel=1e-13), k  # two summation orders: ~1e-15 apart


def test_rounding_slack_bounds_the_actual_rounding():
    """The float64 closed form differs from autograd (each with its own rounding) by at most twice the slack."""
    inst = lt.make_instance(64, 8, 4, adapt="qkv", bound=2.0)
    slack = lt.limits.exact.rounding_slack(inst)
    g, ref = lt.exact_gradients(inst), lt.autograd_gradients(inst)
    for k, s in slack.items():
        assert float((g[k] - ref[k]).abs().max()) <= 2 * s, k
        assert s < 1e-10 * float(ref[k].abs().max()) + 1e-12, k  # a bound at the level of float64 rounding, not a loose one


def test_dense_terms_refuses_exactly_past_its_limit(monkeypatch):
    """dense_terms accepts L = _DENSE_TERMS_MAX_L and refuses L + 1, naming the limit (the limit lowered to 8 to keep it cheap)."""
    monkeypatch.setattr(lt.limits.exact, "_DENSE_TERMS_MAX_L", 8)
    t = lt.limits.exact.dense_terms(lt.make_instance(8, 2, 1))
    assert t["S"].shape == (8, 8)
    with pytest.raises(lt.InvalidArgumentError, match="expected L <= 8, got L = 9"):
        lt.limits.exact.dense_terms(lt.make_instance(9, 2, 1))


def test_dense_terms_returns_every_documented_quantity():
    """The keys the docstring names, with q = c V^T, rho = rowsum(f o q), p = f o q - diag(rho) f, O = f V, c = O - Y."""
    inst = lt.make_instance(12, 3, 2, adapt="qkv", seed=4)
    t = lt.limits.exact.dense_terms(inst)
    assert set(t) == {"S", "f", "O", "c", "q", "rho", "p"}
    _, _, V = inst.projections()
    torch.testing.assert_close(t["O"], t["f"] @ V)
    torch.testing.assert_close(t["c"], t["O"] - inst.Y)
    torch.testing.assert_close(t["q"], t["c"] @ V.T)
    torch.testing.assert_close(t["rho"], (t["f"] * t["q"]).sum(-1))
    torch.testing.assert_close(t["p"], t["f"] * t["q"] - t["rho"][:, None] * t["f"])


def test_rounding_slack_of_a_float32_instance_is_computed_in_float64():
    """The slack bounds the float64 reference, so a float32 instance gets the slack of its float64 copy."""
    inst = lt.make_instance(10, 3, 2, adapt="qkv", seed=2, dtype=torch.float32)
    got = lt.limits.exact.rounding_slack(inst)
    ref = lt.limits.exact.rounding_slack(inst.to(dtype=torch.float64))
    assert got == ref


def test_dense_terms_masks_a_batched_multihead_causal_instance():
    """(batch, heads, L, L) scores: f is 0 above the diagonal of every head and sequence, and each row sums to 1."""
    inst = _general_instance(5, 4, 3, 2, batch=(2,), heads=3, causal=True)
    f = lt.limits.exact.dense_terms(inst)["f"]
    assert f.shape == (2, 3, 5, 5)
    lower = torch.ones(5, 5, dtype=torch.bool).tril()
    assert (f[..., ~lower] == 0).all() and (f[..., lower] > 0).all()
    torch.testing.assert_close(f.sum(-1), torch.ones(2, 3, 5, dtype=f.dtype))
