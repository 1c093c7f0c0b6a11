"""The general LoRA layer of LoRA+ Sec. 4: Zbar = W* Z + (alpha/r) B A Z, simulated over widths.

Width n on both sides: Z in R^n (Rademacher, Theta(1) coordinates), A (r, n), B (n, r),
Z_A = A Z (r,), Z_B = B Z_A (n,), W* = 0 (it does not move), alpha / r = 1, one sample with a
+-1 target Y (n,) and loss 1/2 ||Z_B - Y||^2. Gradients dL/dB = dZbar (x) Z_A and
dL/dA = (B^T dZbar) (x) Z; optimizers: the Adam-type ones Thm 1 covers, "signsgd" and "adam"
(processed gradients with Theta(1) entries), and plain "gd" (which the paper analyses only in the
toy model: here B^T dZbar sums n coordinates, so GD's exponents differ from the toy's and
:func:`~lora_theory.lora_plus.exponents.predict_exponents` makes no layer-GD prediction). Per step the output change splits as

    Delta Z_B = B_{t-1} Delta Z_A (delta1) + Delta B Z_A^{t-1} (delta2) + Delta B Delta Z_A (delta3),

and each vector is summarised by its root-mean-square coordinate (so Theta(1) means O(1) per
coordinate, as in Def. 3). Columns match :func:`~lora_theory.lora_plus.toy_sim.simulate_toy`
(``b_t`` = RMS entry of B, ``aTx`` = ``Z_A`` = RMS of Z_A, ``f`` = ``Z_B`` = RMS of Z_B), so the same slope fits and
the same Thm 1 recursion apply. Inits: 1 (B = 0, A ~ N(0, 1/n)), 2 (B ~ N(0, 1), A = 0).

Reference: Hayou et al. (2024), Sec. 4, Thm 1; claim ``lora_plus.thm1``.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from .._validate import InvalidArgumentError, check_int, check_positive
from ._update import Updater, check_optimizer_init, one_thread

__all__ = ["simulate_layer"]


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.pow(2).mean(dim=tuple(range(1, v.dim()))).sqrt()  # per seed


@one_thread()  # tiny tensors: see _update.one_thread
def simulate_layer(widths: Sequence[int], steps: int, *, optimizer: str = "adam", init: int = 1, a: float = -1.0, b: float = 0.0,
                   c_a: float = 0.1, c_b: float = 0.1, r: int = 4, seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Z_B = B A Z trained on 1/2 ||Z_B - Y||^2 with eta_A = c_a n^a, eta_B = c_b n^b, every (n, seed) (seeds batched).

    Args:
        widths: integers > r. steps: >= 1. optimizer: "gd", "signsgd" or "adam".
        init: 1 (B = 0, A ~ N(0, 1/n)) or 2 (B ~ N(0, 1), A = 0). a, b: exponents of eta_A, eta_B.
        c_a, c_b: the O(1) constants (> 0). r: the rank. seeds: non-empty, batched.

    Returns:
        Tidy DataFrame, one row per (n, seed, step): RMS coordinates of delta1, delta2, delta3 and
        df (= Z_B^t - Z_B^{t-1}), b_t (RMS entry of B), aTx = Z_A and f = Z_B (RMS coordinates),
        loss, and the configuration (model = "layer", optimizer, init, a, b).
    """
    check_optimizer_init(optimizer, init)
    steps, r = check_int("steps", steps, low=1), check_int("r", r, low=1)
    c_a, c_b = check_positive("c_a", c_a), check_positive("c_b", c_b)
    if not widths or any(check_int("widths", n) <= r for n in widths):
        raise InvalidArgumentError(f"widths: expected integers > r = {r}, got {list(widths)}")
    if len(seeds) == 0:
        raise InvalidArgumentError("seeds: expected at least one seed, got none")
    f64 = torch.float64
    rows = []
    for n in widths:
        S = len(seeds)
        gens = [torch.Generator().manual_seed(int(s) * 104729 + n) for s in seeds]
        Z = torch.stack([torch.randint(0, 2, (n,), generator=g).to(f64) * 2 - 1 for g in gens])  # (S, n)
        Y = torch.stack([torch.randint(0, 2, (n,), generator=g).to(f64) * 2 - 1 for g in gens])  # (S, n)
        if init == 1:
            A = torch.stack([torch.randn(r, n, generator=g, dtype=f64) for g in gens]) / n**0.5  # (S, r, n)
            B = torch.zeros(S, n, r, dtype=f64)
        else:
            A = torch.zeros(S, r, n, dtype=f64)
            B = torch.stack([torch.randn(n, r, generator=g, dtype=f64) for g in gens])
        eta_a, eta_b = c_a * n**a, c_b * n**b
        upd_A, upd_B = Updater(optimizer, A), Updater(optimizer, B)
        for t in range(1, steps + 1):
            ZA = torch.einsum("srn,sn->sr", A, Z)  # (S, r)
            ZB = torch.einsum("snr,sr->sn", B, ZA)  # (S, n)
            dZ = ZB - Y  # (S, n) dL/dZbar
            gB = dZ[:, :, None] * ZA[:, None, :]  # (S, n, r)
            gA = torch.einsum("snr,sn->sr", B, dZ)[:, :, None] * Z[:, None, :]  # (S, r, n)
            dA, dB = upd_A(gA, eta_a, t), upd_B(gB, eta_b, t)
            dZA = torch.einsum("srn,sn->sr", dA, Z)  # (S, r)
            d1 = torch.einsum("snr,sr->sn", B, dZA)
            d2 = torch.einsum("snr,sr->sn", dB, ZA)
            d3 = torch.einsum("snr,sr->sn", dB, dZA)
            A, B = A + dA, B + dB
            ZB_new = torch.einsum("snr,sr->sn", B, torch.einsum("srn,sn->sr", A, Z))
            za_new = _rms(torch.einsum("srn,sn->sr", A, Z))
            vals = {"delta1": _rms(d1), "delta2": _rms(d2), "delta3": _rms(d3), "df": _rms(ZB_new - ZB), "b_t": _rms(B),
                    "aTx": za_new, "Z_A": za_new, "f": _rms(ZB_new), "Z_B": _rms(ZB_new), "loss": 0.5 * (ZB_new - Y).pow(2).sum(1)}
            for i, seed in enumerate(seeds):
                rows.append({"model": "layer", "optimizer": optimizer, "init": init, "a": a, "b": b, "n": n, "seed": seed, "step": t,
                             **{k: float(v[i]) for k, v in vals.items()}})
    return pd.DataFrame(rows)
