"""The LoRA+ Fig. 2 toy network over a learning-rate grid: where is the best (eta_A, eta_B)?

f(x) = W_out phi((W* + B A) phi(W_in x)), phi = ReLU,
d = 5 inputs, width n = 100, rank r = 4, 1000 training and 100 test samples with
X ~ N(0, I_d) and Y = sin(mean(X)). W_in (n, d), W* (n, n) and W_out (1, n) are a fixed random
"pretrained" network (He-scaled Gaussians); only A (r, n) and B (n, r) train, by full-batch GD
for ``steps`` steps from Init[1] (B = 0, A ~ N(0, 1/n)). Every (eta_A, eta_B) on the grid runs at
once (the grid is a batch dimension). Diverged runs (non-finite loss) get test loss inf.

Reference: Hayou et al. (2024), Fig. 2 (the printed details of the figure and the appendix
grids are not consistent with each other; this is what we ran); claim ``lora_plus.ratio``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .._validate import InvalidArgumentError, check_int, check_positive

__all__ = ["ratio_grid", "toy_network"]


def toy_network(*, n: int = 100, d: int = 5, r: int = 4, n_train: int = 1000, n_test: int = 100, seed: int = 0):
    """H = relu(X W_in^T), Y = sin(mean(X)): data and frozen network (H_train, H_test, Y_train, Y_test, W* (n, n), W_out (n,), A0 (r, n)).

    H = relu(X W_in^T) are the first layer's features (W_in is frozen, so they are fixed).
    """
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    X = torch.randn(n_train + n_test, d, generator=gen, dtype=f64)
    Y = torch.sin(X.mean(1))
    W_in = torch.randn(n, d, generator=gen, dtype=f64) * (2 / d) ** 0.5
    W = torch.randn(n, n, generator=gen, dtype=f64) * (2 / n) ** 0.5
    W_out = torch.randn(n, generator=gen, dtype=f64) / n**0.5
    A0 = torch.randn(r, n, generator=gen, dtype=f64) / n**0.5
    H = torch.relu(X @ W_in.T)  # (N, n)
    return H[:n_train], H[n_train:], Y[:n_train], Y[n_train:], W, W_out, A0


def ratio_grid(eta_As: Sequence[float] = tuple(np.logspace(-3, 1.5, 10)), eta_Bs: Sequence[float] = tuple(np.logspace(-3, 1.5, 10)), *,
               n: int = 100, d: int = 5, r: int = 4, n_train: int = 1000, n_test: int = 100, steps: int = 200, seed: int = 0) -> pd.DataFrame:
    """L(eta_A, eta_B) = 1/2 mean_test (f(x) - y)^2 after ``steps`` full-batch GD steps on A, B, for every grid point.

    Args:
        eta_As, eta_Bs: positive learning rates of A (r, n) and B (n, r); the grid is their product.
        n, d, r, n_train, n_test: sizes of :func:`toy_network`. steps: GD steps. seed: data and network.

    Returns:
        Tidy DataFrame, one row per grid point: eta_A, eta_B, ratio (= eta_B / eta_A), train_loss,
        test_loss (inf where the run diverged).
    """
    for name, etas in (("eta_As", eta_As), ("eta_Bs", eta_Bs)):
        if len(etas) == 0:
            raise InvalidArgumentError(f"{name}: expected at least one learning rate, got none")
        for e in etas:
            check_positive(name, e)
    for name, v in (("n", n), ("d", d), ("r", r), ("n_train", n_train), ("n_test", n_test), ("steps", steps)):
        check_int(name, v, low=1)
    Htr, Hte, Ytr, Yte, W, W_out, A0 = toy_network(n=n, d=d, r=r, n_train=n_train, n_test=n_test, seed=seed)
    f64 = torch.float64
    ea = torch.tensor([a for a in eta_As for _ in eta_Bs], dtype=f64)  # (G,) grid flattened
    eb = torch.tensor([b for _ in eta_As for b in eta_Bs], dtype=f64)
    G = len(ea)
    A = A0.expand(G, r, n).clone()  # the same init for every grid point
    B = torch.zeros(G, n, r, dtype=f64)

    def forward(Hx, A, B):
        HA = torch.einsum("nk,grk->gnr", Hx, A)  # (G, N, r): contract the rank first (cheap)
        Z = Hx @ W.T + HA @ B.transpose(1, 2)  # (G, N, n) pre-activation (W* + B A) h
        return torch.relu(Z) @ W_out, Z, HA  # (G, N)

    for _ in range(steps):
        out, Z, HA = forward(Htr, A, B)
        err = (out - Ytr) / n_train  # (G, N) dL/dout for L = 1/2 mean (out - y)^2
        dZ = err[:, :, None] * W_out * (Z > 0)  # (G, N, n)
        gB = dZ.transpose(1, 2) @ HA  # (G, n, r) = dM A^T with dM = dZ^T H
        gA = (dZ @ B).transpose(1, 2) @ Htr  # (G, r, n) = B^T dM
        A = A - ea[:, None, None] * gA
        B = B - eb[:, None, None] * gB
    tr = forward(Htr, A, B)[0]
    te = forward(Hte, A, B)[0]
    train = 0.5 * ((tr - Ytr) ** 2).mean(1)
    test = 0.5 * ((te - Yte) ** 2).mean(1)
    bad = ~torch.isfinite(train) | ~torch.isfinite(test)
    train[bad], test[bad] = float("inf"), float("inf")
    return pd.DataFrame({"eta_A": ea.numpy(), "eta_B": eb.numpy(), "ratio": (eb / ea).numpy(), "train_loss": train.numpy(), "test_loss": test.numpy()})
