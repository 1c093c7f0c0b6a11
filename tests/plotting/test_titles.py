"""lora_theory.plotting: a figure drawn from a failed or non-finite measurement says so in its title, never "nan".

Each case fails before the fix: the LoRA-GA title read "reaches it nanx faster", the runtime title "R<=nan" (and
int(nan) raised for the degree), the heatmap title "eta_B/eta_A = nan" (and idxmin of an all-NaN loss raised)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from lora_theory.plotting import fmt


def _titles(fig) -> str:
    text = " ".join(ax.get_title() for ax in fig.axes) + " " + (fig._suptitle.get_text() if fig._suptitle else "")
    text += " " + " ".join(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
    plt.close(fig)
    return text


def _no_nan(text: str) -> None:
    words = text.replace("=", " ").replace(",", " ").lower().split()
    assert not any(w.startswith(("nan", "inf", "-inf")) for w in words), text


def test_fmt():
    assert fmt(1.23456) == "1.23" and fmt(math.nan) == fmt(None) == fmt("x") == fmt(math.inf) == "n/a (not measured)"


def test_finetune_steps_text_when_nothing_was_measured():
    """finetune_steps (the verdict forest plot) with an unmeasured part (nan interval, nan false-holds rate): no nan/inf in the text."""
    from lora_theory.plotting.finetune import plot_steps

    nan = math.nan
    rows = [{"claim": "lora_ga.speedup", "block": "premise", "part": "full FT speed-up over LoRA r=8", "estimate": 1.5, "low": nan, "high": nan,
             "threshold": 1.0, "sense": ">=", "part_verdict": "inconclusive", "n_seeds": 1, "false_holds": nan},
            {"claim": "lora_ga.speedup", "block": "", "part": "", "verdict": "inconclusive"}]
    fig = plot_steps(pd.DataFrame(rows))
    labels = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)  # the per-row labels beside the intervals
    text = _titles(fig) + " " + labels
    _no_nan(text)
    assert "PREMISE" in text


def test_runtime_title_without_exact_rows():
    """runtime_scaling (limits.thm3.1 (a)) with no exact-gradient rows (not measured): the titles still carry the claim's numbers, no nan."""
    from lora_theory.plotting.limits import plot_runtime_scaling

    df = pd.DataFrame({"method": ["approx"] * 4, "L": [64, 128, 64, 128], "d": [4] * 4, "degree": [2, 2, 4, 4], "k": [15, 15, 70, 70],
                       "cpu_seconds": [1.0, 2.0, 2.0, 4.1], "fitted_seconds": [1.0, 2.0, 2.0, 4.0], "fixed_k_exponent": [1.0] * 4,
                       "a": [0.0] * 4, "b": [0.0] * 4, "c": [1e-9] * 4})
    text = _titles(plot_runtime_scaling(df))
    _no_nan(text)
    assert "e = 1.000" in text and "[0.9, 1.1]" in text


@pytest.mark.parametrize("all_diverged", [False, True])
def test_heatmap_title_when_runs_diverge(all_diverged):
    from lora_theory.plotting.lora_plus import plot_heatmap

    rows = [{"eta_A": a, "eta_B": b, "test_loss": math.inf if all_diverged or b > 1e-2 else a + b, "ratio": b / a}
            for a in (1e-3, 1e-2) for b in (1e-3, 1e-2, 1e-1)]
    text = _titles(plot_heatmap(pd.DataFrame(rows)))
    _no_nan(text)
    assert ("n/a" in text) == all_diverged
