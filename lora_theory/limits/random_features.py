"""The random-feature peer: exp(beta q . k) ~ phi(q) . phi(k) with Performer FAVOR+ positive features.

    phi(x) = m^{-1/2} exp(W x - ||x||^2 / 2),   W = (w_1 .. w_m)^T,  w_l ~ N(0, I_d),
    E[phi(x) . phi(y)] = exp(x . y)        (x = sqrt(beta) q, y = sqrt(beta) k)

because E[exp(w . (x + y))] = exp(||x + y||^2 / 2). Every feature is positive, so the
approximate normalizer D~ = U (V^T 1) is positive (up to underflow, which is checked). With
``orthogonal=True`` the w_l come in blocks of d mutually orthogonal directions with chi(d)
norms (each w_l is still N(0, I_d) marginally, so the estimator stays unbiased; the variance
drops). The gradients then follow exactly the same chain as the polynomial method
(:func:`lora_theory.limits.lowrank.run_lowrank`, in float64 whatever the instance's dtype), in
O(L m n^2), no L x L matrix.

There is no a-priori error bound: the estimate is unbiased but random, its relative variance
per entry is exp(||x + y||^2) / exp(2 x . y) - 1 >= 0 over m, which grows like e^{2R}.

Reference: Choromanski et al. (2021), "Rethinking Attention with Performers", ICLR, Lemma 1
(positive random features) and Thm 2 (orthogonal features); used as the peer of the
polynomial method in claims ``limits.thm3.1``, ``limits.thmA.1`` (benchmarks/bench_approx.py).
"""
from __future__ import annotations

import math
import time
from typing import Literal

import torch

from .._validate import InvalidArgumentError, check_choice, check_int, check_matrix
from .exact import _check_instance
from .instance import AttentionLoRAInstance
from .lowrank import ApproximationError, ApproxInfo, flat_instance, run_lowrank, score_range_bound, score_range_bounds

__all__ = ["positive_random_features", "random_directions", "random_feature_gradients"]


def random_directions(m: int, d: int, seed: int = 0, *, orthogonal: bool = True) -> torch.Tensor:
    """W (m, d) float64 on the CPU: rows w_l ~ N(0, I_d), optionally in orthogonal blocks of d.

    Args:
        m: number of features, >= 1.
        d: dimension, >= 1.
        seed: seed of a private ``torch.Generator`` (the global RNG is not touched).
        orthogonal: rows within each block of d are orthogonal, with chi(d)-distributed norms
            (so each row is still exactly N(0, I_d)); the last block is truncated to m.

    Reference: Choromanski et al. (2021), Sec. 2.4 (orthogonal random features).
    """
    m = check_int("m", m, low=1)
    d = check_int("d", d, low=1)
    seed = check_int("seed", seed, low=0)
    gen = torch.Generator().manual_seed(seed)
    if not orthogonal:
        return torch.randn(m, d, generator=gen, dtype=torch.float64)
    nb = math.ceil(m / d)  # blocks of d directions, drawn and orthogonalised as one batch
    G = torch.randn(nb, d, d, generator=gen, dtype=torch.float64)
    Qo, Rr = torch.linalg.qr(G)  # (nb, d, d): orthonormal columns per block
    Qo = Qo * torch.sign(torch.diagonal(Rr, dim1=1, dim2=2))[:, None, :]  # sign fix: makes each Qo Haar-distributed
    norms = torch.randn(nb, d, d, generator=gen, dtype=torch.float64).norm(dim=2)  # (nb, d) chi(d) samples
    return (Qo.transpose(1, 2) * norms[:, :, None]).reshape(nb * d, d)[:m]  # rows of orthogonal matrices, rescaled


def positive_random_features(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """log phi(X) + log sqrt(m) = X W^T - ||x_i||^2 / 2, as an (L, m) tensor of exponents.

    Returned in the log domain so that the caller can shift before exponentiating
    (exp(X W^T - ||x||^2/2) / sqrt(m) is phi(X) itself).

    Args:
        X: (L, d) rows x_i (already multiplied by sqrt(beta)), or (*batch, L, d).
        W: (m, d) random directions (any dtype/device; cast to X's), shared by every batch element.

    Returns:
        (L, m) exponents ((*batch, L, m) for a batched X), dtype and device of X.
    """
    if isinstance(X, torch.Tensor) and X.dim() > 2:
        check_matrix("X", X.reshape(-1, X.shape[-1]), (None, None))
    else:
        check_matrix("X", X, (None, None))
    check_matrix("W", W, (None, X.shape[-1]))
    W = W.to(dtype=X.dtype, device=X.device)
    return X @ W.T - 0.5 * (X * X).sum(dim=-1, keepdim=True)


def random_feature_gradients(
    inst: AttentionLoRAInstance,
    m: int,
    seed: int = 0,
    *,
    orthogonal: bool = True,
    on_invalid: Literal["raise", "flag"] = "raise",
) -> tuple[dict[str, torch.Tensor], ApproxInfo]:
    """LoRA gradients with exp(beta Q K^T) ~ phi(Q') phi(K')^T (FAVOR+, m features), O(L m d^2).

    Args:
        inst: the instance (any dtype/device); tensors that require grad are detached first.
        m: number of random features (compare with the polynomial method at m = its rank k).
        seed: seed of the random directions (results are reproducible per seed).
        orthogonal: orthogonal blocks of directions (Performer's default) or i.i.d. Gaussian.
        on_invalid: "raise" an :class:`lora_theory.ApproximationError` if the normalizer
            D~ underflows to <= 0 in some row, or "flag" it in ``info.valid``.

    Batched multi-head instances run all elements at once (as in :func:`lora_theory.approx_gradients`):
    the same m directions serve every element (so element e's result is the single-head call on
    ``inst.element(e)`` with the same seed), the key-side stabilizing constant is per element, and
    the gradient of a shared factor is summed over the elements sharing it. Causal instances use the
    prefix moments of :func:`lora_theory.limits.lowrank.run_lowrank`.

    Returns:
        (grads, info): grads as :func:`lora_theory.exact_gradients`; ``info`` an
        :class:`lora_theory.ApproxInfo` with ``rank = m``, ``degree = 0``,
        ``method = "random_features"``, ``poly_rel_error = nan`` and an empty ``error_bound``
        (no deterministic bound exists for a random estimate).

    Reference: Choromanski et al. (2021), Lemma 1; Hu et al. (2024), Thm 3.1 (the peer it is
    compared against); claims ``limits.thm3.1``, ``limits.thmA.1``.
    """
    inst = _check_instance(inst).detach()  # closed-form gradients: tensors that require grad are read, never differentiated
    m = check_int("m", m, low=1)
    seed = check_int("seed", seed, low=0)
    check_choice("on_invalid", on_invalid, ("raise", "flag"))
    if not isinstance(orthogonal, bool):
        raise InvalidArgumentError(f"orthogonal: expected a bool, got {orthogonal!r}")
    t0 = time.perf_counter()
    ic = inst if inst.dtype == torch.float64 else inst.to(dtype=torch.float64)  # the moments need float64 (covariances by differences)
    fi = flat_instance(ic)  # (E, ...) when batched
    Q, K, _ = fi.projections()  # (*lead, L, d)
    W = random_directions(m, Q.shape[-1], seed, orthogonal=orthogonal)
    sb = math.sqrt(inst.beta)
    lq = positive_random_features(Q * sb, W)  # (*lead, L, m)
    lk = positive_random_features(K * sb, W)  # (*lead, L, m)
    # Stabilizing shifts: a per-row constant on the query side and one constant per element on the key
    # side multiply U V^T by c_i and c: both cancel in D~^{-1} U V^T, and keep exp from overflowing.
    U = torch.exp(lq - lq.amax(dim=-1, keepdim=True))
    V = torch.exp(lk - lk.amax(dim=(-2, -1), keepdim=True))
    run = run_lowrank(ic, U, V, t0, flat=fi)
    grads = {k: v.to(dtype=inst.dtype) for k, v in run.grads.items()}
    bad = [k for k, v in grads.items() if not bool(torch.isfinite(v).all())]
    reason = "; ".join(run.reasons + ([f"gradients {bad} overflow {inst.dtype}"] if bad and not run.reasons else []))
    # min D~: only its sign is meaningful here, U carries a per-row factor (the shift above)
    D = run.aux["D"]  # (*batch, L)
    info = ApproxInfo(valid=not reason, reason=reason, degree=0, rank=m, R=score_range_bound(inst), poly_rel_error=float("nan"),
                      min_normalizer=float(D.min()), times=run.times, method="random_features", batch_shape=inst.batch_shape,
                      element_R=score_range_bounds(inst).cpu().numpy(), element_min_normalizer=D.amin(dim=-1).cpu().numpy())
    if reason and on_invalid == "raise":
        raise ApproximationError(f"random_feature_gradients: {reason}; the scores are too large for {m} features, pass on_invalid='flag' to get the result anyway")
    return grads, info
