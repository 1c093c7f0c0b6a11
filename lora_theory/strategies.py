"""Hypothesis strategies for LoRA-attention instances, for the toolkit's tests and yours.

Example:
    >>> from hypothesis import given
    >>> from lora_theory import strategies as lts
    >>> @given(lts.instances(adapt="qkv"))
    ... def test_my_gradient(inst):
    ...     ...

Profiles (select with the environment variable ``LORA_THEORY_PROFILE``; see
:func:`register_profiles`): ``dev`` (default, 30 examples), ``ci`` (derandomized, 15
examples, no deadline), ``thorough`` (300 examples). :data:`EXAMPLES` maps a property's weight
to its example count per profile (the edge-case properties of issue 21 run ``EXAMPLES["edge"]``).

:func:`edge_instance` builds any instance the toolkit accepts (batched with shared factors,
n != d, causal, per-tensor magnitudes, any float dtype, tensors that require grad), and
:func:`edge_cases` draws them for the certified-or-refused property (issue 21).
"""
from __future__ import annotations

import math
import os

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from .limits.instance import AttentionLoRAInstance, make_instance

__all__ = ["EXAMPLES", "adapts", "attentions", "bounds", "dtypes", "edge_cases", "edge_instance", "instances", "ranged_instances",
           "register_profiles", "sizes"]

adapts = st.sampled_from(("qv", "qkv"))
attentions = st.sampled_from(("self", "cross"))
dtypes = st.sampled_from((torch.float64, torch.float32))
#: Gamma values from well inside the almost-linear regime to scores of a few hundred.
bounds = st.one_of(st.none(), st.sampled_from((0.25, 1.0, 2.0, 4.0, 16.0)), st.floats(0.1, 8.0, allow_nan=False))


@st.composite
def sizes(draw, max_L: int = 40, max_d: int = 8) -> tuple[int, int, int]:
    """(L, d, r) with 1 <= L <= max_L, 2 <= d <= max_d, 1 <= r <= d."""
    L = draw(st.integers(1, max_L))
    d = draw(st.integers(2, max_d))
    r = draw(st.integers(1, d))
    return L, d, r


@st.composite
def instances(
    draw,
    *,
    adapt: str | None = None,
    attention: str | None = None,
    dtype: torch.dtype | None = torch.float64,
    max_L: int = 40,
    max_d: int = 8,
    bound=bounds,
    lora_init: bool = False,
) -> AttentionLoRAInstance:
    """A :func:`make_instance` draw; pass a value to pin a field, None to draw it."""
    L, d, r = draw(sizes(max_L=max_L, max_d=max_d))
    return make_instance(
        L, d, r,
        adapt=adapt or draw(adapts),
        attention=attention or draw(attentions),
        bound=draw(bound) if isinstance(bound, st.SearchStrategy) else bound,
        beta=draw(st.sampled_from((1.0, 0.5, 1.7))),
        alpha=draw(st.sampled_from((None, 1.0, 16.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
        dtype=dtype or draw(dtypes),
        lora_init=lora_init,
    )


@st.composite
def ranged_instances(
    draw,
    *,
    min_R: float = 1e-2,
    max_R: float = 1e4,
    max_L: int = 40,
    max_d: int = 16,
    dtype: torch.dtype | None = None,
) -> AttentionLoRAInstance:
    """An instance whose exact score range max|beta Q K^T| is a log-uniform draw from [min_R, max_R].

    L in 1..max_L, d in 1..max_d, r in 1..d, "qv"/"qkv", "self"/"cross", float64 or float32 (or
    ``dtype``); beta is chosen so that the range is exactly the draw (up to rounding). This is the
    input space of the certification property (``tests/limits/test_approx.py``).
    """
    import math

    from .limits.instance import score_range

    d = draw(st.integers(1, max_d))
    L, r = draw(st.integers(1, max_L)), draw(st.integers(1, d))
    kw = {"adapt": draw(adapts), "attention": draw(attentions), "seed": draw(st.integers(0, 2**20))}
    R = 10 ** draw(st.floats(math.log10(min_R), math.log10(max_R)))
    R0 = score_range(make_instance(L, d, r, **kw))
    return make_instance(L, d, r, **kw, beta=R / R0 if R0 > 0 else 1.0, dtype=dtype or draw(dtypes))


#: Tensors whose magnitude :func:`edge_instance` scales (by 2^e each).
SCALED = ("X", "Wq", "Wk", "Wv", "A", "B", "Y")
#: Input dtypes of the edge-case property: every float dtype a user can hand in.
EDGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def edge_instance(*, batch: int = 0, heads: int = 1, L: int = 8, n: int = 4, d: int = 4, r: int = 2, adapt: str = "qkv",
                  attention: str = "self", share_b: bool = False, causal: bool = False, bound: float = 1.0, beta: float = 1.0,
                  scales: dict[str, int] | None = None, dtype: torch.dtype = torch.float64, requires_grad: bool = False,
                  cancel: float = 0.0, seed: int = 0) -> AttentionLoRAInstance:
    """An instance at the edges: X (L, n), W* (n, d), A (r, d), B (n, r), Y (L, d), each times 2^scales[name].

    Args:
        batch: 0 for a single head; else X (batch, 1, L, n) shared by ``heads`` heads, W*, A, Y per head and
            B (n, r) shared by every element when ``share_b``.
        bound: the largest |entry| of X W_Q and X W_K before the scales (sets the score range).
        scales: exponents per tensor of :data:`SCALED` (2^-600 .. 2^600 are the property's range); exact powers of two.
            ``"A_q"``, ``"B_v"``, ... override ``"A"`` / ``"B"`` for one adapted weight.
        dtype: the instance's dtype (the values are drawn in float64 and cast: float16 / bfloat16 round them).
        requires_grad: B becomes an ``nn.Parameter``-like leaf that requires grad.
        cancel: W* becomes W - (alpha/r) B A for B times 10^cancel (cancellation in forming W; 0: none).
    """
    gen = torch.Generator().manual_seed(seed)
    F64 = torch.float64

    def rnd(*shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64) * std

    lead = (batch, heads) if batch else ()
    xlead = (batch, 1) if batch else ()
    Xq = rnd(*xlead, L, n)
    Xk = Xq if attention == "self" else rnd(*xlead, L, n)
    Xv = Xk if attention in ("self", "cross") else rnd(*xlead, L, n)
    W = {mu: rnd(*(lead[1:] if batch else ()), n, d, std=1 / math.sqrt(n)) for mu in "qkv"}
    A = {mu: rnd(*(lead[1:] if batch else ()), r, d, std=0.5) for mu in adapt}
    B = {mu: rnd(n, r, std=0.5) if (share_b or not batch) else rnd(heads, n, r, std=0.5) for mu in adapt}
    Y = rnd(*lead, L, d)
    alpha = float(r)
    inst = AttentionLoRAInstance(Xq, Xk, Xv, W["q"], W["k"], W["v"], A, B, alpha, r, beta, Y, attention, causal)
    Q, K, _ = inst.projections()
    top = max(float(Q.abs().max()), float(K.abs().max()), 1e-300)
    sq = bound / top  # Q and K scaled so that their largest entry is about ``bound``
    inst = inst.replace(Wq=inst.Wq * sq, Wk=inst.Wk * sq, B={mu: (v * sq if mu in "qk" else v) for mu, v in inst.B.items()})
    if cancel:
        Bc = {mu: v * 10.0**cancel for mu, v in inst.B.items()}
        Wc = {mu: inst.weight(mu) - (inst.scale * (Bc[mu] @ inst.A[mu]) if mu in Bc else 0) for mu in "qkv"}
        inst = inst.replace(B=Bc, Wq=Wc["q"], Wk=Wc["k"], Wv=Wc["v"])
    sc = {k: 2.0 ** int(v) for k, v in (scales or {}).items()}
    if sc:
        f = {k: sc.get(k, 1.0) for k in SCALED}
        Xq = inst.Xq * f["X"]
        Xk = Xq if inst.Xk is inst.Xq else inst.Xk * f["X"]
        Xv = Xk if inst.Xv is inst.Xk else inst.Xv * f["X"]
        inst = inst.replace(Xq=Xq, Xk=Xk, Xv=Xv, Wq=inst.Wq * f["Wq"], Wk=inst.Wk * f["Wk"], Wv=inst.Wv * f["Wv"],
                            A={k: v * sc.get(f"A_{k}", f["A"]) for k, v in inst.A.items()},
                            B={k: v * sc.get(f"B_{k}", f["B"]) for k, v in inst.B.items()}, Y=inst.Y * f["Y"])
    if dtype != F64:
        inst = inst.to(dtype=dtype)
    if requires_grad:
        inst = inst.replace(B={k: v.clone().requires_grad_(True) for k, v in inst.B.items()})
    return inst


@st.composite
def edge_cases(draw, *, max_L: int = 12, max_nd: int = 5, extreme: float = 600.0) -> tuple[AttentionLoRAInstance, dict]:
    """(instance, approx_gradients kwargs) over issue 21's edges.

    dtypes float16 / bfloat16 / float32 / float64, compute_dtype float32 / float64, per-tensor magnitudes 2^e with
    e in [-extreme, extreme] (half the draws moderate, |e| <= 8), requires_grad, n != d, causal, batched heads with a
    shared B and a caller's R= or degree= hint, cancellation in W. The instance may be invalid for ``AttentionLoRAInstance``
    (a scale that overflows its dtype): the caller expects a documented error then.
    """
    dtype = draw(st.sampled_from(EDGE_DTYPES))
    # exponents the dtype can hold (float16: 2^+-15; float64: the full 2^+-600 range)
    top = min(int(extreme), int(0.45 * math.log2(torch.finfo(dtype).max))) if draw(st.booleans()) else 8
    if draw(st.booleans()):  # free: every tensor its own magnitude (the score range moves too: often refused)
        scales = {k: draw(st.integers(-top, top)) if draw(st.booleans()) else 0 for k in SCALED}
    else:  # score-preserving: X by 2^e, W_mu* and B_mu A_mu by 2^(-e + shift_mu) (shift_k = -shift_q), V and Y by 2^v
        h = max(1, top // 2)
        e, t, v = (draw(st.integers(-h, h)) for _ in range(3))
        w = {"q": -e + t, "k": -e - t, "v": -e + v}
        scales = {"X": e, "Wq": w["q"], "Wk": w["k"], "Wv": w["v"], "Y": v}
        for mu in "qkv":
            a = draw(st.integers(-h, h))
            scales[f"A_{mu}"], scales[f"B_{mu}"] = a, w[mu] - a
    batch = draw(st.sampled_from((0, 0, 1, 2)))
    n, d = draw(st.integers(1, max_nd)), draw(st.integers(1, max_nd))
    kw = {"batch": batch, "heads": draw(st.integers(1, 3)) if batch else 1, "L": draw(st.integers(1, max_L)), "n": n, "d": d,
          "r": draw(st.integers(1, max(n, d))), "adapt": draw(st.sampled_from(("qv", "qkv", "k"))),
          "attention": draw(st.sampled_from(("self", "cross", "general"))), "share_b": draw(st.booleans()), "causal": draw(st.booleans()),
          "bound": 10 ** draw(st.floats(-2, 0.5)), "beta": draw(st.sampled_from((0.5, 1.0))), "scales": scales,
          "dtype": dtype, "requires_grad": draw(st.booleans()),
          "cancel": draw(st.sampled_from((0.0, 0.0, 2.0, 4.0, 6.0))), "seed": draw(st.integers(0, 2**16))}
    hint = draw(st.sampled_from(("none", "R", "degree")))
    kwargs = {"eps": 10 ** draw(st.floats(-9, -1)), "compute_dtype": draw(st.sampled_from((torch.float64, torch.float32))),
              "max_features": 20_000, "on_invalid": draw(st.sampled_from(("raise", "flag")))}
    if hint == "degree":
        kwargs["degree"] = draw(st.integers(0, 12))
    kwargs["_hint"] = hint  # resolved by the caller (R needs the instance's verified range)
    return kw, kwargs


#: Examples per profile for the properties of issue 21 (``edge``: the certified-or-refused property over the edges,
#: ``plan``: plan accuracy, ``cli``: the CLI fuzz); each is multiplied from the profile's ``max_examples``.
EXAMPLES = {"edge": 4, "plan": 1, "cli": 2}


def register_profiles() -> str:
    """Register the ``dev``, ``ci`` and ``thorough`` profiles and load ``$LORA_THEORY_PROFILE``."""
    common = {"suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
    settings.register_profile("dev", max_examples=30, deadline=None, **common)
    settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True, print_blob=True, **common)
    settings.register_profile("thorough", max_examples=300, deadline=None, **common)
    name = os.environ.get("LORA_THEORY_PROFILE", "dev")
    settings.load_profile(name)
    return name
