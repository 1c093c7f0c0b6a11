"""Claims of Hayou et al. (2024), "LoRA+" (arXiv 2402.12354): ``lora_plus.*``.

Each scaling check runs a width sweep of the toy model (eq. 2), fits the slope of log|delta_i|
vs log n per step, and compares it with the exact exponent recursion for the same
configuration (:func:`~lora_theory.lora_plus.exponents.predict_exponents`); tolerance
:data:`~lora_theory.lora_plus.width_sweep.SLOPE_TOL` (0.15) on a slope. Exploding runs are checked up to
their explosion onset (later, finite widths lag behind the recursion; see paper_notes/lora_plus.md).
"""
from __future__ import annotations

import functools
import importlib
from fractions import Fraction

import numpy as np
import pandas as pd

from ..lora_plus import _update, exponents, ratio
from ..lora_plus.width_sweep import SLOPE_TOL, compare, fit_exponents
from . import Margin, Measurement, claim, control, patch

# the package re-exports the function width_sweep under the module's name: take the module itself
width_sweep = importlib.import_module("lora_theory.lora_plus.width_sweep")

# (optimizer, init, a, b, last step checked); eta_A = 0.1 n^a, eta_B = 0.1 n^b. Exploding runs are
# checked up to their explosion onset (beyond it U = f - y cancels at small widths; see the notes).
PROP1_CONFIGS = [("gd", 1, "-1/2", "-1/2", 4), ("gd", 2, "-1/2", "-1/2", 1), ("gd", 1, -1, -1, 4), ("gd", 2, -1, -1, 4), ("gd", 1, 0, 0, 2)]
PROP2_CONFIGS = [("gd", 1, -1, 0, 4), ("gd", 2, -1, 0, 4)]
THM1_CONFIGS = [("signsgd", 1, -1, 0, 4), ("signsgd", 2, -1, 0, 4), ("adam", 1, -1, 0, 4), ("adam", 2, -1, 0, 4),
                ("signsgd", 1, -1, -1, 4), ("adam", 1, -1, -1, 4), ("signsgd", 2, -1, -1, 4), ("adam", 2, -1, -1, 4), ("adam", 1, 0, 0, 2)]
THM1_LAYER_CONFIGS = [("signsgd", 1, -1, 0, 2), ("signsgd", 2, -1, 0, 2), ("adam", 1, -1, 0, 2), ("adam", 2, -1, 0, 2), ("adam", 1, -1, -1, 2), ("adam", 1, 0, 0, 2)]


def _fitted(opt: str, init: int, a: str, b: str, steps: int, quick: bool, model: str) -> pd.DataFrame:
    """Fitted slopes of one configuration (cached: the claims, the figure and the tests share sweeps; callers do not mutate).

    The cache key includes the simulators and the update rule as they are now, so that a negative
    control that corrupts them is measured, not answered from the cache.
    """
    code = (width_sweep.width_sweep, width_sweep.simulate_toy, width_sweep.simulate_layer, _update.Updater.__call__)
    return _fitted_cached(opt, init, a, b, steps, quick, model, code)  # the functions themselves, not id()s: a freed id can be reused


@functools.lru_cache(maxsize=128)
def _fitted_cached(opt: str, init: int, a: str, b: str, steps: int, quick: bool, model: str, _code: tuple) -> pd.DataFrame:
    widths = tuple(2**k for k in (range(6, 13) if quick else range(6, 15)))
    df = width_sweep.width_sweep(widths, steps, seeds=(0, 1, 2), optimizer=opt, init=init, a=float(Fraction(a)), b=float(Fraction(b)), model=model)
    return fit_exponents(df)


def check_configs(configs, quick: bool, steps: int = 4, model: str = "toy", predict_with=None) -> tuple[bool, pd.DataFrame]:
    """ok = all |slope_measured - gamma_predicted| <= SLOPE_TOL over the delta terms of every configuration.

    Args:
        configs: (optimizer, init, a, b, last step checked) tuples; eta_A = 0.1 n^a, eta_B = 0.1 n^b.
        quick: widths 2^6..2^12 (else 2^6..2^14); 3 seeds, medians.
        steps: steps simulated. model: "toy" (eq. 2) or "layer" (Sec. 4).
        predict_with: optional map (optimizer, init, a, b) -> the configuration whose predicted
            exponents are compared (default: the measured one). A wrong map must make the check fail.

    Returns:
        (ok, table): one row per (configuration, step, term) with slope, gamma, error, ok.
    """
    parts = []
    for opt, init, a, b, upto in configs:
        fitted = _fitted(opt, init, str(a), str(b), steps, bool(quick), model)
        p_opt, p_init, p_a, p_b = (opt, init, a, b) if predict_with is None else predict_with((opt, init, a, b))
        cmp = compare(fitted, exponents.predict_exponents(p_opt, p_init, p_a, p_b, steps), tol=SLOPE_TOL)
        cmp = cmp[cmp.step <= upto].assign(optimizer=opt, init=init, a=str(a), b=str(b), model=model)
        parts.append(cmp)
    table = pd.concat(parts, ignore_index=True)
    return bool(table.ok.all()), table


def _measurement(ok: bool, table: pd.DataFrame) -> Measurement:
    finite = table.error[table.error < float("inf")]
    worst = float(finite.max()) if len(finite) else float("inf")
    bad = int((~table.ok).sum())
    return Measurement(ok, {"rows": len(table), "max_error": worst, "mismatches": bad}, _summary(table),
                       {"max_slope_error": Margin(worst, SLOPE_TOL), "mismatched_slopes": Margin(float(bad), 0.0)})


def _summary(table: pd.DataFrame) -> str:
    finite = table[table.error < float("inf")]
    bad = table[~table.ok]
    s = f"{len(table)} (config, step, term) slopes; max |measured - predicted| {finite.error.max():.3f} (tol {SLOPE_TOL})"
    if len(bad):
        s += "; mismatches: " + ", ".join(f"{r.optimizer}/Init{r.init}/({r.a},{r.b}) {r.term}@{r.step}: {r.slope:.2f} vs {r.gamma_float:.2f}" for r in bad.head(4).itertuples())
    return s


@claim(
    "lora_plus.prop1",
    statement="GD with one learning rate eta = Theta(n^c) for A and B cannot learn features efficiently: the conditions force c = -1/2, and then Init[1] gives f_t = Theta(n^{-1/2}) (vanishing) while Init[2] gives gamma[f] = 1/2 (exploding).",
    reference="Hayou et al. 2024, Prop. 1",
    figure="lora_plus_exponents",
    test="tests/lora_plus/test_toy_sim.py::test_measured_slopes_match_predictions",
    proof="proofs_checks/lora_plus.py::check_prop1",
)
def _prop1(quick: bool) -> Measurement:
    return _measurement(*check_configs(PROP1_CONFIGS, quick))


@claim(
    "lora_plus.prop2",
    statement="Toy model, GD: eta_A = Theta(n^{-1}), eta_B = Theta(1) makes delta1, delta2, delta3 all Theta(1) for t > 1 (efficient feature learning), for both inits.",
    reference="Hayou et al. 2024, Prop. 2",
    figure="lora_plus_exponents",
    test="tests/lora_plus/test_toy_sim.py::test_measured_slopes_match_predictions",
    proof="proofs_checks/lora_plus.py::check_prop2",
)
def _prop2(quick: bool) -> Measurement:
    return _measurement(*check_configs(PROP2_CONFIGS, quick))


@claim(
    "lora_plus.thm1",
    statement="Adam-type updates (SignSGD, Adam): eta_A = eta_B = Theta(n^c) is inefficient for every c; eta_A = Theta(n^{-1}), eta_B = Theta(1) is efficient: eta_B / eta_A = Theta(n).",
    reference="Hayou et al. 2024, Thm 1",
    figure="lora_plus_exponents",
    test="tests/lora_plus/test_toy_sim.py::test_measured_slopes_match_predictions",
    proof="proofs_checks/lora_plus.py::check_thm1",
)
def _thm1(quick: bool) -> Measurement:
    return _measurement(*check_configs(THM1_CONFIGS, quick))


#: the optimum must beat every run with eta_B <= eta_A by this factor in test loss (not within noise)
RATIO_GAP = 1.1


@claim(
    "lora_plus.ratio",
    statement="On the Fig. 2 toy network (d = 5, n = 100, r = 4, Y = sin(mean X), GD) the best test loss over an (eta_A, eta_B) grid sits at eta_B / eta_A >> 1 (measured: >= 8), and every run with eta_B <= eta_A is at least 10% worse; 'inconclusive' when the optimum lies on the grid's edge.",
    reference="Hayou et al. 2024, Fig. 2",
    figure="lora_plus_heatmap",
    test="tests/lora_plus/test_ratio.py::test_ratio_grid_small",
)
def _ratio(quick: bool) -> Measurement:
    grid = tuple(np.logspace(-3, 1.5, 7 if quick else 10))
    df = ratio.ratio_grid(grid, grid, steps=100 if quick else 200)
    best = df.loc[df.test_loss.idxmin()]
    lower = df[df.eta_B <= df.eta_A * (1 + 1e-9)]  # the diagonal and below: LoRA+ read backwards or equal rates
    best_lower = lower.loc[lower.test_loss.idxmin()]
    gap = float(best_lower.test_loss / best.test_loss)
    on_edge = bool(np.isclose(best.eta_B, max(grid)) or np.isclose(best.eta_A, min(grid)))
    margins = {"best_ratio": Margin(float(best.ratio), 8.0, ">="), "gap_to_best_with_eta_B_le_eta_A": Margin(gap, RATIO_GAP, ">=")}
    holds: bool | None = bool(best.ratio >= 8 and gap >= RATIO_GAP)
    if holds and on_edge:
        holds = None
    figs = {"best_eta_A": float(best.eta_A), "best_eta_B": float(best.eta_B), "best_ratio": float(best.ratio), "best_test_loss": float(best.test_loss),
            "best_lower_test_loss": float(best_lower.test_loss), "best_lower_ratio": float(best_lower.ratio), "gap": gap, "optimum_on_grid_edge": on_edge}
    return Measurement(holds, figs,
                       f"best test loss {best.test_loss:.4f} at eta_A = {best.eta_A:.3g}, eta_B = {best.eta_B:.3g} (ratio {best.ratio:.3g}); best with eta_B <= eta_A "
                       f"{best_lower.test_loss:.4f} (ratio {best_lower.ratio:.3g}, {gap:.2f}x worse)" + ("; the optimum is on the grid's edge" if on_edge else ""), margins)


@control("lora_plus.ratio", "rates_swapped", "ratio_grid applies eta_A to B and eta_B to A (LoRA+ read backwards)")
def _():
    orig = ratio.ratio_grid

    def wrong(eta_As, eta_Bs, **kw):
        df = orig(eta_Bs, eta_As, **kw)  # rows now hold (eta_A, eta_B) swapped
        return df.rename(columns={"eta_A": "eta_B", "eta_B": "eta_A"}).assign(ratio=lambda d: d.eta_B / d.eta_A)

    return patch("lora_theory.lora_plus.ratio", "ratio_grid", wrong)


@claim(
    "lora_plus.thm1_layer",
    statement="Thm 1's exponents hold for the general LoRA layer of Sec. 4 (Zbar = W* Z + B A Z, width n on both sides, SignSGD / Adam): the RMS coordinates of delta1, delta2, delta3 scale as the recursion predicts, at the first steps (where U = Theta(1)).",
    reference="Hayou et al. 2024, Sec. 4, Thm 1",
    figure="lora_plus_exponents",
    test="tests/lora_plus/test_toy_sim.py::test_layer_first_steps",
)
def _thm1_layer(quick: bool) -> Measurement:
    # widths up to 2^14 even in quick mode (~10 s): below that, SignSGD from Init[2] still shows a
    # finite-width slope of 0.18 for delta3 at step 2 (measured; it shrinks to < 0.13 by 2^14)
    return _measurement(*check_configs(THM1_LAYER_CONFIGS, quick=False, model="layer"))


def _shifted_recursion(shift_a: Fraction, shift_b: Fraction, optimizers=("gd", "signsgd", "adam")):
    orig = exponents.predict_exponents

    def wrong(optimizer, init, a, b, steps):
        if optimizer in optimizers:
            a, b = Fraction(a) + shift_a, Fraction(b) + shift_b
        return orig(optimizer, init, a, b, steps)

    return patch("lora_theory.lora_plus.exponents", "predict_exponents", wrong)


def _unprocessed_updates():
    """SignSGD / Adam updates replaced by plain GD on the raw gradient (the Theta(1) processing dropped)."""
    orig = _update.Updater.__call__

    def wrong(self, g, eta, t):
        return -eta * g if self.optimizer in ("signsgd", "adam") else orig(self, g, eta, t)

    return patch("lora_theory.lora_plus._update.Updater", "__call__", wrong)


for _cid in ("lora_plus.prop1", "lora_plus.prop2", "lora_plus.thm1", "lora_plus.thm1_layer"):
    control(_cid, "exponent_shifted_half", "the recursion with eta_A's exponent shifted by +1/2 and eta_B's by -1/2")(
        lambda: _shifted_recursion(Fraction(1, 2), Fraction(-1, 2)))
for _cid in ("lora_plus.prop1", "lora_plus.prop2"):
    control(_cid, "width_factor_dropped", "the GD recursion without the ||x||^2 = n factor in Delta(a^T x) (eta_A's exponent off by 1)")(
        lambda: _shifted_recursion(Fraction(-1), Fraction(0), ("gd",)))
for _cid in ("lora_plus.thm1", "lora_plus.thm1_layer"):
    control(_cid, "unprocessed_updates", "SignSGD / Adam simulated as GD on the raw gradient (processed gradients no longer Theta(1))")(_unprocessed_updates)
