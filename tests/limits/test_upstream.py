"""Any upstream gradient (issue 23; claim limits.upstream): ``AttentionLoRAInstance(upstream=True)`` makes Y = dL/dO.

The LoRA gradients of any loss through the attention output O = D^-1 exp(beta Q K^T) V are the
gradients of the linear functional <O, dL/dO>: the chain of Lemma 3.1 with c = O - Y replaced by the
upstream gradient. The reference is torch autograd through the dense attention with a random upstream
gradient passed to ``backward`` (written out here, not the toolkit's functions); the property is the
certified-or-refused promise of test_approx_batched.py on batched, multi-head, causal, self / cross /
general instances.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings

import lora_theory as lt
from lora_theory._validate import InvalidArgumentError
from lora_theory.limits.approx import ApproximationError, approx_gradients
from lora_theory.limits.exact import rounding_slack
from tests.limits.test_approx_batched import batched_cases, batched_instance

F64 = torch.float64


def autograd_reference(inst):
    """dL/dA, dL/dB by autograd: O = softmax(beta Q K^T (masked)) V, then O.backward(Y) with Y the upstream gradient."""
    A = {mu: a.detach().clone().requires_grad_(True) for mu, a in inst.A.items()}
    B = {mu: b.detach().clone().requires_grad_(True) for mu, b in inst.B.items()}
    X = {"q": inst.Xq, "k": inst.Xk, "v": inst.Xv}
    W = {"q": inst.Wq, "k": inst.Wk, "v": inst.Wv}
    P = {mu: X[mu] @ (W[mu] + inst.alpha / inst.r * (B[mu] @ A[mu]) if mu in A else W[mu]) for mu in "qkv"}
    S = inst.beta * P["q"] @ P["k"].mT
    if inst.causal:
        S = S.masked_fill(torch.ones(inst.L, inst.L, dtype=torch.bool).triu(1), float("-inf"))
    O = torch.softmax(S, dim=-1) @ P["v"]
    O.backward(inst.Y.expand_as(O))  # an arbitrary loss with dL/dO = Y
    return {f"{p}_{mu}": (A if p == "A" else B)[mu].grad for mu in inst.adapt for p in "AB"}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("attention", ["self", "cross"])
def test_exact_gradients_take_the_upstream_gradient(causal, attention):
    """limits.upstream: exact_gradients (blocked closed form) with upstream=True equals autograd with O.backward(Y)."""
    inst = batched_instance(attention=attention, causal=causal, bound=1.5, seed=3).replace(upstream=True)
    ref = autograd_reference(inst)
    got = lt.exact_gradients(inst, block_size=5)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-10, atol=1e-12)


def test_upstream_differs_from_the_squared_loss():
    """The flag changes the loss: with upstream=False the same Y is a target (c = O - Y), a different gradient."""
    inst = batched_instance(seed=1)
    a, b = lt.exact_gradients(inst), lt.exact_gradients(inst.replace(upstream=True))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-3


def test_upstream_must_be_a_bool():
    inst = batched_instance()
    with pytest.raises(InvalidArgumentError, match="upstream"):
        inst.replace(upstream=1)


@settings(max_examples=max(30, 2 * settings.default.max_examples), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=batched_cases())
def test_upstream_certified_or_refused(case):
    """limits.upstream, THE promise with a random upstream gradient: approx_gradients either raises a documented
    error, or every LoRA gradient is within info.error_bound of autograd's (O.backward(Y)), over batched multi-head,
    causal, self / cross / general instances. Fails on a chain that uses c = O~ - Y (the squared loss) instead of
    the upstream gradient, or a bound that misses a term."""
    kw, kwargs = case
    try:
        inst = batched_instance(**kw).replace(upstream=True)
    except InvalidArgumentError:
        event("invalid instance")
        return
    try:
        g, info = approx_gradients(inst, **kwargs)
    except (ApproximationError, InvalidArgumentError) as e:
        assert str(e)
        event(f"raised {type(e).__name__}")
        return
    assert info.valid
    ref = autograd_reference(inst)
    slack = {}  # the float64 reference's own rounding, summed over the elements
    for idx in itertools.product(*map(range, inst.batch_shape)):
        for name, v in rounding_slack(inst.element(*idx)).items():
            slack[name] = slack.get(name, 0.0) + v
    for name in ref:
        err = float((g[name] - ref[name]).abs().max())
        note(f"{name}: err {err:.3e} bound {info.error_bound[name]:.3e}")
        assert err <= info.error_bound[name] + 2 * slack[name], name
    event("certified")
