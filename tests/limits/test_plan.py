"""Tests for lora_theory.limits.plan: the cost of both methods before running them (issues 11 and 15)."""
from __future__ import annotations

import json
import math

import pytest
import torch

import lora_theory as lt
from lora_theory.limits.approx import ApproximationError, approx_gradients
from lora_theory.limits.calibration import calibrate_cost_model
from lora_theory.limits.plan import (
    CostModel,
    approx_bytes,
    approx_plan,
    check_resources,
    cost_model,
    default_feature_block,
    memory_budget_bytes,
)


def test_plan_matches_what_approx_runs():
    """The plan's degree and k are the ones approx_gradients uses (same R, same eps)."""
    inst = lt.make_instance(300, 4, 2, adapt="qkv", bound=1.5, beta=0.25, seed=3)
    plan = approx_plan(inst, 1e-4)
    _, info = approx_gradients(inst, eps=1e-4)
    assert (plan.degree, plan.k, plan.degree_source) == (info.degree, info.rank, "measured")
    assert plan.k == math.comb(plan.degree + 4, 4) and plan.certifiable
    assert plan.approx_bytes > 0 and plan.exact_bytes > 0 and plan.approx_seconds > 0 and plan.exact_seconds > 0
    assert plan.faster in ("approx", "exact") and "approx degree" in plan.summary()


def test_plan_of_an_impossible_shape_is_not_certifiable():
    """d = 16 at R = 11 (the README example's range): astronomically many features; the plan says so
    without allocating anything, and picks the exact method."""
    plan = approx_plan(L=1024, d=16, R=11.4, eps=1e-3)
    assert plan.k > 10**11 and not plan.certifiable and plan.faster == "exact"


def test_predicted_bytes_track_measured_peak():
    """approx_bytes predicts the peak of the streamed implementation within 2x (issue 15's target) at L = 2^16,
    and the measured peak stays below the 2 (L, k) feature matrices the earlier version materialized (fails if
    a full (L, k) or (L, c) matrix comes back). Measured peaks are RSS growth: 39-40 MB alone, up to 50 MB
    inside a full suite run, against a prediction of ~55 MB; so approx_bytes is an estimate, not a bound."""
    from lora_theory._memory import peak_memory_bytes

    L, d = 65536, 4
    inst = lt.make_instance(L, d, 2, adapt="qkv", bound=2.0, beta=0.25)
    plan = approx_plan(inst, 1e-3)
    mem = peak_memory_bytes(f"import lora_theory as lt\ninst = lt.make_instance({L}, {d}, 2, adapt='qkv', bound=2.0, beta=0.25)",
                            "lt.approx_gradients(inst, eps=1e-3)", threads=1)
    assert 0.5 <= plan.approx_bytes / mem["peak_bytes"] <= 2.0, (mem, plan.approx_bytes)
    assert mem["peak_bytes"] < plan.feature_bytes and plan.approx_bytes < plan.feature_bytes, (mem, plan.approx_bytes, plan.feature_bytes)


def test_check_resources_advice_is_consistent():
    """The advice it gives works: the suggested R, eps and d each fit."""
    with pytest.raises(ApproximationError) as e:
        check_resources(L=4096, d=8, k=math.comb(20 + 8, 8), degree=20, R=8.0, eps=1e-8, max_features=20_000)
    msg = str(e.value)
    assert "k = C(28, 8)" in msg and "max_features = 20000" in msg
    R_ok = float(msg.split("score range R <= ")[1].split(" ")[0])
    assert approx_plan(L=4096, d=8, R=R_ok, eps=1e-8, max_features=20_000).certifiable
    d_ok = int(msg.split("d <= ")[1].split(" ")[0])
    assert math.comb(20 + d_ok, d_ok) <= 20_000 < math.comb(20 + d_ok + 1, d_ok + 1)


def test_memory_budget_default_and_validation():
    assert memory_budget_bytes() > 0 and memory_budget_bytes(1e9) == 1e9
    with pytest.raises(ValueError, match="memory_budget"):
        memory_budget_bytes(0)
    assert 64 <= default_feature_block(210, 10**6) <= 8192 and default_feature_block(210, 10) == 10
    assert approx_bytes(1000, 4, 210) < approx_bytes(1000, 4, 21000) and approx_bytes(10**6, 4, 210) < approx_bytes(2 * 10**6, 4, 210)


def test_cost_model_calibration_round_trip(tmp_path, monkeypatch):
    """Calibration fits non-negative coefficients on this machine, stores them in the cache, and
    cost_model() reads them back; an unreadable cache falls back to the defaults."""
    monkeypatch.setenv("LORA_THEORY_CACHE", str(tmp_path))
    assert cost_model().source == "default"
    m = calibrate_cost_model(repeats=1)
    assert (m.threads, m.device) == (1, "cpu")
    assert m.source == "calibrated" and all(v >= 0 for v in (m.a_const, m.a_fit, m.a_feat, m.a_mm, m.a_L, m.a_row, m.a_op, m.e_const, m.e_mm, m.e_elem, m.e_blk))
    assert cost_model() == m
    data = json.loads((tmp_path / "cost_model.json").read_text())
    assert len(data) == 1
    (tmp_path / "cost_model.json").write_text("{not json")
    assert cost_model().source == "default"


def test_cost_model_orders_the_methods():
    """At L = 2^16, d = 4, R <= 2 the approx method is predicted faster; at L = 64 the exact one."""
    m = CostModel()
    big = approx_plan(L=1 << 16, d=4, R=1.5, eps=1e-3, model=m)
    small = approx_plan(L=64, d=4, R=1.5, eps=1e-3, model=m)
    assert big.faster == "approx" and small.faster == "exact"
    assert big.exact_seconds / big.approx_seconds > 20


def test_bad_input():
    with pytest.raises(ValueError, match="inst"):
        approx_plan(None, 1e-3, L=10)
    with pytest.raises(ValueError, match="inst"):
        approx_plan("x", 1e-3)
    with pytest.raises(ValueError, match="eps"):
        approx_plan(L=10, d=2, R=1.0, eps=1.5)
    with pytest.raises(ValueError, match="adapt"):
        approx_plan(L=10, d=2, R=1.0, adapt="qx")
    with pytest.raises(ValueError, match="max_features"):
        check_resources(L=10, d=2, k=3, degree=1, R=1.0, eps=1e-3, max_features=0)
    for kwargs, match in [({"max_features": ""}, "max_features"), ({"max_degree": 61}, "max_degree"), ({"dtype": "float32"}, "dtype"),
                          ({"model": {}}, "model")]:  # found by the fuzz: '' reached a comparison (TypeError)
        with pytest.raises(ValueError, match=match):
            approx_plan(L=10, d=2, R=1.0, **kwargs)


# -- the counts and byte models against their documented closed forms (mutation survivors, issue 20) ---------------


@pytest.mark.parametrize("L, d, k, m, n_adapted", [(1024, 4, 210, None, 3), (300, 3, 35, 7, 2), (17, 5, 1, 2, 1), (4096, 8, 495, 16, 3)])
def test_operation_counts_are_the_documented_closed_forms(L, d, k, m, n_adapted):
    """exact ~ L^2 (4d + d min(n_adapted, 2) + 3); c = C(m + 2, 2) monomials of degree <= 2 in m inputs;
    approx ~ 2 L k c + 2 L k + L m^2 (d + 4); CostModel's terms are the same counts."""
    from lora_theory.limits.exact import default_block_size
    from lora_theory.limits.plan import approx_flops, exact_flops, moment_columns

    mm = d if m is None else m
    c = math.comb(mm + 2, 2)
    assert moment_columns(mm) == c
    assert exact_flops(L, d, n_adapted) == L * L * (4 * d + d * min(n_adapted, 2) + 3)
    assert approx_flops(L, d, k, n_adapted, m) == L * k * (2 * c + 2) + L * mm * mm * (d + 4)
    g = 6
    b = default_feature_block(k, L)
    nn = d  # the input width defaults to d; P = 2 d + 2 n columns of the bound's tables, d (d + n) covariances
    assert CostModel.approx_terms(L, d, k, g, m) == [1.0, g + 1, 2 * L * k, 2 * L * k * c, L * (16 + mm * mm + 2 * (d + nn)),
                                                     L * mm * mm * (d + 2 * (d + nn) + d * (d + nn)), 2 * math.ceil(L / b) * d * g,
                                                     mm * mm * (2 * (d + nn) + 2 * d * (d + nn))]
    assert CostModel.approx_terms(L, d, k, 0, m)[-2] == 2 * math.ceil(L / b) * d  # degree 0 still pays one pass per block
    assert CostModel.exact_terms(L, d, n_adapted) == [1.0, L * L * (4 * d + d * min(n_adapted, 2)), L * L, math.ceil(L / default_block_size(L))]
    model = CostModel(a_const=1, a_fit=2, a_feat=3, a_mm=5, a_L=7, a_row=11, a_op=13, a_tab=17, e_const=1, e_mm=2, e_elem=3, e_blk=5)
    assert model.approx_seconds(L, d, k, g, m) == pytest.approx(sum(a * t for a, t in zip((1, 2, 3, 5, 7, 11, 13, 17), CostModel.approx_terms(L, d, k, g, m),
                                                                                          strict=True)))
    assert model.exact_seconds(L, d, n_adapted) == pytest.approx(sum(a * t for a, t in zip((1, 2, 3, 5), CostModel.exact_terms(L, d, n_adapted))))


@pytest.mark.parametrize("k, L, itemsize, batch", [(210, 1 << 15, 8, 1), (1, 1 << 20, 8, 1), (10**7, 1 << 15, 8, 1), (495, 100, 4, 1),
                                                   (495, 1 << 15, 8, 12), (495, 1 << 15, 8, 3), (8192, 1 << 16, 4, 2)])
def test_feature_block_is_4_mib_between_64_and_8192_rows(k, L, itemsize, batch):
    b = default_feature_block(k, L, itemsize, batch)
    want = (1 << 22) * min(batch, 8) // (k * itemsize * batch)
    assert b == max(1, min(L, max(64, min(8192, want))))
    assert 1 <= b <= min(L, 8192) and (b >= 64 or b == L)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L, d, k, m, n, itemsize, block, batch", [(4096, 4, 210, None, None, 8, None, 1), (1000, 3, 84, 6, 9, 4, 100, 2),
                                                                   (1 << 14, 8, 495, 8, 32, 8, None, 12)])
def test_approx_bytes_is_the_documented_sum(L, d, k, m, n, itemsize, block, batch, causal):
    """itemsize (E (k b + k c + b c + 6 b m^2 + 10 L (n + d) + the bound's words) + 4 k) + 8 k (d + 2) bytes of monomial
    tables + the 8 MiB floor, the bound's words m^2 P + 2 m^2 d (d + n) + b (2 P + 3 d (d + n)) + 4 L d (P = 2 d + 2 n);
    plus E (k b + b^2 + k c) words when causal, with b the default feature block (at most CAUSAL_BLOCK when causal)."""
    from lora_theory.limits.lowrank import CAUSAL_BLOCK

    mm, nn = (d if m is None else m), (d if n is None else n)
    c = math.comb(mm + 2, 2)
    b = default_feature_block(k, L, itemsize, batch) if block is None else block
    if causal and block is None:
        b = min(b, CAUSAL_BLOCK)
    P, Dn = 2 * (d + nn), d * (d + nn)
    bound = mm * mm * P + 2 * mm * mm * Dn + b * (2 * P + 3 * Dn) + 4 * L * d
    words = batch * (k * b + k * c + b * c + 6 * b * mm * mm + 10 * L * (nn + d) + bound) + 4 * k + (batch * (k * b + b * b + k * c) if causal else 0)
    got = approx_bytes(L, d, k, m=m, n=n, itemsize=itemsize, block=block, batch=batch, causal=causal)
    assert got == pytest.approx(itemsize * words + 8 * k * (d + 2) + 8 * 2**20, rel=1e-12)


@pytest.mark.parametrize("L, d, itemsize, block", [(4096, 4, 8, None), (1 << 16, 8, 4, None), (100, 3, 8, 7)])
def test_exact_bytes_is_three_block_pieces(L, d, itemsize, block):
    from lora_theory.limits.exact import default_block_size
    from lora_theory.limits.plan import exact_bytes

    b = default_block_size(L) if block is None else block
    assert exact_bytes(L, d, itemsize=itemsize, block=block) == itemsize * (3 * b * L + 10 * L * d)


def test_memory_budget_without_psutil_reads_meminfo(monkeypatch):
    """Half of MemAvailable (kB in /proc/meminfo, read independently here) when psutil cannot be imported."""
    import sys

    from lora_theory.limits.plan import available_memory_bytes

    try:
        with open("/proc/meminfo") as fh:
            kb = next(float(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/meminfo MemAvailable on this system")
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    assert available_memory_bytes() == pytest.approx(kb * 1024, rel=0.2)  # memory moves between the two reads
    assert memory_budget_bytes() == pytest.approx(0.5 * kb * 1024, rel=0.2)
    assert memory_budget_bytes(123.0) == 123.0


def test_fits_is_inclusive_at_both_limits():
    from lora_theory.limits.plan import _fits

    assert _fits(10, 100.0, 10, 100.0) and not _fits(11, 100.0, 10, 100.0) and not _fits(10, 100.5, 10, 100.0)


def test_degree_groups_partition_the_elements_by_their_own_degree():
    """Every element lands in the group of the degree its own range needs; groups in increasing degree, each with its largest R."""
    import torch

    from lora_theory.limits.plan import degree_groups
    from lora_theory.limits.polynomial import exp_polynomial

    R = torch.tensor([0.3, 5.0, 0.31, 2.0, 9.5, 0.05, 2.1, 5.2, 0.7, 12.0, 1.0])
    groups = degree_groups(R, 1e-6, "chebyshev", 60)
    seen = torch.cat([idx for idx, _ in groups]).sort().values
    assert seen.tolist() == list(range(len(R)))
    degs = []
    for idx, rmax in groups:
        own = {exp_polynomial(float(R[i]), 1e-6, method="chebyshev", max_degree=60).degree for i in idx.tolist()}
        assert len(own) == 1, own
        assert rmax == pytest.approx(float(R[idx].max()))
        degs.append(own.pop())
    assert degs == sorted(degs) and len(set(degs)) == len(degs) >= 3


def test_batched_plan_sums_the_elements_at_their_own_degrees():
    """A (batch, heads) instance whose heads have 1x, 2x, 4x score ranges: the plan's flops are the sum over elements of
    each element's own single-instance plan (its degree group), its degree and k the worst element's."""
    from lora_theory.limits.plan import approx_flops

    gen = torch.Generator().manual_seed(5)
    L, n, d, r = 40, 4, 3, 2

    def g(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    X = g(2, 1, L, n, std=0.4)
    Wq = g(3, n, d, std=0.4) * torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)[:, None, None]
    inst = lt.AttentionLoRAInstance(X, X, X, Wq, g(3, n, d, std=0.5), g(3, n, d, std=0.5), {mu: g(3, r, d) for mu in "qv"},
                                    {mu: g(n, r) for mu in "qv"}, 2.0, r, 0.5, g(2, 3, L, d), "self")
    plan = approx_plan(inst, 1e-6)
    singles = [approx_plan(inst.element(b, h), 1e-6) for b in range(2) for h in range(3)]
    assert all(p.degree_source == "measured" for p in singles), [p.R for p in singles]
    assert plan.batch == 6 and len({p.k for p in singles}) >= 3
    assert (plan.degree, plan.k) == max((p.degree, p.k) for p in singles)
    assert plan.approx_flops == pytest.approx(sum(approx_flops(L, d, p.k, 2, m=n) for p in singles), rel=1e-12)  # m = n key-side inputs


@pytest.mark.parametrize("kw, name", [({"L": 100, "R": 1.0}, "d=None"), ({"d": 4, "R": 1.0}, "L=None"), ({"L": 100, "d": 4}, "R=None"),
                                      ({"L": 100, "d": 0, "R": 1.0}, "d"), ({"L": 0, "d": 4, "R": 1.0}, "L")])
def test_shape_plan_needs_L_d_and_R(kw, name):
    with pytest.raises(lt.InvalidArgumentError, match=name):
        approx_plan(eps=1e-3, **kw)


@pytest.mark.parametrize("adapt, n_adapted", [("q", 1), ("kv", 2), ("qkv", 3)])
def test_shape_plan_reports_the_documented_totals(adapt, n_adapted):
    """Feature bytes = the two (L, k) factors; flops = approx_flops / exact_flops of the plan's k and n_adapted."""
    from lora_theory.limits.plan import approx_flops, exact_flops

    p = approx_plan(eps=1e-3, L=256, d=4, R=1.0, adapt=adapt)
    assert (p.n_adapted, p.batch) == (n_adapted, 1)
    assert p.feature_bytes == 2 * 256 * p.k * 8
    assert p.approx_flops == approx_flops(256, 4, p.k, n_adapted) and p.exact_flops == exact_flops(256, 4, n_adapted)


def test_check_resources_names_the_caller_by_default():
    """The refusal starts with what was asked for: approx_gradients unless the caller says otherwise."""
    with pytest.raises(ApproximationError, match=r"^approx_gradients: degree 28 in d = 16"):
        check_resources(L=1024, d=16, k=math.comb(44, 16), degree=28, R=11.0, eps=1e-3)

