"""An exact-enough reference for the edge-case properties: the LoRA gradients in mpmath (60 digits, no exponent range).

float64 cannot be the reference at the edges of the number range (2^-600 .. 2^600 per tensor): its own products under-
and overflow. mpmath numbers have unbounded exponents, so this reference is the exact gradient to 60 digits for any
instance, and a comparison against it needs no rounding slack. Small instances only (O(E L^2 d) mpmath operations).

Formulas (Hu et al. 2024, Lemma 3.1; the chain of ``lora_theory.limits.exact``): S = beta Q K^T (causal: j <= i),
f = softmax rows, O = f V, c = O - Y, G_V = X_V^T f^T c, p = f o (c V^T - (c . O) 1^T), G_Q = beta X_Q^T p K,
G_K = beta X_K^T p^T Q, dA = (alpha/r) B^T G, dB = (alpha/r) G A^T; a factor shared along batch dimensions gets the sum.
"""
from __future__ import annotations

import itertools

import mpmath
import numpy as np
import torch

mp = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
_DPS = 60


def _m(t: torch.Tensor) -> np.ndarray:
    """Exact conversion: every float16/bfloat16/float32/float64 value is a float64, and mpf(float64) is exact."""
    a = t.detach().double().cpu().numpy()
    return np.vectorize(lambda x: mpmath.mpf(float(x)), otypes=[object])(a) if a.size else a.astype(object)


def _head(Xq, Xk, Xv, Wq, Wk, Wv, A, B, sc, beta, Y, causal, adapt):
    W = {"q": Wq, "k": Wk, "v": Wv}
    for mu in adapt:
        W[mu] = W[mu] + sc * (B[mu] @ A[mu])
    Q, K, V = Xq @ W["q"], Xk @ W["k"], Xv @ W["v"]
    L = Q.shape[0]
    S = beta * (Q @ K.T)
    f = np.empty_like(S)
    for i in range(L):
        js = range(i + 1) if causal else range(L)
        mx = max(S[i, j] for j in js)
        e = [mpmath.exp(S[i, j] - mx) if (not causal or j <= i) else mpmath.mpf(0) for j in range(L)]
        tot = mpmath.fsum(e)
        for j in range(L):
            f[i, j] = e[j] / tot
    O = f @ V
    c = O - Y
    G = {"v": Xv.T @ (f.T @ c)}
    rho = np.array([mpmath.fsum(c[i, a] * O[i, a] for a in range(c.shape[1])) for i in range(L)], dtype=object)
    p = f * (c @ V.T - rho[:, None])
    G["q"] = beta * (Xq.T @ (p @ K))
    G["k"] = beta * (Xk.T @ (p.T @ Q))
    out = {}
    for mu in adapt:
        out[f"A_{mu}"] = sc * (B[mu].T @ G[mu])
        out[f"B_{mu}"] = sc * (G[mu] @ A[mu].T)
    return out


def mp_gradients(inst) -> dict[str, np.ndarray]:
    """The LoRA gradients of ``inst`` (single or batched) as mpmath object arrays shaped like the factors."""
    with mpmath.workdps(_DPS):
        bs = inst.batch_shape
        adapt = inst.adapt
        sc, beta = mpmath.mpf(inst.scale), mpmath.mpf(inst.beta)
        total: dict[str, np.ndarray] = {}
        for idx in itertools.product(*map(range, bs)) if bs else [()]:
            e = inst.element(*idx) if bs else inst
            g = _head(_m(e.Xq), _m(e.Xk), _m(e.Xv), _m(e.Wq), _m(e.Wk), _m(e.Wv), {mu: _m(e.A[mu]) for mu in adapt},
                      {mu: _m(e.B[mu]) for mu in adapt}, sc, beta, _m(e.Y), e.causal, adapt)
            for name, v in g.items():
                fac = (inst.A if name[0] == "A" else inst.B)[name[2]]
                fb = tuple(fac.shape[:-2])
                if name not in total:
                    total[name] = np.empty(fb + v.shape, dtype=object) if fb else None
                # the factor's own batch index: broadcast dims of size 1 (or absent) take the sum
                key = tuple(i if s != 1 else 0 for i, s in zip(idx[len(idx) - len(fb):], fb)) if fb else ()
                if fb:
                    cur = total[name][key]
                    if cur[0, 0] is None:
                        total[name][key] = v
                    else:
                        total[name][key] = cur + v
                else:
                    total[name] = v if total[name] is None else total[name] + v
        return total


def max_abs_error(g: torch.Tensor, ref: np.ndarray) -> float:
    """max |g - ref| (computed in mpmath, returned as a float64 rounded up; inf if g is not finite)."""
    a = g.detach().double().cpu().numpy()
    if not np.isfinite(a).all():
        return float("inf")
    with mpmath.workdps(_DPS):
        worst = mpmath.mpf(0)
        for x, y in zip(a.reshape(-1), ref.reshape(-1)):
            worst = max(worst, abs(mpmath.mpf(float(x)) - y))
        return float(mpmath.mpf(worst) * (1 + mpmath.mpf(2) ** -50))  # rounded up: float() rounds to nearest
