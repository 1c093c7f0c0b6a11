"""Fuzz the public API with random and malformed arguments: every call returns a finite result or
raises a ValueError (InvalidArgumentError and its subclasses) with a message; never an IndexError,
a TypeError or RuntimeError from torch internals, a NaN/inf output, or a hang (10 s alarm per call)."""
from __future__ import annotations

import dataclasses
import math
import signal

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

import lora_theory as lt

#: junk for any argument: wrong types, wrong ranges, non-finite numbers, wrong tensors and dtypes
junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                 st.sampled_from([torch.zeros(3), torch.ones(2, 2), torch.tensor(math.nan), [1, 2], (), {}, "qv", "self", "kv", torch.float16,
                                  torch.int64, object()]))
#: junk tensors: wrong shapes, dtypes, non-finite entries, empty dimensions
junk_tensors = st.one_of(
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([torch.float64, torch.float32, torch.float16, torch.int64, torch.bool]),
              st.sampled_from([0.0, 1.0, math.nan, math.inf, None])).map(
        lambda a: (torch.randn(a[0], a[1], dtype=torch.float64) if a[3] is None else torch.full((a[0], a[1]), a[3], dtype=torch.float64)).to(a[2])),
    st.sampled_from([torch.zeros(3), torch.zeros(2, 2, 2), torch.tensor(1.0), [[1.0, 2.0]], None, "A"]),
)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang("call took more than 10 s")


def _finite(out, where: str = "result") -> None:
    if isinstance(out, torch.Tensor):
        assert out.is_floating_point() is False or bool(torch.isfinite(out).all()), f"{where}: non-finite tensor"
    elif isinstance(out, dict):
        for k, v in out.items():
            _finite(v, f"{where}[{k!r}]")
    elif isinstance(out, list | tuple):
        for i, v in enumerate(out):
            _finite(v, f"{where}[{i}]")
    elif isinstance(out, float):
        assert math.isfinite(out), f"{where}: {out}"


def _call(fn, *args, check_finite: bool = True, **kwargs):
    """fn(*args, **kwargs): a finite result, or None after a ValueError that says something."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        out = fn(*args, **kwargs)
    except ValueError as e:  # documented: InvalidArgumentError and its subclasses
        assert str(e), f"{fn.__name__}: empty error message"
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    if check_finite:
        _finite(out, fn.__name__)
    return out


def _some(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@FUZZ
@given(L=junk, d=junk, r=junk, adapt=junk, attention=junk, bound=junk, beta=junk, alpha=junk, seed=junk, dtype=junk)
def test_make_instance_fuzz(L, d, r, adapt, attention, bound, beta, alpha, seed, dtype):
    kwargs = _some({"adapt": adapt, "attention": attention, "bound": bound, "beta": beta, "alpha": alpha, "seed": seed, "dtype": dtype})
    inst = _call(lt.make_instance, L, d, r, **kwargs)
    if inst is not None and inst.L <= 64 and inst.d <= 16:
        for fn in (lt.exact_gradients, lt.loss, lt.score_range):
            _call(fn, inst, block_size=3)
        for fn in (lt.norm_bounds, lt.score_range_bound, lt.dense_terms):
            _call(fn, inst)


@FUZZ
@given(L=junk, d=junk, r=junk, kappa=junk, bound=junk, adapt=junk, seed=junk)
def test_hard_instance_fuzz(L, d, r, kappa, bound, adapt, seed):
    inst = _call(lt.hard_instance, L, d, r, **_some({"kappa": kappa, "bound": bound, "adapt": adapt, "seed": seed}))
    if inst is not None and inst.L <= 64 and inst.d <= 16:
        _call(lt.exact_gradients, inst)


_FIELDS = ("Xq", "Xk", "Xv", "Y", "Wq", "Wk", "Wv")


@FUZZ
@given(field=st.sampled_from(_FIELDS + ("A", "B")), bad=junk_tensors, attention=st.sampled_from(["self", "cross", "general"]))
def test_malformed_instances_fuzz(field, bad, attention):
    """Replace one tensor of a valid instance by junk: the constructor must refuse it or the result must be finite."""
    inst = lt.make_instance(6, 3, 2, adapt="qv", attention="cross", bound=1.0)
    fields = {f.name: getattr(inst, f.name) for f in dataclasses.fields(inst)}
    fields["attention"] = attention
    if attention == "self":
        fields["Xk"] = fields["Xv"] = fields["Xq"]
    fields[field] = {**getattr(inst, field), "q": bad} if field in ("A", "B") else bad
    made = _call(lambda **kw: lt.AttentionLoRAInstance(**kw), **fields)
    if made is not None:
        _call(lt.exact_gradients, made)
        _call(lt.norm_bounds, made)


@FUZZ
@given(block=junk, eps=junk, degree=junk, method=junk, R=junk)
def test_gradient_functions_fuzz(block, eps, degree, method, R):
    inst = lt.make_instance(12, 3, 1, bound=1.0)
    _call(lt.exact_gradients, inst, block_size=block)
    _call(lt.loss, inst, block_size=block)
    _call(lt.weight_gradients, inst, block_size=block)
    _call(lt.autograd_gradients, inst, **_some({"method": method}))
    small_degree = degree if isinstance(degree, int) and not isinstance(degree, bool) and degree <= 10 else None
    _call(lt.approx_gradients, inst, **_some({"eps": eps, "method": method, "R": R}), degree=small_degree)  # raise mode: finite or a ValueError
    out = _call(lt.approx_gradients, inst, **_some({"eps": eps, "method": method, "R": R}), degree=small_degree, on_invalid="flag", check_finite=False)
    if out is not None and out[1].valid:  # flag mode may return a flagged non-finite result, never a valid one
        _finite(out[0], "approx_gradients (valid)")
    _call(lt.exp_polynomial, R if R is not None else 1.0, eps if eps is not None else 1e-3, degree=small_degree)
    _call(lt.degree_bound, R, eps)
    _call(lt.default_block_size, block)


@FUZZ
@given(max_features=junk, memory_budget=junk, block_size=junk, compute_dtype=junk, max_degree=junk, L=junk, d=junk, R=junk, eps=junk, adapt=junk)
def test_approx_resources_and_plan_fuzz(max_features, memory_budget, block_size, compute_dtype, max_degree, L, d, R, eps, adapt):
    """Issue 11/15 knobs: junk limits, block sizes, compute dtypes and plan shapes give a valid result or a ValueError."""
    inst = lt.make_instance(12, 3, 1, bound=1.0)
    kw = _some({"max_features": max_features, "memory_budget": memory_budget, "block_size": block_size, "compute_dtype": compute_dtype,
                "max_degree": max_degree})
    out = _call(lt.approx_gradients, inst, **kw, on_invalid="flag", check_finite=False)
    if out is not None and out[1].valid:
        _finite(out[0], "approx_gradients (valid)")
    small_L = L if isinstance(L, int) and not isinstance(L, bool) and L <= 10**6 else 64
    _call(lt.approx_plan, None, eps if eps is not None else 1e-3, L=small_L, d=d if d is not None else 2, R=R if R is not None else 1.0,
          **_some({"adapt": adapt, "max_features": max_features, "memory_budget": memory_budget}), check_finite=False)
    _call(lt.approx_plan, inst, eps if eps is not None else 1e-3, check_finite=False)


@FUZZ
@given(Z=junk_tensors, R=st.sampled_from([0.5, 2.0]), side=junk, g=junk, d=junk)
def test_features_fuzz(Z, R, side, g, d):
    poly = lt.exp_polynomial(R, 1e-2)
    _call(lt.polynomial_features, Z, poly, **_some({"side": side}))
    _call(lt.feature_rank, g, d)


@FUZZ
@given(a=junk_tensors, b=junk_tensors)
def test_max_rel_error_fuzz(a, b):
    out = _call(lt.max_rel_error, a, b, check_finite=False)  # inf is documented (b = 0, or NaN/inf entries); NaN is not
    assert out is None or (isinstance(out, float) and not math.isnan(out) and out >= 0)


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(0, 12), st.integers(0, 12)), r=junk, direction=junk, scale=junk, alpha=junk, lr=junk,
       fill=st.sampled_from([0.0, 1.0, math.nan, math.inf, None]))
def test_lora_ga_init_fuzz(shape, r, direction, scale, alpha, lr, fill):
    G = torch.randn(*shape, dtype=torch.float64) if fill is None else torch.full(shape, fill, dtype=torch.float64)
    init = _call(lt.lora_ga_init, G, r, alpha=alpha if alpha is not None else 1.0, **_some({"direction": direction, "scale": scale}))
    if init is not None:
        _call(lt.alignment_report, G, init.A, init.B, init.eta)
        _call(lt.first_step_update, G, init, lr)


@FUZZ
@given(r=junk, alpha=junk, init=junk, target=junk, seed=junk, n=st.integers(0, 5))
def test_lora_layer_fuzz(r, alpha, init, target, seed, n):
    base = nn.Linear(n, 3)
    layer = _call(lt.LoRALinear, base, r, alpha, **_some({"init": init}), check_finite=False)
    if layer is not None:
        _call(layer, torch.randn(2, n), check_finite=True)
        _call(layer, torch.randn(2, n + 1), check_finite=True)  # wrong input width
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    out = _call(lt.add_lora, model, target, r, alpha, **_some({"init": init, "seed": seed}), check_finite=False)
    if out is not None:
        _call(out, torch.randn(3, 4))
        _call(lt.merge_lora, out, check_finite=False)


@FUZZ
@given(lr=junk, ratio=junk)
def test_loraplus_fuzz(lr, ratio):
    model = lt.add_lora(nn.Sequential(nn.Linear(4, 4)), "0", 2, 4.0)
    _call(lt.loraplus_param_groups, model, lr, ratio, check_finite=False)


@FUZZ
@example(optimizer=None, init=torch.tensor([0.0, 0.0, 0.0]), a=None, b=None, steps=None)  # found by the fuzz: init was compared as a tensor
@given(optimizer=junk, init=junk, a=junk, b=junk, steps=junk)
def test_lora_plus_toy_fuzz(optimizer, init, a, b, steps):
    _call(lt.predict_exponents, optimizer, init, a, b, steps, check_finite=False)
    small = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps <= 5 else 2
    _call(lt.simulate_toy, [4, 8], small, **_some({"optimizer": optimizer, "init": init, "a": a, "b": b}), check_finite=False)


@pytest.mark.parametrize("m", [0, -1, 1.5, "x", None])
def test_random_feature_gradients_bad_m(m):
    inst = lt.make_instance(8, 3, 1, bound=1.0)
    with pytest.raises(ValueError, match="m"):
        lt.random_feature_gradients(inst, m)


@FUZZ
@given(n=junk, causal=junk, L=junk, d=junk)
def test_plan_paths_fuzz(n, causal, L, d):
    """approx_plan's path arguments (issue 21): n and causal of a shape plan, junk included: a finite plan or a ValueError."""
    _call(lt.approx_plan, None, 1e-3, L=L if isinstance(L, int) and 0 < L < 10**6 else L, d=d, R=1.0, n=n, causal=causal, check_finite=False)


@FUZZ
@given(which=st.sampled_from(["B", "A", "X", "Y", "Wq"]), dtype=st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]),
       method=st.sampled_from(["approx", "random_features"]))
def test_requires_grad_inputs_fuzz(which, dtype, method):
    """Tensors that require grad (issue 21, case 5), any float dtype: detached (documented), a result or a ValueError."""
    from lora_theory.strategies import edge_instance

    inst = edge_instance(L=6, n=3, d=2, dtype=dtype)
    if which in ("A", "B"):
        inst = inst.replace(**{which: {k: v.clone().requires_grad_(True) for k, v in getattr(inst, which).items()}})
    elif which == "X":
        X = inst.Xq.clone().requires_grad_(True)
        inst = inst.replace(Xq=X, Xk=X, Xv=X)
    else:
        inst = inst.replace(**{which: getattr(inst, which).clone().requires_grad_(True)})
    fn = (lambda i: lt.approx_gradients(i, eps=1e-2, on_invalid="flag")) if method == "approx" else (lambda i: lt.random_feature_gradients(i, 16, on_invalid="flag"))
    out = _call(fn, inst, check_finite=False)
    if out is not None:
        assert not any(v.requires_grad for v in out[0].values())
