"""Hypothesis strategies for LoRA-attention instances, for the toolkit's tests and yours.

Example:
    >>> from hypothesis import given
    >>> from lora_theory import strategies as lts
    >>> @given(lts.instances(adapt="qkv"))
    ... def test_my_gradient(inst):
    ...     ...

Profiles (select with the environment variable ``LORA_THEORY_PROFILE``; see
:func:`register_profiles`): ``dev`` (default, 30 examples), ``ci`` (derandomized, 15
examples, no deadline), ``thorough`` (300 examples).
"""
from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from .limits.instance import AttentionLoRAInstance, make_instance

__all__ = ["adapts", "attentions", "bounds", "dtypes", "instances", "ranged_instances", "register_profiles", "sizes"]

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


def register_profiles() -> str:
    """Register the ``dev``, ``ci`` and ``thorough`` profiles and load ``$LORA_THEORY_PROFILE``."""
    common = {"suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
    settings.register_profile("dev", max_examples=30, deadline=None, **common)
    settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True, print_blob=True, **common)
    settings.register_profile("thorough", max_examples=300, deadline=None, **common)
    name = os.environ.get("LORA_THEORY_PROFILE", "dev")
    settings.load_profile(name)
    return name
