"""Study: agreement of the blocked closed-form gradient with autograd across score ranges.

Claims ``limits.grad_closed_form`` and ``limits.grad_blocked``: for each (dtype, adapt,
attention, bound) the max-entry relative error of every gradient of
:func:`lora_theory.exact_gradients` against :func:`lora_theory.autograd_gradients` (computed
in float64), with the instance's score range R.
"""
from __future__ import annotations

import itertools

import pandas as pd
import torch

from ..exact import autograd_gradients, exact_gradients
from ..figures import register_figure
from ..instance import make_instance, norm_bounds
from ..tolerances import max_rel_error

__all__ = ["closed_form_agreement"]


def closed_form_agreement(
    bounds: tuple[float, ...] = (0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
    *,
    L: int = 256,
    d: int = 8,
    r: int = 2,
    seeds: tuple[int, ...] = (0, 1),
    block_size: int = 37,
) -> pd.DataFrame:
    """Max relative error of blocked exact gradients (float64 and float32) vs float64 autograd.

    Returns:
        Tidy DataFrame: dtype, adapt, attention, bound, seed, R, param, rel_err.
    """
    rows = []
    for adapt, attention, bound, seed in itertools.product(("qv", "qkv"), ("self", "cross"), bounds, seeds):
        inst = make_instance(L, d, r, adapt=adapt, attention=attention, bound=bound, seed=seed)
        ref = autograd_gradients(inst, method="dense")
        R = norm_bounds(inst)["R"]
        for dtype in (torch.float64, torch.float32):
            g = exact_gradients(inst.to(dtype=dtype), block_size=block_size)
            for k, v in g.items():
                rows.append({"dtype": str(dtype).removeprefix("torch."), "adapt": adapt, "attention": attention,
                             "bound": bound, "seed": seed, "R": R, "param": k, "rel_err": max_rel_error(v, ref[k])})
    return pd.DataFrame(rows)


def _compute(quick: bool) -> pd.DataFrame:
    if quick:
        return closed_form_agreement(bounds=(0.5, 2.0, 8.0, 32.0), L=96, seeds=(0,))
    return closed_form_agreement()


def _plot(df: pd.DataFrame):
    from ..plotting.limits import plot_closed_form_agreement

    return plot_closed_form_agreement(df)


register_figure(
    "limits_grad_closed_form",
    claims=("limits.grad_closed_form", "limits.grad_blocked"),
    description="Blocked closed-form LoRA gradient vs float64 autograd: max relative error per score range R, float64 and float32.",
    compute=_compute,
    plot=_plot,
)
