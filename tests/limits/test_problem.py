"""Tests of lora_theory.limits.problem.max_entry_gradients: ALoRAGC's max-entry error <= eps (claims limits.thm3.1, limits.thmA.1 part (c))."""
from __future__ import annotations

import pytest

from lora_theory._validate import InvalidArgumentError
from lora_theory.limits import exact, instance, problem


@pytest.mark.parametrize("adapt,eps", [("qv", 1e-3), ("qkv", 1e-5)])
def test_max_entry_error_within_eps(adapt, eps):
    inst = instance.make_instance(256, 4, 2, adapt=adapt, bound=2.0, beta=0.25, seed=3)
    g, info, eps_poly = problem.max_entry_gradients(inst, eps)
    ex = exact.exact_gradients(inst)
    err = max(float((g[k] - ex[k]).abs().max()) for k in ex)
    assert max(info.error_bound.values()) <= eps and err <= eps
    assert eps_poly <= eps


def test_relative_eps_alone_misses_the_max_entry_target():
    """The reason the problem is its own function: at eps_poly = eps the gradient's entries (~10) make the error exceed eps."""
    from lora_theory.limits import approx

    inst = instance.make_instance(1024, 4, 2, adapt="qv", bound=2.0, beta=0.25, seed=0)
    eps = 1e-6
    g, info = approx.approx_gradients(inst, eps=eps)
    assert max(info.error_bound.values()) > eps


@pytest.mark.parametrize("kw", [dict(eps=0.0), dict(eps=1.0), dict(eps=1e-3, rounds=0), dict(eps=1e-3, degree=4)])
def test_bad_arguments(kw):
    inst = instance.make_instance(16, 4, 2, seed=0)
    with pytest.raises(InvalidArgumentError):
        problem.max_entry_gradients(inst, **kw)
