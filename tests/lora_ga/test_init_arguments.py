"""Argument contracts of lora_theory.lora_ga.init that mutation testing found unpinned (benchmarks/mutation.py):
every error names its argument; plus values of the scales and reports (claims lora_ga.thm3.1, lora_ga.stable_output)."""
from __future__ import annotations

import math

import pytest
import torch

from lora_theory.lora_ga import init


def _G(m=8, n=6, seed=0):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kwargs,match", [
    ({"r": 0}, r"^r: expected an integer >= 1, got 0"),
    ({"r": 4}, r"^r: expected 2r <= min\(m, n\) = 6 for G of shape \(8, 6\), got r = 4"),
    ({"alpha": 0.0}, r"^alpha: expected a finite number > 0"),
    ({"gamma": -1.0}, r"^gamma: expected a finite number > 0"),
    ({"direction": "BrA2r"}, r"^direction: expected one of 'ArB2r', 'A2rBr', 'ArBr', 'random'"),
    ({"scale": "weight"}, r"^scale: expected one of 'stable', 'gd', 'unit', 'weight_svd'"),
    ({"scale": "weight_svd"}, r"^W0: expected the \(m, n\) pretrained weight for scale='weight_svd', got None"),
    ({"W0": torch.zeros(6, 8, dtype=torch.float64)}, r"^W0: expected shape \(8, 6\)"),
    ({"svd": "lanczos"}, r"^svd: expected one of 'exact', 'randomized'"),
])
def test_lora_ga_init_arguments(kwargs, match):
    args = {"r": 2, "alpha": 4.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        init.lora_ga_init(_G(), args.pop("r"), **args)


def test_G_arguments():
    with pytest.raises(ValueError, match=r"^G: expected a torch.Tensor"):
        init.lora_ga_init([[1.0]], 1, alpha=1.0)
    with pytest.raises(ValueError, match=r"^G: expected finite entries"):
        init.lora_ga_init(torch.full((4, 4), float("inf"), dtype=torch.float64), 1, alpha=1.0)
    with pytest.raises(ValueError, match=r"^G: expected a non-zero gradient"):
        init.lora_ga_init(torch.zeros(4, 4, dtype=torch.float64), 1, alpha=1.0)
    assert init.lora_ga_init(_G(4, 4), 2, alpha=1.0).r == 2  # 2r = min(m, n) is allowed


def test_split_indices_arguments_and_values():
    with pytest.raises(ValueError, match=r"^r: expected an integer >= 1"):
        init.split_indices(0, "ArB2r")
    with pytest.raises(ValueError, match=r"^direction: expected one of"):
        init.split_indices(2, "Ar")
    assert init.split_indices(3, "ArB2r") == ([0, 1, 2], [3, 4, 5]) and init.split_indices(3, "A2rBr") == ([3, 4, 5], [0, 1, 2])
    assert init.split_indices(3, "ArBr") == ([1, 3, 5], [0, 2, 4])
    a, b = init.split_indices(4, "random", seed=5)
    assert sorted(a + b) == list(range(8)) and len(a) == 4 and (a, b) == init.split_indices(4, "random", seed=5)
    assert init.split_indices(4, "random") == init.split_indices(4, "random", seed=0)


def test_scales_and_eta():
    """c per scale, eta = alpha / sqrt(r) (rsLoRA) or alpha / r, zeta = eta^2 c^2, offset = eta B A."""
    G, W0 = _G(16, 12), _G(16, 12, seed=1)
    for rslora, eta in ((True, 8.0 / math.sqrt(2)), (False, 4.0)):
        for scale, c in (("stable", 16**0.25 / math.sqrt(16.0)), ("gd", 1 / eta), ("unit", 1.0),
                         ("weight_svd", math.sqrt(float(torch.linalg.matrix_norm(W0, ord=2))))):
            ini = init.lora_ga_init(G, 2, alpha=8.0, scale=scale, rslora=rslora, W0=W0)
            assert ini.eta == pytest.approx(eta) and ini.c == pytest.approx(c) and ini.zeta == pytest.approx(eta**2 * c**2)
            assert torch.allclose(ini.offset, eta * ini.B @ ini.A) and ini.scale == scale and ini.direction == "ArB2r"
            assert ini.A.shape == (2, 12) and ini.B.shape == (16, 2) and ini.idx_A == (0, 1) and ini.idx_B == (2, 3)
    ini = init.lora_ga_init(G, 2, alpha=8.0, gamma=4.0)
    assert ini.c == pytest.approx(16**0.25 / 2.0)


def test_gradient_svd_randomized_is_seeded_and_leaves_the_global_rng():
    G = _G(40, 30)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    U1, S1, V1 = init.gradient_svd(G, 4, svd="randomized", seed=7)
    after = torch.rand(1)
    U2, S2, V2 = init.gradient_svd(G, 4, svd="randomized", seed=7)
    assert torch.equal(before, after) and torch.equal(S1, S2) and U1.shape == (40, 4) and V1.shape == (30, 4)
    Ue, Se, Ve = init.gradient_svd(G, 4)
    assert torch.allclose(S1, Se, rtol=1e-6)  # a 30-column matrix: q = min(4 + 16, 40, 30) = 20, 6 iterations


def test_first_step_and_alignment_arguments():
    G = _G()
    ini = init.lora_ga_init(G, 2, alpha=4.0)
    with pytest.raises(ValueError, match=r"^G: expected shape \(8, 6\)"):
        init.first_step_update(G.T, ini, 0.1)
    with pytest.raises(ValueError, match=r"^lr: expected a finite number > 0"):
        init.first_step_update(G, ini, 0.0)
    with pytest.raises(ValueError, match=r"^A: expected shape"):
        init.alignment_report(G, ini.A.T, ini.B, ini.eta)
    with pytest.raises(ValueError, match=r"^B: expected shape"):
        init.alignment_report(G, ini.A, ini.B.T, ini.eta)
    with pytest.raises(ValueError, match=r"^eta: expected a finite number > 0"):
        init.alignment_report(G, ini.A, ini.B, 0.0)
    with pytest.raises(ValueError, match=r"^A: expected 2r <= min\(m, n\) = 6, got r = 4"):
        init.alignment_report(G, torch.ones(4, 6, dtype=torch.float64), torch.ones(8, 4, dtype=torch.float64), 1.0)


def test_alignment_report_values():
    """On a G of rank 2r: the first step is exactly zeta G (residual 0, cosine 1, Eckart-Young 0); spectral gap inf."""
    U, _ = torch.linalg.qr(_G(10, 4))
    V, _ = torch.linalg.qr(_G(8, 4, seed=3))
    G = (U * torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) @ V.T
    ini = init.lora_ga_init(G, 2, alpha=4.0)
    rep = init.alignment_report(G, ini.A, ini.B, ini.eta)
    assert rep.rel_residual < 1e-12 and rep.multiple == pytest.approx(ini.zeta) and rep.cosine == pytest.approx(1.0)
    assert rep.captured == pytest.approx(1.0) and rep.residual_to_G < 1e-12 and rep.eckart_young < 1e-12 and rep.rank == 4
    assert rep.spectral_gap > 1e10 or rep.spectral_gap == math.inf
    G5 = G + 0.1 * _G(10, 8, seed=9)  # full rank: the rank-2r optimum is no longer exact
    rep5 = init.alignment_report(G5, ini.A, ini.B, ini.eta)
    assert 0 < rep5.eckart_young < rep5.residual_to_G <= 1 and rep5.spectral_gap > 1


def test_first_step_update_first_order_and_exact():
    G = _G()
    ini = init.lora_ga_init(G, 2, alpha=4.0)
    lr = 1e-3
    d1 = init.first_step_update(G, ini, lr)
    assert torch.allclose(d1, -lr * ini.eta**2 * (G @ ini.A.T @ ini.A + ini.B @ ini.B.T @ G))
    d2 = init.first_step_update(G, ini, lr, exact=True)
    assert torch.allclose(d2 - d1, lr**2 * ini.eta**3 * G @ ini.A.T @ ini.B.T @ G, atol=1e-15)


def test_stable_scale_report_columns_and_prediction():
    df = init.stable_scale_report(ms=(16,), ns=(16, 8), ranks=(2, 8), alpha=8.0, gamma=4.0, samples=64, seed=1)
    assert list(df.columns) == ["m", "n", "r", "forward", "forward_pred", "backward", "backward_pred", "samples"]
    assert len(df) == 3  # (m, n, r) with 2r <= min(m, n): (16, 16, 2), (16, 16, 8), (16, 8, 2)
    row = df.iloc[0]
    assert row.forward_pred == pytest.approx(8.0**2 / 4.0**2) and row.backward_pred == pytest.approx(row.forward_pred * row.m / row.n)


# -- mutation survivors (benchmarks/mutation.py, lora_ga_init, 2026-12-03 evening) ----------------------

def test_rslora_is_the_default_scale():
    """eta = alpha / sqrt(r) unless rslora=False (alpha / r): the default must be rsLoRA, as the paper's stable scale assumes."""
    import math

    import torch

    from lora_theory.lora_ga.init import lora_ga_init

    G = torch.randn(12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert math.isclose(lora_ga_init(G, 4, alpha=8.0).eta, 8.0 / 2.0)
    assert math.isclose(lora_ga_init(G, 4, alpha=8.0, rslora=False).eta, 8.0 / 4.0)


def test_random_direction_follows_the_seed():
    """direction='random' splits by the caller's seed: equal seeds agree, and some other seed gives another split."""
    import torch

    from lora_theory.lora_ga.init import lora_ga_init

    G = torch.randn(24, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    first = lora_ga_init(G, 6, alpha=6.0, direction="random", seed=3)
    assert first.idx_A == lora_ga_init(G, 6, alpha=6.0, direction="random", seed=3).idx_A
    assert any(lora_ga_init(G, 6, alpha=6.0, direction="random", seed=s).idx_A != first.idx_A for s in range(4, 12))


def test_half_precision_overflow_names_the_factor():
    """A float16 init that overflows names which of A, B, offset is non-finite (the message is the diagnosis)."""
    import pytest
    import torch

    from lora_theory._validate import InvalidArgumentError
    from lora_theory.lora_ga.init import lora_ga_init

    G = torch.randn(16, 16, generator=torch.Generator().manual_seed(2)).to(torch.float16)
    with pytest.raises(InvalidArgumentError, match=r"non-finite \['offset'\]"):  # eta = 7e5: only eta B A overflows
        lora_ga_init(G, 2, alpha=1e6, scale="unit")
    W0 = 1e12 * torch.eye(16)
    with pytest.raises(InvalidArgumentError, match=r"non-finite \['A', 'B', 'offset'\]"):  # c = sqrt(sigma_1(W0)) = 1e6
        lora_ga_init(G, 2, alpha=1.0, scale="weight_svd", W0=W0)
