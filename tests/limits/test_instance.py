"""Tests for lora_theory.limits.instance: the instance model, norm bounds, hard instances, bad input."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lora_theory as lt
from lora_theory import strategies as lts
from lora_theory._validate import InvalidArgumentError


@given(inst=lts.instances())
def test_shapes_and_ties(inst):
    L, d, r = inst.L, inst.d, inst.r
    for name in ("Xq", "Xk", "Xv", "Y"):
        assert getattr(inst, name).shape == (L, d)
    for mu in inst.adapt:
        assert inst.A[mu].shape == (r, d) and inst.B[mu].shape == (d, r)
    if inst.attention == "self":
        assert torch.equal(inst.Xq, inst.Xk) and torch.equal(inst.Xk, inst.Xv)
    else:
        assert torch.equal(inst.Xk, inst.Xv) and not torch.equal(inst.Xq, inst.Xk)
    W = inst.weight("q")
    assert torch.allclose(W, inst.Wq + inst.alpha / inst.r * inst.B["q"] @ inst.A["q"])


def test_generic_and_lora_init():
    inst = lt.make_instance(5, 4, 2, adapt="qkv")
    assert all(float(b.abs().max()) > 0 for b in inst.B.values())
    z = lt.make_instance(5, 4, 2, adapt="qkv", lora_init=True)
    assert all(torch.count_nonzero(b) == 0 for b in z.B.values())
    assert inst.alpha == 2.0  # default alpha = r


def test_seed_determinism_and_dtype():
    a, b = lt.make_instance(6, 3, 1, seed=4), lt.make_instance(6, 3, 1, seed=4)
    assert torch.equal(a.Xq, b.Xq) and torch.equal(a.B["v"], b.B["v"])
    c = lt.make_instance(6, 3, 1, seed=4, dtype=torch.float32)
    assert c.dtype == torch.float32 and torch.allclose(c.Xq.double(), a.Xq, atol=1e-6)


@given(L=st.integers(2, 40), d=st.integers(2, 8), gamma=st.floats(0.05, 20), attention=st.sampled_from(("self", "cross")), seed=st.integers(0, 99))
def test_bound_partial_exact(L, d, gamma, attention, seed):
    """Thm 3.1 norms: ||X_Q W_Q||_max = ||X_K W_K*||_max = Gamma exactly."""
    inst = lt.make_instance(L, d, 1, adapt="qv", attention=attention, bound=gamma, seed=seed)
    nb = lt.norm_bounds(inst)
    assert math.isclose(nb["Xq_Wq"], gamma, rel_tol=1e-12) and math.isclose(nb["Xk_Wk"], gamma, rel_tol=1e-12)
    assert set(nb) == {"Xq_Wq", "Xk_Wk", "Gamma", "R"}


@given(L=st.integers(2, 40), d=st.integers(2, 8), gamma=st.floats(0.05, 20), attention=st.sampled_from(("self", "cross")), seed=st.integers(0, 99))
def test_bound_full(L, d, gamma, attention, seed):
    """Thm A.1 norms: all four <= Gamma, at least three equal to Gamma, Gamma = their max."""
    inst = lt.make_instance(L, d, 1, adapt="qkv", attention=attention, bound=gamma, seed=seed)
    nb = lt.norm_bounds(inst)
    vals = [nb[k] for k in ("Xq_Wq", "Xk_Wk", "Xq_Wq_WkT", "Xk")]
    assert all(v <= gamma * (1 + 1e-12) for v in vals)
    assert sum(math.isclose(v, gamma, rel_tol=1e-10) for v in vals) >= 3
    assert math.isclose(nb["Gamma"], gamma, rel_tol=1e-10)


@given(inst=lts.instances(max_L=70))
def test_score_range_blocked_equals_dense(inst):
    Q, K, _ = inst.projections()
    dense = float((inst.beta * Q @ K.T).abs().max())
    assert math.isclose(lt.score_range(inst, block_size=3), dense, rel_tol=1e-14)
    assert math.isclose(lt.norm_bounds(inst)["R"], dense, rel_tol=1e-14)


@pytest.mark.parametrize("d", [2, 5, 8])
def test_hard_instance_shape(d):
    """AS23 Lemma 4.7 shape: V binary, scores in [0, B'], at least half of each row equal to B'."""
    L = 128
    inst = lt.hard_instance(L, d, 2, kappa=1.0, adapt="qkv", seed=1)
    Q, K, V = inst.projections()
    S = Q @ K.T
    gamma = math.sqrt(math.log(L))
    Bp = gamma**2 * ((d + 1) // 2)
    assert torch.allclose(V, V.round(), atol=1e-12) and set(V.round().unique().tolist()) <= {0.0, 1.0}
    assert float(S.min()) >= -1e-9 and float(S.max()) <= Bp * (1 + 1e-12)
    at_max = (S - Bp).abs() <= 1e-9 * Bp
    assert bool((at_max.sum(1) >= L // 2).all())
    nb = lt.norm_bounds(inst)
    assert math.isclose(nb["Xq_Wq"], gamma, rel_tol=1e-9) and math.isclose(nb["Xk_Wk"], gamma, rel_tol=1e-9)
    assert inst.attention == "cross" and torch.count_nonzero(inst.Y) == 0


def test_hard_instance_scales_with_kappa():
    a, b = lt.hard_instance(64, 4, kappa=1.0), lt.hard_instance(64, 4, kappa=2.0)
    assert math.isclose(lt.norm_bounds(b)["R"] / lt.norm_bounds(a)["R"], 4.0, rel_tol=1e-9)


def test_to_preserves_ties():
    inst = lt.make_instance(5, 3, 1).to(dtype=torch.float32)
    assert inst.attention == "self" and inst.Xq is inst.Xk is inst.Xv


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"L": 0, "d": 4, "r": 1}, r"L: expected an integer >= 1, got 0"),
        ({"L": 4, "d": 4, "r": 0}, r"r: expected an integer >= 1, got 0"),
        ({"L": 4, "d": 4, "r": 5}, r"r: expected an integer <= 4, got 5"),
        ({"L": 4, "d": 4, "r": 2, "alpha": 0.0}, r"alpha: expected a finite number > 0"),
        ({"L": 4, "d": 4, "r": 2, "alpha": float("nan")}, r"alpha"),
        ({"L": 4, "d": 4, "r": 2, "beta": -1.0}, r"beta"),
        ({"L": 4, "d": 4, "r": 2, "adapt": "qx"}, r"adapt: expected .* got 'qx'"),
        ({"L": 4, "d": 4, "r": 2, "adapt": ""}, r"adapt"),
        ({"L": 4, "d": 4, "r": 2, "attention": "causal"}, r"attention: expected one of 'self', 'cross', got 'causal'"),
        ({"L": 4, "d": 4, "r": 2, "bound": 0}, r"bound"),
        ({"L": 4, "d": 4, "r": 2, "dtype": torch.int64}, r"dtype"),
        ({"L": 4.5, "d": 4, "r": 2}, r"L: expected an integer"),
    ],
)
def test_make_instance_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lt.make_instance(**kwargs)


def test_instance_validation_names_the_field():
    inst = lt.make_instance(6, 4, 2, attention="cross")
    with pytest.raises(ValueError, match=r"Xk: expected shape \(6, 4\), got \(5, 4\)"):
        inst.replace(Xk=inst.Xk[:5], Xv=inst.Xk[:5])
    with pytest.raises(ValueError, match=r"A\['q'\]: expected shape \(2, 4\), got \(3, 4\)"):
        inst.replace(A={"q": torch.zeros(3, 4, dtype=torch.float64), "v": inst.A["v"]})
    with pytest.raises(ValueError, match=r"Y: expected finite entries"):
        bad = inst.Y.clone()
        bad[0, 0] = float("inf")
        inst.replace(Y=bad)
    with pytest.raises(ValueError, match=r"dtype torch.float64 .* got torch.float32"):
        inst.replace(Y=inst.Y.float())
    with pytest.raises(ValueError, match=r"Wq: expected shape \(4, 4\), got \(4,\)"):
        inst.replace(Wq=inst.Wq[0])  # no silent broadcasting
    with pytest.raises(ValueError, match=r"A, B: expected the same keys"):
        inst.replace(A={"q": inst.A["q"]})
    with pytest.raises(ValueError, match=r"cross"):
        inst.replace(Xv=inst.Xq)
    with pytest.raises(ValueError, match=r"r: expected an integer <= 4"):
        inst.replace(r=5)


@pytest.mark.gpu
def test_mixed_devices_rejected():
    inst = lt.make_instance(6, 4, 2)
    with pytest.raises(ValueError, match="device"):
        inst.replace(Y=inst.Y.cuda())


def test_mixed_devices_rejected_without_cuda():
    inst = lt.make_instance(6, 4, 2)
    with pytest.raises(ValueError, match=r"Y: expected device cpu .* got meta"):
        inst.replace(Y=inst.Y.to("meta"))


# -- rectangular and batched instances, masked score ranges (issue 13) ---------------------------

def _batched(batch=(2, 3), L=5, n=6, d=4, r=2):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(batch[0], 1, L, n, generator=gen, dtype=torch.float64)
    W = [torch.randn(batch[1], n, d, generator=gen, dtype=torch.float64) for _ in range(3)]
    A = {"q": torch.randn(batch[1], r, d, generator=gen, dtype=torch.float64)}
    B = {"q": torch.randn(n, r, generator=gen, dtype=torch.float64)}
    Y = torch.randn(*batch, L, d, generator=gen, dtype=torch.float64)
    return lt.AttentionLoRAInstance(X, X, X, *W, A, B, 2.0, r, 0.5, Y, "self")


def test_batched_instance_shapes_and_element():
    inst = _batched()
    assert (inst.batch_shape, inst.L, inst.n, inst.d) == ((2, 3), 5, 6, 4)
    assert inst.projections()[0].shape == (2, 3, 5, 4)
    one = inst.element(1, 2)
    assert one.batch_shape == () and one.Xq is one.Xk is one.Xv
    assert torch.equal(one.Xq, inst.Xq[1, 0]) and torch.equal(one.Wq, inst.Wq[2]) and torch.equal(one.B["q"], inst.B["q"])
    assert torch.allclose(one.projections()[0], inst.projections()[0][1, 2])
    assert "batch_shape=(2, 3)" in repr(inst) and "n=6" in repr(inst)
    with pytest.raises(ValueError, match=r"index: expected 2 integers"):
        inst.element(1)
    with pytest.raises(ValueError, match=r"index"):
        inst.element(2, 0)


def test_batched_instance_validation():
    inst = _batched()
    with pytest.raises(ValueError, match=r"batch dimensions: expected leading shapes that broadcast"):
        inst.replace(Y=torch.zeros(2, 4, 5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Wk: expected shape \(\*batch, 6, 4\)"):
        inst.replace(Wk=torch.zeros(3, 4, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Wk: expected non-empty batch"):
        inst.replace(Wk=torch.zeros(0, 6, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"B\['q'\]: expected shape \(\*batch, 6, 2\)"):
        inst.replace(B={"q": torch.zeros(3, 4, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"r: expected an integer <= 6"):
        inst.replace(r=7)
    with pytest.raises(ValueError, match=r"causal: expected a bool"):
        inst.replace(causal=1)


@given(Lq=st.integers(1, 9), Lk=st.integers(1, 9), d=st.integers(1, 4), causal=st.booleans(), block=st.integers(1, 10), seed=st.integers(0, 99))
def test_score_ranges_match_dense_masked_max(Lq, Lk, d, causal, block, seed):
    """score_ranges = the max of |beta Q K^T| over allowed pairs, against a dense masked reference.

    Fails on a causal mask with the wrong diagonal (j < i or j <= i + 1) and on padding ignored."""
    gen = torch.Generator().manual_seed(seed)
    Q = torch.randn(3, Lq, d, generator=gen, dtype=torch.float64)
    K = torch.randn(3, Lk, d, generator=gen, dtype=torch.float64)
    allowed = torch.rand(3, 1, Lk, generator=gen) < 0.7  # key padding, broadcast over queries
    S = (0.3 * Q @ K.mT).abs()
    keep = allowed.expand(3, Lq, Lk).clone()
    if causal:
        keep &= torch.ones(Lq, Lk, dtype=torch.bool).tril()
    ref = torch.where(keep, S, torch.zeros(())).amax(dim=(-2, -1))
    got = lt.limits.instance.score_ranges(Q, K, 0.3, causal=causal, allowed=allowed, block_size=block)
    assert got.shape == (3,)
    assert torch.allclose(got, ref, rtol=1e-14, atol=0)


@given(data=st.data())
def test_batched_matmul_equals_matmul_then_sum(data):
    """batched_matmul(a, b, shape) = (a @ b).sum_to_size(shape) for random broadcast batch shapes.

    Fails on a size-1 dimension summed as if it were shared, or an output dimension dropped."""
    nd = data.draw(st.integers(0, 3))
    full = [data.draw(st.integers(1, 3)) for _ in range(nd)]

    def sub(dims):  # a batch shape broadcastable to ``dims``: some leading dims dropped, some set to 1
        keep = data.draw(st.integers(0, len(dims)))
        return [d if data.draw(st.booleans()) else 1 for d in dims[len(dims) - keep:]]

    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    a = torch.randn(*sub(full), 2, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(*sub(full), 3, 4, generator=gen, dtype=torch.float64)
    out_batch = sub(list(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])))
    shape = (*out_batch, 2, 4)
    got = lt.limits.instance.batched_matmul(a, b, shape)
    assert got.shape == shape
    assert torch.allclose(got, (a @ b).sum_to_size(shape), rtol=1e-12, atol=1e-12)
    assert torch.allclose(lt.limits.instance.batched_matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)


# -- overflow, devices and dtypes (issue 11) --------------------------------------------------------

@pytest.mark.parametrize("bound", [1e155, 1e200, 1e300])
def test_overflowing_bounds_refused(bound):
    """bound = 1e200 used to give R = 0 and NaN gradients without a word; now the instance is refused."""
    with pytest.raises(InvalidArgumentError, match="overflow"):
        lt.make_instance(16, 4, 2, bound=bound)
    with pytest.raises(InvalidArgumentError, match="overflow"):
        lt.make_instance(16, 4, 2, adapt="qkv", bound=bound)


def test_large_but_finite_bound_accepted_and_exact_finite():
    """The refusal is not a blanket cap: bound = 1e100 (scores ~1e200) is representable, and the exact
    gradient of it is finite."""
    inst = lt.make_instance(16, 4, 2, bound=1e100)
    assert math.isfinite(lt.norm_bounds(inst)["R"])
    assert all(bool(torch.isfinite(v).all()) for v in lt.exact_gradients(inst).values())


def test_dtype_range_checked():
    """float16 holds at most 65504: an instance whose scores exceed it is refused for float16, kept for float32."""
    with pytest.raises(InvalidArgumentError, match="float16"):
        lt.make_instance(16, 4, 2, bound=1e3, dtype=torch.float16)
    assert lt.make_instance(16, 4, 2, bound=1e3, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(InvalidArgumentError, match="overflow"):
        lt.hard_instance(16, 4, 2, bound=1e200)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps", "nonsense", 3.5, "cuda:x"])
def test_unavailable_device_is_invalid_argument(device):
    """make_instance(device="cuda") without CUDA ended in a raw torch error; now InvalidArgumentError names the device."""
    if torch.cuda.is_available() and str(device).startswith("cuda") and device != "cuda:x":
        pytest.skip("CUDA is available here")
    with pytest.raises(InvalidArgumentError, match="device"):
        lt.make_instance(8, 4, 2, device=device)
    with pytest.raises(InvalidArgumentError, match="device"):
        lt.hard_instance(8, 4, 2, device=device)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool, "float32", torch.float8_e4m3fn, None])
def test_bad_dtypes_are_invalid_argument(dtype):
    with pytest.raises(InvalidArgumentError, match="dtype"):
        lt.make_instance(8, 4, 2, dtype=dtype)
    with pytest.raises(InvalidArgumentError, match="dtype"):
        lt.hard_instance(8, 4, 2, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_instances(dtype):
    inst = lt.make_instance(8, 4, 2, dtype=dtype)
    assert inst.dtype == dtype and inst.device.type == "cpu"
