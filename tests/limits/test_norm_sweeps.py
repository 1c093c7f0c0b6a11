"""Tests of the norm-bound sweeps (claims limits.thm3.1, limits.thm4.1_regime, limits.threshold) and their figures."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lora_theory.limits import norm_sweeps as phase
from lora_theory.studies import get_figure, render


def test_phase_transition_sweep_and_threshold():
    """The sweep's exponents are the flop counts' and grow with x; threshold_table finds the crossing of the table it is given."""
    df = phase.phase_transition_sweep(Ls=(256, 4096), xs=(0.1, 0.5, 1.0, 1.5))
    assert set(df.regime) == {"log", "fixed"} and len(df) == 16
    assert (df.groupby(["regime", "L"]).approx_exponent.apply(lambda s: s.is_monotonic_increasing)).all()
    row = df.iloc[5]  # an independent recomputation of one row's exponents from the multiply-add formulas
    k = math.comb(int(row.degree) + int(row.d), int(row.d))
    assert row.k == k
    c = 1 + row.d + row.d * (row.d + 1) // 2  # moment columns: 1, the means, the upper triangle of the covariance
    flops = row.L * k * (2 * c + 2) + row.L * row.d**2 * (row.d + 4)  # the moment form: 2 L k c + 2 L k + L m^2 (d + 4), m = d
    assert row.approx_exponent == pytest.approx(math.log(flops) / math.log(row.L))
    assert row.exact_exponent == pytest.approx(math.log(row.L**2 * (6 * row.d + 3)) / math.log(row.L))


def test_threshold_table_interpolates_the_crossing():
    """x* is the zero of the exponent gap, linearly interpolated; NaN without a crossing; the first x when already crossed.

    Fails on a plausible bug: interpolating towards the wrong neighbour, returning a grid point, or a crossing where there is none.
    """
    import pandas as pd

    xs = [0.1, 0.4, 0.7, 1.0, 1.3]
    rows = []
    for L, zero in ((256, 0.73), (1024, None), (4096, 0.0)):
        for x in xs:
            gap = (x - zero) if zero is not None else -1.0  # linear in x: crossing exactly at `zero`
            rows.append({"regime": "log", "L": L, "d": 3, "x": x, "approx_exponent": 2.0 + gap, "exact_exponent": 2.0})
    thr = phase.threshold_table(pd.DataFrame(rows)).set_index("L")
    assert thr.x_star[256] == pytest.approx(0.73)
    assert math.isnan(thr.x_star[1024])
    assert thr.x_star[4096] == pytest.approx(0.1)
    assert thr.Gamma_star[256] == pytest.approx(0.73 * math.sqrt(math.log(256)))


def test_threshold_sweep_against_independent_degrees():
    """limits.threshold: at Gamma* the rank C(g + d, d) first reaches L, and eps = 1/L needs degree g there.

    Checked against numpy's Chebyshev interpolant evaluated in the Chebyshev basis (not the toolkit's power basis):
    just below R* = Gamma*^2 degree g - 1 reaches 1/L, just above it does not.
    """
    from numpy.polynomial import chebyshev

    def rel_err(R, g):
        c = chebyshev.chebinterpolate(lambda t: np.exp(R * t), g)
        t = np.cos(np.linspace(0, math.pi, 2001))
        return float(np.max(np.abs(chebyshev.chebval(t, c) - np.exp(R * t)) / np.exp(R * t)))

    df = phase.threshold_sweep(Ls=(256, 4096, 65536))
    assert list(df.d) == [4, 6, 8]  # d = log2(L) / 2
    for r in df.itertuples():
        assert math.comb(r.degree + r.d, r.d) >= r.L > math.comb(r.degree - 1 + r.d, r.d)
        assert r.R_star == pytest.approx(r.Gamma_star**2) and r.eps == 1 / r.L
        assert rel_err(r.R_star * (1 - 1e-3), r.degree - 1) <= 1 / r.L < rel_err(r.R_star * (1 + 1e-2), r.degree - 1)
    assert df.Gamma_star.is_monotonic_increasing  # grows with L in this regime (limits.threshold)
    fixed = phase.threshold_sweep(Ls=(256, 4096), regime="fixed")
    assert (fixed.d == 4).all() and fixed.Gamma_star.iloc[1] > df.Gamma_star.iloc[1]


def test_runtime_sweep_fits():
    df = phase.runtime_sweep(Ls=(256, 512, 1024), repeats=1)
    assert set(df.method) == {"exact", "approx"} and df.seconds.gt(0).all()
    assert math.isfinite(phase.fit_loglog(df, "exact"))
    assert df[df.method == "approx"].rel_err.max() <= 1e-2


@pytest.mark.parametrize("name", ["degree_vs_range", "phase_transition", "gradient_error_vs_bound", "runtime_scaling"])
def test_figures_render_tiny(name, tmp_path):
    from lora_theory.studies.limits import phase_transition_study, runtime_study

    small = {
        "degree_vs_range": lambda: phase.degree_sweep(Rs=(0.5, 2.0), epss=(1e-3,)),
        "phase_transition": lambda: phase_transition_study(True, reach=(8,), far=(64,), xs=(0.3, 0.9), threshold_log2_Ls=(8, 12, 16, 24, 64, 128, 512)),
        "gradient_error_vs_bound": lambda: phase.gradient_error_sweep(Ls=(64,), gammas=(0.5, 2.0), peer=True, peer_seeds=2),
        "runtime_scaling": lambda: runtime_study(True, grid=[(L, 4, 2) for L in (128, 256, 512)] + [(256, 2, 2)], rounds=1),
    }[name]()
    out = render(name, tmp_path, data=small)
    assert out["png"].stat().st_size > 1000
    assert get_figure(name).claims


def test_gradient_error_sweep_peer_rows():
    df = phase.gradient_error_sweep(Ls=(128,), gammas=(0.5, 4.0), kinds=("random",), peer=True, peer_seeds=2)
    assert list(df.method) == ["polynomial", "favor+", "polynomial", "favor+"]
    assert (df.groupby("Gamma").k.nunique() == 1).all()  # the peer runs at the polynomial's feature count
    poly = df[df.method == "polynomial"].set_index("Gamma").rel_err
    rf = df[df.method == "favor+"].set_index("Gamma").rel_err
    assert poly[0.5] < rf[0.5]  # inside the bounded regime the polynomial wins
    assert poly[4.0] > 1e3 * poly[0.5]  # and at a fixed degree it degrades past the threshold


def test_crossover_uses_the_last_sign_change():
    import pandas as pd

    rows = [(64, 1.0, 2.0), (128, 3.0, 2.0), (256, 1.0, 2.0), (512, 8.0, 2.0)]  # (L, exact, approx): noisy flip at 128
    df = pd.DataFrame([{"L": L, "method": m, "seconds": t} for L, e, a in rows for m, t in (("exact", e), ("approx", a))])
    assert 256 < phase.crossover(df) < 512
    assert math.isnan(phase.crossover(df[df.L < 512]))
