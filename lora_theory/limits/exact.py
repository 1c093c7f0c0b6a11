"""The exact LoRA-attention gradient: dL/dB_mu = (alpha/r) G_mu A_mu^T, dL/dA_mu = (alpha/r) B_mu^T G_mu.

With Q = X_Q W_Q, K = X_K W_K, V = X_V W_V and S = beta Q K^T (L x L):

    f = row-softmax(S) = D^{-1} exp(S),   O = f V,   c = O - Y              (L, d)
    q = c V^T,   rho = rowsum(f o q) = rowsum(c o O),   p = f o q - diag(rho) f = dL/dS
    G_Q = beta X_Q^T p K,   G_K = beta X_K^T p^T Q,   G_V = X_V^T f^T c       (n, d)

``exact_gradients`` evaluates this in row blocks of the queries with a log-sum-exp shift, so
only (block, L) pieces of S, f, q, p ever exist: peak memory O(block * L + L d), time
Theta(L^2 d). ``autograd_gradients`` is the independent reference: torch autograd through the
dense formula (``scaled_dot_product_attention`` by default).

Batched multi-head instances (leading batch dimensions, see :mod:`lora_theory.limits.instance`)
run in the same pass: every product carries the batch dimensions (no Python loop over heads or
sequences), and the gradient of a tensor shared along a batch dimension (LoRA's B shared by the
heads, X shared by the heads, W* shared by the sequences) is summed along it. A causal instance
masks the scores j > i before the softmax, so f and p vanish there.

Reference: Hu et al. (2024), arXiv 2406.03136, Lemma 3.1 (f, c, q, "Part II" f o q and
"Part III" diag(rho) f), Lemma 3.2 (the chain to A and B); claims ``limits.lemma3.1``,
``limits.lemma3.2``, ``limits.grad_closed_form``, ``limits.grad_blocked``.
"""
from __future__ import annotations

from typing import Literal

import torch

from .._validate import InvalidArgumentError, check_choice, check_int
from .instance import AttentionLoRAInstance, batched_matmul

__all__ = ["autograd_gradients", "default_block_size", "dense_terms", "exact_gradients", "lora_chain", "loss", "rounding_slack", "weight_gradients"]

# Entries of one (block, L) piece: 2^18 (1 MiB float32) keeps the pieces cache-resident; on
# 2 cores this ran 2-3x faster than 2^22-entry pieces at L = 2^12 .. 2^15 (benchmarks/README.md).
_BLOCK_ELEMENTS = 1 << 18
_MIN_BLOCK_ROWS = 16  # below this, per-block Python overhead dominates
_DENSE_TERMS_MAX_L = 4096  # dense_terms forms L x L matrices; refuse beyond this


def _check_instance(inst: object) -> AttentionLoRAInstance:
    if not isinstance(inst, AttentionLoRAInstance):
        raise InvalidArgumentError(f"inst: expected an AttentionLoRAInstance (see make_instance), got {type(inst).__name__}")
    return inst


def default_block_size(L: int) -> int:
    """Rows per block: min(L, max(16, 2^18 / L)), so one (block, L) piece has about 2^18 entries.

    Peak memory is then a few such pieces plus O(L d): about 1 MiB per piece in float32 for
    every L up to 2^14, and 16 L entries beyond it (4 MiB per piece at L = 2^16).
    """
    L = check_int("L", L, low=1)
    return min(L, max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // L))


def _resolve_block(inst: AttentionLoRAInstance, block_size: int | None) -> int:
    if block_size is None:
        return default_block_size(inst.L)
    return min(check_int("block_size", block_size, low=1), inst.L)


def lora_chain(inst: AttentionLoRAInstance, G: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """dL/dB_mu = (alpha/r) G_mu A_mu^T (n, r) and dL/dA_mu = (alpha/r) B_mu^T G_mu (r, d).

    Args:
        inst: the instance (its A, B, alpha, r).
        G: dL/dW_mu (n, d) for every adapted mu; with batch dimensions, any shape between the
            adapted weight's and the full batch shape (sums over broadcast dimensions commute with
            the chain because A and B are constant along them).

    Returns:
        ``{"A_q": ..., "B_q": ..., ...}`` for every adapted mu, in q, k, v order, each of the shape
        of its factor (summed over the batch dimensions the factor is broadcast along).

    Reference: Hu et al. (2024), Lemma 3.2; claim ``limits.lemma3.2``.
    """
    s = inst.scale
    out: dict[str, torch.Tensor] = {}
    for mu in inst.adapt:
        A, B = inst.A[mu], inst.B[mu]
        out[f"A_{mu}"] = s * batched_matmul(B.mT, G[mu], A.shape)  # (*, r, d) summed to A's shape
        out[f"B_{mu}"] = s * batched_matmul(G[mu], A.mT, B.shape)  # (*, n, r) summed to B's shape
    return out


def _blocked_pass(inst: AttentionLoRAInstance, block: int, need: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One streaming pass over query blocks: the loss and dL/dQ, dL/dK, dL/dV as requested.

    Returns (loss, {"Q": (*batch, L, d), "K": ..., "V": ...} restricted to ``need``), batch the full
    broadcast batch shape.
    """
    L, d, bs = inst.L, inst.d, inst.batch_shape
    Q, K, V = (t.expand(*bs, L, d) for t in inst.projections())  # (*batch, L, d) each, views
    Qs = Q * inst.beta  # S = Qs K^T; scaling Q once costs O(L d) instead of O(L^2)
    Y = inst.Y.expand(*bs, L, d)
    want = set(need)
    dQ = torch.empty_like(Qs) if "Q" in want else None
    dK = torch.zeros_like(Qs) if "K" in want else None
    dV = torch.zeros_like(Qs) if "V" in want else None
    loss = torch.zeros((), dtype=Q.dtype, device=Q.device)
    grad = bool(want)
    cols = torch.arange(L, device=Q.device)
    for i in range(0, L, block):
        sl = slice(i, min(i + block, L))
        f = Qs[..., sl, :] @ K.mT  # (*batch, b, L) scores S_I
        if inst.causal:  # query i sees keys j <= i: exp(-inf) = 0 drops the rest (j = i is always kept)
            f.masked_fill_(cols[None, :] > torch.arange(sl.start, sl.stop, device=Q.device)[:, None], float("-inf"))
        # Stabilizing shift: softmax is invariant to a per-row constant, and subtracting the
        # row max makes every exponent <= 0, so exp never overflows (scores of 1e3 are fine).
        f -= f.amax(dim=-1, keepdim=True)
        f.exp_()
        f /= f.sum(dim=-1, keepdim=True)  # (*batch, b, L) f_I = row-softmax(S_I); each row sum >= 1 before dividing
        O = f @ V  # (*batch, b, d)
        if inst.upstream:  # Y is dL/dO of an arbitrary loss: the linear loss <O, Y> has c = dL/dO = Y
            c = Y[..., sl, :]
            loss = loss + (O * c).sum()
        else:
            c = O - Y[..., sl, :]  # (*batch, b, d)
            loss = loss + 0.5 * (c * c).sum()
        if not grad:
            continue
        if dV is not None:
            dV += f.mT @ c  # (*batch, L, d): f^T c
        if dQ is not None or dK is not None:
            rho = (c * O).sum(dim=-1, keepdim=True)  # (*batch, b, 1) rowsum(f o q) = c_i . O_i
            p = c @ V.mT  # (*batch, b, L) q_I = c_I V^T
            p -= rho
            p *= f  # (*batch, b, L) p_I = f o (q - rho 1^T) = dL/dS_I (0 where masked: f = 0)
            if dQ is not None:
                dQ[..., sl, :] = p @ K  # (*batch, b, d), times beta below
            if dK is not None:
                dK += p.mT @ Qs[..., sl, :]  # (*batch, L, d): beta p^T Q
    if dQ is not None:
        dQ *= inst.beta
    out = {"Q": dQ, "K": dK, "V": dV}
    return loss, {k: v for k, v in out.items() if v is not None}


def loss(inst: AttentionLoRAInstance, *, block_size: int | None = None) -> torch.Tensor:
    """L = 1/2 || D^{-1} exp(beta Q K^T) V - Y ||_F^2, row-blocked (0-dim tensor); <D^{-1} exp(beta Q K^T) V, Y> when ``inst.upstream``.

    Reference: Hu et al. (2024), Def. 2.5.
    """
    inst = _check_instance(inst)
    value, _ = _blocked_pass(inst, _resolve_block(inst, block_size), ())
    return value


def exact_gradients(inst: AttentionLoRAInstance, *, block_size: int | None = None) -> dict[str, torch.Tensor]:
    """The six (or four) LoRA gradients from the closed form, evaluated in query-row blocks.

    dL/dW_Q = beta X_Q^T p K, dL/dW_K = beta X_K^T p^T Q, dL/dW_V = X_V^T f^T c, then
    :func:`lora_chain`. Peak memory O(block_size * L + L d): no L x L matrix unless
    ``block_size >= L``.

    Args:
        inst: the instance; the computation runs on its device and in its dtype.
        block_size: query rows per block; default :func:`default_block_size` (about 2^18 / L).

    Returns:
        ``{"A_q": (r, d), "B_q": (n, r), ...}`` for every adapted weight (batched: each of its
        factor's shape, summed over the batch dimensions the factor is shared along).

    Reference: Hu et al. (2024), Lemma 3.1 and 3.2; claims ``limits.grad_closed_form``,
    ``limits.grad_blocked``.
    """
    inst = _check_instance(inst)
    return lora_chain(inst, weight_gradients(inst, block_size=block_size))


def weight_gradients(inst: AttentionLoRAInstance, *, block_size: int | None = None, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """G_mu = dL/dW_mu (n, d): G_Q = beta X_Q^T p K, G_K = beta X_K^T p^T Q, G_V = X_V^T f^T c.

    Args:
        inst: the instance.
        block_size: query rows per block (default :func:`default_block_size`).
        names: which of "q", "k", "v" (default: the adapted ones).

    Returns:
        ``{"q": (n, d), ...}``; the full fine-tuning gradient of each weight. Batched: of the
        adapted weight's shape ``inst.weight(mu).shape`` (summed over the batch dimensions the
        weight is shared along).

    Reference: Hu et al. (2024), Lemma 3.1; claim ``limits.grad_closed_form``.
    """
    inst = _check_instance(inst)
    names = inst.adapt if names is None else tuple(check_choice("names", n, ("q", "k", "v")) for n in names)
    _, dP = _blocked_pass(inst, _resolve_block(inst, block_size), tuple(m.upper() for m in names))
    X = {"q": inst.Xq, "k": inst.Xk, "v": inst.Xv}
    out = {}
    for mu in names:
        shape = torch.broadcast_shapes(inst.pretrained(mu).shape, *((inst.B[mu].shape[:-2] + (1, 1), inst.A[mu].shape[:-2] + (1, 1)) if mu in inst.A else ()))
        out[mu] = batched_matmul(X[mu].mT, dP[mu.upper()], shape)  # (*batch, n, d) summed to the weight's shape
    return out


def dense_terms(inst: AttentionLoRAInstance) -> dict[str, torch.Tensor]:
    """The dense Lemma 3.1 quantities f, c, q, rho, p (and S), for small L only.

    Returns:
        ``{"S": (L, L), "f": (L, L), "O": (L, d), "c": (L, d), "q": (L, L), "rho": (L,),
        "p": (L, L)}`` with p = f o q - diag(rho) f = dL/dS (with leading batch dimensions for a
        batched instance; S is the unmasked score matrix, f is 0 at masked pairs when causal).

    Raises:
        InvalidArgumentError: if L > 4096 (these are L x L matrices; use exact_gradients instead).

    Reference: Hu et al. (2024), Lemma 3.1; claim ``limits.lemma3.1``.
    """
    inst = _check_instance(inst)
    if inst.L > _DENSE_TERMS_MAX_L:
        raise InvalidArgumentError(f"inst: dense_terms forms L x L matrices; expected L <= {_DENSE_TERMS_MAX_L}, got L = {inst.L}")
    Q, K, V = inst.projections()
    S = inst.beta * (Q @ K.mT)  # (*batch, L, L)
    f = torch.softmax(_mask(S) if inst.causal else S, dim=-1)  # (*batch, L, L)
    O = f @ V
    c = inst.Y if inst.upstream else O - inst.Y  # upstream: Y is dL/dO itself
    q = c @ V.mT  # (*batch, L, L)
    rho = (f * q).sum(dim=-1)  # (*batch, L)
    p = f * q - rho[..., None] * f
    return {"S": S, "f": f, "O": O, "c": c, "q": q, "rho": rho, "p": p}


def _mask(S: torch.Tensor) -> torch.Tensor:
    """S with -inf above the diagonal (keys j > i), for causal attention."""
    L = S.shape[-1]
    return S.masked_fill(torch.ones(L, L, dtype=torch.bool, device=S.device).triu(1), float("-inf"))


def autograd_gradients(
    inst: AttentionLoRAInstance, *, method: Literal["sdpa", "dense"] = "sdpa"
) -> dict[str, torch.Tensor]:
    """Reference gradients by torch autograd through the dense loss (forms L x L matrices).

    Args:
        inst: the instance.
        method: ``"sdpa"`` uses ``torch.nn.functional.scaled_dot_product_attention`` (its
            fused kernels where the backend has them); ``"dense"`` writes
            softmax(beta Q K^T) V out explicitly.

    Returns:
        The same dict as :func:`exact_gradients`.
    """
    inst = _check_instance(inst)
    check_choice("method", method, ("sdpa", "dense"))
    A = {mu: a.detach().clone().requires_grad_(True) for mu, a in inst.A.items()}
    B = {mu: b.detach().clone().requires_grad_(True) for mu, b in inst.B.items()}
    s = inst.scale

    def weight(mu: str) -> torch.Tensor:
        w = inst.pretrained(mu)
        return w + s * (B[mu] @ A[mu]) if mu in A else w

    bs = (*inst.batch_shape, inst.L, inst.d)
    with torch.enable_grad():
        Q, K, V = (t.expand(bs) for t in (inst.Xq @ weight("q"), inst.Xk @ weight("k"), inst.Xv @ weight("v")))  # (*batch, L, d)
        if method == "sdpa":
            O = torch.nn.functional.scaled_dot_product_attention(Q[None], K[None], V[None], scale=inst.beta, is_causal=inst.causal)[0]
        else:
            S = inst.beta * (Q @ K.mT)  # (*batch, L, L)
            O = torch.softmax(_mask(S) if inst.causal else S, dim=-1) @ V
        value = (O * inst.Y).sum() if inst.upstream else 0.5 * ((O - inst.Y) ** 2).sum()  # upstream: dL/dO = Y
        params = [t for mu in inst.adapt for t in (A[mu], B[mu])]
        grads = torch.autograd.grad(value, params)
    out: dict[str, torch.Tensor] = {}
    it = iter(grads)
    for mu in inst.adapt:
        out[f"A_{mu}"] = next(it)
        out[f"B_{mu}"] = next(it)
    return out


def rounding_slack(inst: AttentionLoRAInstance) -> dict[str, float]:
    """A bound on the float64 rounding of :func:`exact_gradients` itself, per LoRA gradient (small L only).

    gamma_n = n u / (1 - n u), n = L + 3 max(d, n_in) + 8, times the max entry of the chain evaluated
    on absolute values (|X|^T |p| |K|, |X|^T |p|^T |Q|, |X|^T f^T |c|, then (alpha / r) |B|^T, |A|^T):
    the standard bound for sums of products. Comparing an approximation with the exact gradient
    within ``error_bound + rounding_slack`` makes a failure never the reference's fault. Uses
    :func:`dense_terms` (L x L matrices): L <= 4096.

    Reference: Higham (2002), Accuracy and Stability of Numerical Algorithms, Sec. 3.5 (gamma_n).
    """
    u = torch.finfo(torch.float64).eps / 2  # unit roundoff of float64
    i64 = _check_instance(inst).to(dtype=torch.float64)
    t = dense_terms(i64)
    Q, K, V = i64.projections()
    f, c = t["f"], t["c"]
    pabs = f * ((c.abs() @ V.abs().T) + (c * t["O"]).sum(1, keepdim=True).abs())  # >= |p| entrywise
    G = {"q": i64.beta * i64.Xq.abs().T @ (pabs @ K.abs()), "k": i64.beta * i64.Xk.abs().T @ (pabs.T @ Q.abs()), "v": i64.Xv.abs().T @ (f.T @ c.abs())}
    n = inst.L + 3 * max(inst.d, inst.Xq.shape[1]) + 8
    gam = n * u / (1 - n * u)
    out = {}
    for mu in inst.adapt:
        out[f"A_{mu}"] = gam * float((i64.scale * i64.B[mu].abs().T @ G[mu]).max())
        out[f"B_{mu}"] = gam * float((i64.scale * G[mu] @ i64.A[mu].abs().T).max())
    return out
