"""The LoRA+ toy model (eq. 2): f(x) = b a^T x (W* = 0), loss 1/2 (f - y)^2, simulated over widths.

b (scalar, the output side "B") and a (n,) ("A"); x has Theta(1) coordinates. Per step,
with U = f - y: dL/db = (a^T x) U, dL/da = b U x. The output change splits as
Delta f_t = delta1 + delta2 + delta3 with

    delta1 = b_{t-1} (a_t - a_{t-1})^T x        (a moves, b fixed)
    delta2 = (b_t - b_{t-1}) a_{t-1}^T x        (b moves, a fixed)
    delta3 = (b_t - b_{t-1}) (a_t - a_{t-1})^T x (both)

(for GD these are -eta_a b^2 U ||x||^2, -eta_b (a^T x)^2 U and eta_a eta_b U^2 b (a^T x) ||x||^2).

Optimizers: "gd", "signsgd" (sign of the gradient) and "adam" (beta1 = 0.9, beta2 = 0.999,
bias-corrected, eps = 1e-12 so that its processed gradients are Theta(1) as in Thm 1). Inits:
1 (b = 0, a ~ N(0, 1/n) rescaled so that a^T x = 1) and 2 (b = 1, a = 0). Constants are fixed
to O(1) values so that a width sweep measures exponents, not noise: x is Rademacher
(||x||^2 = n exactly), y = 1. Widths and seeds are simulated at once (batched tensors).

Reference: Hayou et al. (2024), Sec. 3 (eq. 2, Prop. 1, Prop. 2) and Thm 1; claims
``lora_plus.prop1``, ``lora_plus.prop2``, ``lora_plus.thm1``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import pandas as pd
import torch

from .._validate import InvalidArgumentError, check_int, check_positive
from ._update import Updater, check_optimizer_init, one_thread

__all__ = ["simulate_toy"]


@one_thread()  # tiny tensors: see _update.one_thread
def simulate_toy(
    widths: Sequence[int],
    steps: int,
    *,
    optimizer: str = "gd",
    init: int = 1,
    a: float = -1.0,
    b: float = 0.0,
    c_a: float = 0.1,
    c_b: float = 0.1,
    seeds: Sequence[int] = (0,),
    y: float = 1.0,
) -> pd.DataFrame:
    """f_t = b_t a_t^T x under GD / SignSGD / Adam on 1/2 (f - y)^2, eta_A = c_a n^a, eta_B = c_b n^b, every (n, seed).

    Args:
        widths: positive widths n. steps: >= 1. optimizer: "gd", "signsgd" or "adam".
        init: 1 (b = 0, a^T x = 1) or 2 (b = 1, a = 0). a, b: exponents of eta_A, eta_B.
        c_a, c_b: the O(1) constants of the learning rates (> 0). seeds: non-empty, batched.
        y: the target.

    Returns:
        Tidy DataFrame, one row per (n, seed, step), step = 1..steps: delta1, delta2, delta3,
        df (= f_t - f_{t-1} = delta1 + delta2 + delta3), f, b_t, aTx (= a_t^T x), Z_A (= a_t^T x,
        the adapter's feature), Z_B (= f_t, its output), loss (1/2 (f_t - y)^2), plus the
        configuration (optimizer, init, a, b).
    """
    check_optimizer_init(optimizer, init)
    steps = check_int("steps", steps, low=1)
    c_a, c_b = check_positive("c_a", c_a), check_positive("c_b", c_b)
    for name, v in (("a", a), ("b", b)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise InvalidArgumentError(f"{name}: expected a finite real exponent, got {v!r}")
    a, b = float(a), float(b)  # numpy integers: n ** np.int64(-1) raises
    widths = [check_int("widths", n, low=1) for n in widths]
    if not widths:
        raise InvalidArgumentError("widths: expected at least one width, got none")
    if len(seeds) == 0:
        raise InvalidArgumentError("seeds: expected at least one seed, got none")
    rows = []
    f64 = torch.float64
    for n in widths:
        S = len(seeds)
        gen = [torch.Generator().manual_seed(int(s) * 7919 + n) for s in seeds]
        x = torch.stack([torch.randint(0, 2, (n,), generator=g).to(f64) * 2 - 1 for g in gen])  # (S, n) Rademacher
        if init == 1:
            A = torch.stack([torch.randn(n, generator=g, dtype=f64) for g in gen]) / n**0.5
            A = A / (A * x).sum(1, keepdim=True)  # a^T x = 1 exactly: the O(1) constant is fixed
            B = torch.zeros(S, dtype=f64)
        else:
            A = torch.zeros(S, n, dtype=f64)
            B = torch.ones(S, dtype=f64)
        # n**e as a float64 tensor power: a huge exponent gives inf (an exploding run), not an OverflowError
        eta_a, eta_b = (c * float(torch.tensor(float(n), dtype=f64) ** e) for c, e in ((c_a, a), (c_b, b)))
        upd_A, upd_B = Updater(optimizer, A), Updater(optimizer, B)
        for t in range(1, steps + 1):
            s = (A * x).sum(1)  # (S,) a^T x
            f = B * s
            U = f - y
            gA = (B * U)[:, None] * x  # (S, n) dL/da
            gB = s * U  # (S,) dL/db
            dA, dB = upd_A(gA, eta_a, t), upd_B(gB, eta_b, t)
            ds = (dA * x).sum(1)  # (S,) change of a^T x
            d1, d2, d3 = B * ds, dB * s, dB * ds
            A, B = A + dA, B + dB
            s_new = (A * x).sum(1)  # (S,) a_t^T x
            f_new = B * s_new
            loss = 0.5 * (f_new - y) ** 2  # tensor arithmetic: an exploding run gives inf, not an OverflowError
            for i, seed in enumerate(seeds):
                rows.append({"optimizer": optimizer, "init": init, "a": a, "b": b, "n": n, "seed": seed, "step": t,
                             "delta1": float(d1[i]), "delta2": float(d2[i]), "delta3": float(d3[i]), "df": float(f_new[i] - f[i]),
                             "f": float(f_new[i]), "b_t": float(B[i]), "aTx": float(s_new[i]), "Z_A": float(s_new[i]), "Z_B": float(f_new[i]),
                             "loss": float(loss[i])})
    return pd.DataFrame(rows)
