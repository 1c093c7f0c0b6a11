"""Fuzz the public API with random and malformed arguments: every call returns a result or raises
a ValueError naming the problem (never an IndexError, a torch RuntimeError, NaN output or a hang)."""
from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lora_theory as lt

junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                 st.sampled_from([torch.zeros(3), torch.ones(2, 2), [1, 2], (), "qv", "self", torch.float16, torch.int64]))


def _finite(out) -> None:
    if isinstance(out, torch.Tensor):
        assert bool(torch.isfinite(out).all())
    elif isinstance(out, dict):
        for v in out.values():
            _finite(v)
    elif isinstance(out, float):
        assert math.isfinite(out)


def _call(fn, *args, **kwargs):
    try:
        out = fn(*args, **kwargs)
    except ValueError as e:  # documented: InvalidArgumentError and its subclasses
        assert str(e)
        return None
    _finite(out)
    return out


@settings(max_examples=60, deadline=None)
@given(L=junk, d=junk, r=junk, adapt=junk, attention=junk, bound=junk, beta=junk, alpha=junk, seed=junk)
def test_make_instance_fuzz(L, d, r, adapt, attention, bound, beta, alpha, seed):
    kwargs = {k: v for k, v in {"adapt": adapt, "attention": attention, "bound": bound, "beta": beta, "alpha": alpha, "seed": seed}.items() if v is not None}
    inst = _call(lt.make_instance, L, d, r, **kwargs)
    if inst is not None and inst.L <= 64 and inst.d <= 16:
        _call(lt.exact_gradients, inst, block_size=3)
        _call(lt.norm_bounds, inst)


@settings(max_examples=40, deadline=None)
@given(block=junk, eps=junk, degree=junk, method=junk)
def test_gradient_functions_fuzz(block, eps, degree, method):
    inst = lt.make_instance(12, 3, 1, bound=1.0)
    _call(lt.exact_gradients, inst, block_size=block)
    _call(lt.approx_gradients, inst, eps=eps if eps is not None else 1e-3, degree=degree if isinstance(degree, int) and not isinstance(degree, bool) and 0 <= degree <= 8 else None,
          method=method if method is not None else "chebyshev", on_invalid="flag")
    _call(lt.exp_polynomial, eps if eps is not None else 1.0, 1e-3)


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(0, 12), st.integers(0, 12)), r=junk, direction=junk, scale=junk, alpha=junk, fill=st.sampled_from([0.0, 1.0, math.nan, math.inf, None]))
def test_lora_ga_init_fuzz(shape, r, direction, scale, alpha, fill):
    G = torch.randn(*shape, dtype=torch.float64) if fill is None else torch.full(shape, fill, dtype=torch.float64)
    kwargs = {k: v for k, v in {"direction": direction, "scale": scale}.items() if v is not None}
    init = _call(lt.lora_ga_init, G, r, alpha=alpha if alpha is not None else 1.0, **kwargs)
    if init is not None:
        _call(lt.alignment_report, G, init.A, init.B, init.eta)
