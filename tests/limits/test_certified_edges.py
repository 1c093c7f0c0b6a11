"""The certified-or-refused property at the edges of the number range (issue 21), against an mpmath reference.

For every instance ``lora_theory.strategies.edge_cases`` draws (float16 / bfloat16 / float32 / float64 inputs,
compute_dtype float32 / float64, per-tensor magnitudes 2^-600 .. 2^600, requires_grad, n != d, causal, batched heads
with a shared B and a caller's R= or degree= hint, cancellation in W = W* + (alpha/r) B A), ``approx_gradients``
either raises a documented error (ApproximationError / InvalidArgumentError), or flags the result invalid with a
reason (on_invalid="flag"), or returns gradients of the factors' shapes within ``info.error_bound`` of the exact
gradient (mpmath, 60 digits, unbounded exponents: no reference slack). Examples: ``EXAMPLES["edge"]`` x the profile's
max_examples (ci: 60, derandomized; dev: 120; thorough: 1200). Claims ``limits.thm3.1``, ``limits.thmA.1``.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis.control import current_build_context

import lora_theory as lt
from lora_theory import strategies as lts
from lora_theory._validate import InvalidArgumentError
from lora_theory.limits.approx import ApproximationError, approx_gradients

from .mp_reference import max_abs_error, mp_gradients


def note(msg: str) -> None:
    """hypothesis.note inside a test run, else nothing (the pinned examples call the property directly)."""
    try:
        current_build_context()
    except Exception:  # no hypothesis context: a pinned example
        return
    from hypothesis import note as hnote

    hnote(msg)


def certified_or_refused(kw: dict, kwargs: dict) -> str:
    """The property for one case; returns what happened (for the events and the pinned examples)."""
    kwargs = dict(kwargs)
    hint = kwargs.pop("_hint", "none")
    try:
        inst = lts.edge_instance(**kw)
    except (InvalidArgumentError, ValueError) as e:  # a scale that overflows the dtype: the instance itself refuses
        assert str(e)
        return "instance refused"
    if hint == "R":
        kwargs["R"] = 1.5 * lt.score_range_bound(inst.detach().to(dtype=torch.float64)) + 1e-3
    try:
        g, info = approx_gradients(inst, **kwargs)
    except (ApproximationError, InvalidArgumentError) as e:
        assert str(e)
        return f"raised {type(e).__name__}"
    if not info.valid:
        assert kwargs["on_invalid"] == "flag" and info.reason
        note(info.reason)
        return "flagged: " + info.reason
    ref = mp_gradients(inst)
    for name, r in ref.items():
        assert tuple(g[name].shape) == r.shape, (name, tuple(g[name].shape), r.shape)
        assert g[name].dtype == inst.dtype and not g[name].requires_grad
        err = max_abs_error(g[name], r)
        note(f"{name}: err {err:.3e} bound {info.error_bound[name]:.3e}")
        assert err <= info.error_bound[name], name
    return "certified"


@settings(max_examples=lts.EXAMPLES["edge"] * settings.default.max_examples, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=lts.edge_cases())
def test_certified_or_refused_at_the_edges(case):
    kw, kwargs = case
    note(f"{kw} {kwargs}")
    event(certified_or_refused(kw, kwargs).split(":")[0])


# The cases, pinned (each was certified but wrong, or raised the wrong error, before the fix)
PINNED = {
    "float16_underflow": ({"L": 12, "n": 8, "d": 8, "bound": 0.01, "dtype": torch.float16, "scales": {"Y": -14}}, {"eps": 1e-6}),
    "float64_subnormal": ({"L": 6, "scales": {"Wv": -540, "Y": -540}}, {"eps": 1e-3}),
    "float32_subnormal": ({"L": 6, "dtype": torch.float32, "scales": {"Wv": -70, "Y": -70}}, {"eps": 1e-3}),
    "float16_overflow": ({"L": 6, "dtype": torch.float16, "scales": {"Y": 13, "Wv": 4}}, {"eps": 1e-3}),
    "float32_cancellation": ({"L": 8, "cancel": 6.0}, {"eps": 1e-3, "compute_dtype": torch.float32}),
    "shared_b_R_hint": ({"batch": 1, "heads": 3, "share_b": True}, {"eps": 1e-3, "_hint": "R"}),
    "shared_b_degree_hint": ({"batch": 2, "heads": 2, "share_b": True, "causal": True}, {"eps": 1e-2, "degree": 8}),
    "requires_grad": ({"L": 6, "requires_grad": True, "batch": 1, "heads": 2}, {"eps": 1e-3}),
    "unbalanced_QK": ({"L": 6, "scales": {"Wq": 500, "Wk": -500}}, {"eps": 1e-3}),
    "tiny_X_huge_W": ({"L": 6, "scales": {"X": -600, "Wq": 590, "Wk": 590, "Wv": 590}}, {"eps": 1e-3}),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_edges(name):
    kw, kwargs = PINNED[name]
    out = certified_or_refused(kw, {"on_invalid": "flag", "max_features": 20_000, **kwargs})
    assert out == "certified" or out.startswith("flagged") or out == "raised ApproximationError", out
    if name in ("float16_underflow", "float64_subnormal", "float32_subnormal", "shared_b_R_hint",
                "shared_b_degree_hint", "requires_grad"):
        assert out == "certified", (name, out)
    if name == "float16_overflow":
        assert out.startswith("flagged") and "non-finite" in out
