"""LoRA-attention gradients with exp(beta Q K^T) replaced by a positive low-rank factorization U V^T.

With A~ = U V^T (U, V (L, k), entrywise > 0) the approximate softmax is f~ = D~^{-1} A~,
D~ = U (V^T 1), and f~_i is a probability distribution over the keys j for every query row i.
Write E~_i[.] for the mean under f~_i and Z_j for the key-side inputs (X_K and X_V, stacked, one
copy when they are the same matrix, as in self and cross attention). Every quantity of the
gradient chain of Lemma 3.1 is a first or second moment of Z under f~_i:

    O~_i  = E~_i[X_V] W_V                       (d,)    c_i = O~_i - Y_i
    (p~ X_K)_i = sum_j p~_ij X_K,j = Cov~_i(X_K, c_i . V_j) = Cov~_i(X_K, X_V) W_V c_i     (n,)
    (p~ K)_i   = (p~ X_K)_i W_K                 because K = X_K W_K
    G_Q = beta X_Q^T (p~ X_K) W_K,   G_K = beta (p~ X_K)^T Q,   G_V = E~[X_V]^T c

(p = f o (q - rho 1^T), q_ij = c_i . V_j, rho_i = c_i . O_i, so sum_j p_ij x_j is the covariance
under f_i of c_i . V_j and x_j.) The moments come from ONE low-rank contraction

    N = U S,   S = V^T [1, Z - zbar, (Z - zbar)_a (Z - zbar)_b (a <= b)]     (k, 1 + m + m(m+1)/2)

(zbar a global shift that keeps the second moments well conditioned; covariances do not depend
on it), built in blocks of key rows, then streamed over blocks of query rows, each block's share
of G_Q, G_K, G_V added up as it goes: the features exist one (k, block) slice at a time, peak
memory O(block (k + m^2) + k m^2) beyond the O(L n) inputs, time O(L k m^2) with m = n
(self/cross attention) or 2n, where the previous chain needed four passes of O(L k d^2) through
both (L, k) factors.

Batched multi-head instances (leading batch dimensions, see :mod:`lora_theory.limits.instance`)
run through the same driver with one flattened leading element dimension E = prod(batch shape)
(:func:`flat_instance`): every tensor above gains a leading E, the features are built as
(k, E, b) slices, and the contractions are batched GEMMs (no Python loop over heads or
sequences; the only loop is over query-row blocks). The gradients of the factors are then summed
over the dimensions they are shared along (``lora_chain`` on the original instance, as
``exact_gradients`` does).

This is the one driver behind both feature maps: the polynomial method
(:mod:`lora_theory.limits.approx`, deterministic with a certified bound) and the FAVOR+ peer
(:mod:`lora_theory.limits.random_features`, unbiased, no bound).

Reference: Alman & Song (2024) (AS24) and Hu et al. (2024), Sec. 4-5 and Lemma 3.1 (the gradient
chain); the moment form is this toolkit's (proofs_checks/limits_bound.py::check_moment_form).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from .._validate import InvalidArgumentError
from .exact import lora_chain
from .instance import AttentionLoRAInstance

__all__ = [
    "ApproxInfo",
    "ApproximationError",
    "KeyMoments",
    "LowRankRun",
    "MomentSource",
    "block_gradients",
    "flat_instance",
    "key_inputs",
    "key_moments",
    "key_range_stats",
    "lowrank_gradients",
    "moment_gradients",
    "row_score_ranges",
    "run_lowrank",
    "score_range_bound",
    "score_range_bounds",
    "select_elements",
]

#: Largest query block of a causal instance: the diagonal block costs O(b^2 k) (b x b masked scores), the
#: rest O(b k c) per block, so b of order c..128 keeps the diagonal block from dominating (b = 128, k = 210,
#: c = 15 at d = 4: 2x the non-causal work per row).
CAUSAL_BLOCK = 128
Blocks = Callable[[int, int], torch.Tensor]  # (start, stop) -> (k, stop - start) features, transposed ((k, E, stop - start) batched)


class ApproximationError(ValueError):
    """The polynomial cannot certify the requested accuracy on this instance (the message says why)."""


@dataclass
class ApproxInfo:
    """What ``approx_gradients`` did: degree g, rank k, score range R, D~ min, error bound, times.

    Attributes:
        valid: False when the requested eps could not be certified (only with on_invalid="flag").
        reason: why it is invalid ("" when valid).
        degree: g; rank: k (features per row); R: the score range the polynomial covers (verified
            against the instance: at least :func:`score_range_bound`).
        poly_rel_error: delta, the certified sup relative error of P ~ e^s on [-R, R] plus the
            rounding bound of the monomial sums (the entrywise relative error of U V^T vs exp(S)).
        min_normalizer: min_i D~_i, the approximate softmax normalizer D~ = U (V^T 1) ~ sum_j e^{S_ij}
            (must be > 0; D~_i >= (1 - delta) L e^{-R}). For the random-feature peer D~ carries
            per-row stabilizing factors, so only its sign is meaningful there.
        error_bound: {"A_q": ..., ...} certified absolute max-entry bound on each gradient's error
            (a-posteriori: computed from the row-wise moments of this run, see ``approx``).
        times: seconds per phase ("keys": key features and moments; "queries": query features,
            gradients and the bound; "total").
        method: "chebyshev", "taylor" or "random_features".
        compute_dtype: the dtype the chain ran in (the gradients are returned in the instance's).
        batch_shape: the instance's batch shape (() for a single head).
        element_R: per-element Cauchy-Schwarz score range bounds R+_e, an array of ``batch_shape``
            (``R`` is the range the one polynomial covers: >= every R+_e).
        element_min_normalizer: min_i D~_i per element (array of ``batch_shape``).
        element_error_bound: per-element max-entry error bounds of each element's own gradient
            (arrays of ``batch_shape``; for a factor shared by E elements, ``error_bound`` bounds
            their sum, the returned gradient). Empty for the random-feature peer.
        element_degree, element_range: per element, the degree of the polynomial it ran with and the
            range [-R, R] that polynomial covers (>= element_R). ``degree``, ``rank`` and ``R`` are the
            largest over the elements (batched elements are grouped by the degree each needs).
    """

    valid: bool
    reason: str
    degree: int
    rank: int
    R: float
    poly_rel_error: float
    min_normalizer: float
    error_bound: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    method: str = "chebyshev"
    compute_dtype: str = "float64"
    batch_shape: tuple[int, ...] = ()
    element_R: np.ndarray | None = None
    element_min_normalizer: np.ndarray | None = None
    element_error_bound: dict[str, np.ndarray] = field(default_factory=dict)
    element_degree: np.ndarray | None = None
    element_range: np.ndarray | None = None


def score_range_bounds(inst: AttentionLoRAInstance) -> torch.Tensor:
    """R+_e = beta max_i ||Q_e,i||_2 max_j ||K_e,j||_2 per batch element e, float64 of shape ``inst.batch_shape``.

    Each bounds max |beta Q_e K_e^T| (Cauchy-Schwarz) in O(L d); 0-dim for a single head.
    Computed in float64 whatever the instance's dtype (``inf`` where it overflows even there).
    """
    Q, K, _ = inst.projections()
    qn = Q.double().norm(dim=-1).amax(dim=-1)  # (*batch_Q,) largest query row norm per element
    kn = K.double().norm(dim=-1).amax(dim=-1)  # (*batch_K,)
    return (inst.beta * qn * kn).expand(inst.batch_shape)


def score_range_bound(inst: AttentionLoRAInstance) -> float:
    """R+ = beta max_i ||Q_i||_2 max_j ||K_j||_2 >= max |beta Q K^T| (Cauchy-Schwarz), in O(L d).

    The exact R needs all L^2 scores; this bound is what an almost-linear algorithm can afford.
    Computed in float64 whatever the instance's dtype (``inf`` if it overflows even there). For a
    batched instance: the largest per-element bound (:func:`score_range_bounds`), which covers
    every element's scores.
    """
    return float(score_range_bounds(inst).max())


def key_range_stats(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_j ||K_j|| (*batch,), max_j |K_j| coordinate-wise (*batch, d)): what :func:`row_score_ranges` needs of the keys (K (*batch, L, d))."""
    return K.norm(dim=-1).amax(dim=-1), K.abs().amax(dim=-2)


def row_score_ranges(Q: torch.Tensor, K: torch.Tensor | None, beta: float, *, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(*batch, L) rho_i >= max_j |beta q_i . k_j| per element: min of the Cauchy-Schwarz and the box bound, O(L d).

    Cauchy-Schwarz: ||q_i|| max_j ||k_j||; box: sum_a |q_ia| max_j |k_ja| (Hoelder with the
    coordinate-wise largest key). Both also bound sum_a |q_ia k_ja| for every j, the abs-sum the
    monomial expansion sees (``ExpPolynomial.abs_sum``). ``stats`` (:func:`key_range_stats`)
    replaces K when the queries come in blocks.
    """
    kn, kabs = key_range_stats(K) if stats is None else stats
    return beta * torch.minimum(Q.norm(dim=-1) * kn[..., None], (Q.abs() @ kabs[..., :, None])[..., 0])  # (*batch, L)


def _sync(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def key_inputs(inst: AttentionLoRAInstance) -> tuple[torch.Tensor, slice, slice]:
    """Z (*batch, L, m) = the distinct key-side inputs, and the columns of X_K and X_V in it.

    Self and cross attention share X_K = X_V (m = n); otherwise Z = [X_K, X_V] (m = 2 n).
    """
    n = inst.Xk.shape[-1]
    if inst.Xk is inst.Xv or torch.equal(inst.Xk, inst.Xv):
        return inst.Xk, slice(0, n), slice(0, n)
    Xk, Xv = torch.broadcast_tensors(inst.Xk, inst.Xv) if inst.Xk.shape != inst.Xv.shape else (inst.Xk, inst.Xv)
    return torch.cat([Xk, Xv], dim=-1), slice(0, n), slice(n, 2 * n)


def flat_instance(inst: AttentionLoRAInstance) -> AttentionLoRAInstance:
    """The batched instance with every tensor expanded to the full batch shape and flattened to one leading dim E.

    E = prod(batch shape); element e is ``inst.element(*index)`` for the row-major index of e. Ties
    (X_Q = X_K = X_V) are kept. A tensor shared along a batch dimension is copied E / (its own
    elements) times: O(E L n) memory, the size of the projections anyway. A single head is returned
    unchanged.
    """
    bs = inst.batch_shape
    if not bs:
        return inst
    E = math.prod(bs)

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.expand(*bs, *t.shape[-2:]).reshape(E, *t.shape[-2:])  # (*batch, a, b) -> (E, a, b)

    Xq = flat(inst.Xq)
    Xk = Xq if inst.Xk is inst.Xq else flat(inst.Xk)
    Xv = Xk if inst.Xv is inst.Xk else (Xq if inst.Xv is inst.Xq else flat(inst.Xv))
    return inst.replace(Xq=Xq, Xk=Xk, Xv=Xv, Wq=flat(inst.Wq), Wk=flat(inst.Wk), Wv=flat(inst.Wv),
                        A={k: flat(v) for k, v in inst.A.items()}, B={k: flat(v) for k, v in inst.B.items()}, Y=flat(inst.Y))


def select_elements(flat: AttentionLoRAInstance, idx: torch.Tensor) -> AttentionLoRAInstance:
    """The elements ``idx`` (1-D indices) of a :func:`flat_instance` (batch shape (E,)), as an (len(idx), ...) instance (ties kept)."""
    idx = idx.to(device=flat.device)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, idx)

    Xq = pick(flat.Xq)
    Xk = Xq if flat.Xk is flat.Xq else pick(flat.Xk)
    Xv = Xk if flat.Xv is flat.Xk else (Xq if flat.Xv is flat.Xq else pick(flat.Xv))
    return flat.replace(Xq=Xq, Xk=Xk, Xv=Xv, Wq=pick(flat.Wq), Wk=pick(flat.Wk), Wv=pick(flat.Wv),
                        A={k: pick(v) for k, v in flat.A.items()}, B={k: pick(v) for k, v in flat.B.items()}, Y=pick(flat.Y))


def _lead(M: torch.Tensor) -> torch.Tensor:
    """(k, E, b) features -> (E, k, b) (a view); (k, b) unchanged."""
    return M.transpose(0, 1) if M.dim() == 3 else M


@dataclass
class KeyMoments:
    """Moments of the key-side inputs Z under f~_i for a block of query rows (see the module docstring).

    Batched (Z (E, L, m)): every tensor gains a leading E (``zbar`` (E, m), one shift per element).

    Attributes:
        rows: the query rows (a slice).
        D: (b,) D~_i = sum_j A~_ij (unnormalized; for FAVOR+ up to a per-row factor).
        mean: (b, m) E~_i[Z].
        cov: (b, m, m) Cov~_i(Z).
        second: (b, m) E~_i[(Z - zbar)^2] (the magnitudes the rounding bound needs).
        zbar: (m,) the global shift.
        n_sum: length of the longest floating-point sum behind a moment (keys + features).
    """

    rows: slice
    D: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    second: torch.Tensor
    zbar: torch.Tensor
    n_sum: int


class MomentSource:
    """S = psi^T [1, Z - zbar, (Z - zbar)_a (Z - zbar)_b] accumulated over key blocks, then moments per query block.

    Args:
        Z: (L_key, m) key-side inputs, in the compute dtype; or (E, L_key, m) for E elements.
        key_blocks, query_blocks: ``(start, stop) -> (k, stop - start)`` transposed features
            (psi^T, and phi^T without its weights), (k, E, stop - start) when batched; a returned
            tensor may be reused by the next call.
        block: rows per key block.
        weights: (k,) query-side factors (phi = weights * monomials), folded into S.
        causal: query i sees the keys j <= i only (queries and keys are the same L rows). Then S is
            a running prefix sum: ``moments`` must be called on consecutive blocks from row 0, and
            block I's moments are phi_I S_{<I} + tril(phi_I psi_I^T) W_I (the causal linear-attention
            chunk form: O(b^2 k) per block for the diagonal block, no L x L matrix).

    Memory: one (k, block) feature slice, one (block, c) slice of the key columns and S (k, c);
    nothing of size L x k or L x c.
    """

    def __init__(self, Z: torch.Tensor, key_blocks: Blocks, query_blocks: Blocks, *, block: int, weights: torch.Tensor | None = None,
                 causal: bool = False) -> None:
        L_key, m = Z.shape[-2:]
        lead = Z.shape[:-2]  # () or (E,)
        self.m = m
        self.query_blocks = query_blocks
        self.zbar = Z.mean(dim=-2)  # (*lead, m) any shift works; the mean keeps E~[(Z - zbar)^2] close to the covariances
        self.ia, self.ib = torch.triu_indices(m, m, device=Z.device)
        self.causal = causal
        if causal:
            self.Z, self.key_blocks, self.weights, self.next_row = Z, key_blocks, weights, 0
            self.S = None  # the prefix sum psi_{<i0}^T W_{<i0}, (*lead, k, c), built as the blocks come
            # one more addition than the non-causal sums: prefix part + diagonal-block part (each <= L_key + k deep)
            self.n_sum = L_key + 1  # + k, added at the first block (k is known from the features)
            return
        S = None
        for j0 in range(0, L_key, block):
            j1 = min(j0 + block, L_key)
            Zc = Z[..., j0:j1, :] - self.zbar[..., None, :]  # (*lead, b, m)
            W = torch.cat([torch.ones(*lead, j1 - j0, 1, dtype=Z.dtype, device=Z.device), Zc, Zc[..., self.ia] * Zc[..., self.ib]], dim=-1)  # (*lead, b, c)
            Mk = _lead(key_blocks(j0, j1))  # (*lead, k, b)
            S = Mk @ W if S is None else (S.baddbmm_(Mk, W) if lead else torch.addmm(S, Mk, W))  # (*lead, k, c) += (k, b) @ (b, c)
        if weights is not None:
            S *= weights[:, None]  # (k, 1) broadcasts over the elements
        self.S = S
        self.n_sum = L_key + S.shape[-2]  # keys + features (S is (*lead, k, c))

    def _key_columns(self, j0: int, j1: int) -> torch.Tensor:
        """(*lead, b, c) = [1, Z - zbar, (Z - zbar)_a (Z - zbar)_b] of key rows j0 .. j1."""
        Zc = self.Z[..., j0:j1, :] - self.zbar[..., None, :]  # (*lead, b, m)
        one = torch.ones(*Zc.shape[:-1], 1, dtype=Zc.dtype, device=Zc.device)
        return torch.cat([one, Zc, Zc[..., self.ia] * Zc[..., self.ib]], dim=-1)

    def _causal_numerators(self, i0: int, i1: int) -> torch.Tensor:
        """(*lead, b, c) unnormalized moments of rows i0 .. i1 over their keys j <= i; then S += block i0 .. i1."""
        if i0 != self.next_row:
            raise InvalidArgumentError(f"i0: a causal MomentSource takes consecutive blocks from row 0, expected {self.next_row}, got {i0}")
        W = self._key_columns(i0, i1)  # (*lead, b, c)
        Mk = _lead(self.key_blocks(i0, i1)).clone()  # (*lead, k, b): copied, the query features may reuse its buffer
        Mq = _lead(self.query_blocks(i0, i1))  # (*lead, k, b)
        if self.weights is not None:
            Mq = Mq * self.weights[:, None]  # phi = weights * monomials (folded into the queries: S is shared by later blocks)
        A = (Mq.mT @ Mk).tril_()  # (*lead, b, b) A~_ij for the block's own keys, 0 above the diagonal (j > i: masked)
        N = A @ W  # (*lead, b, c) the diagonal block's share
        if self.S is not None:
            N += Mq.mT @ self.S  # the keys before the block
        upd = Mk @ W  # (*lead, k, c)
        self.S = upd if self.S is None else self.S.add_(upd)
        if i0 == 0:
            self.n_sum += Mk.shape[-2]
        self.next_row = i1
        return N

    def moments(self, i0: int, i1: int) -> KeyMoments:
        """:class:`KeyMoments` of query rows i0 .. i1."""
        m = self.m
        if self.causal:
            N = self._causal_numerators(i0, i1)
        else:
            N = _lead(self.query_blocks(i0, i1)).mT @ self.S  # (*lead, b, c) = (*lead, b, k) @ (*lead, k, c), unnormalized moments
        D = N[..., 0]
        m1 = N[..., 1 : 1 + m] / D[..., None]  # (*lead, b, m) E~[Z - zbar]
        m2 = N[..., 1 + m :] / D[..., None]  # (*lead, b, m(m+1)/2) E~[(Z - zbar)_a (Z - zbar)_b]
        M2 = torch.empty(*N.shape[:-1], m, m, dtype=N.dtype, device=N.device)
        M2[..., self.ia, self.ib] = m2
        M2[..., self.ib, self.ia] = m2
        cov = M2 - m1[..., :, None] * m1[..., None, :]  # (*lead, b, m, m)
        return KeyMoments(rows=slice(i0, i1), D=D, mean=self.zbar[..., None, :] + m1, cov=cov,
                          second=torch.diagonal(M2, dim1=-2, dim2=-1).clone(), zbar=self.zbar, n_sum=self.n_sum)


def key_moments(Z: torch.Tensor, query_blocks: Blocks, key_blocks: Blocks, L_query: int, *, block: int,
                weights: torch.Tensor | None = None) -> KeyMoments:
    """E~_i[Z] and Cov~_i(Z) for all L_query rows at once (:class:`MomentSource` in one query block)."""
    return MomentSource(Z, key_blocks, query_blocks, block=block, weights=weights).moments(0, L_query)


def block_gradients(inst: AttentionLoRAInstance, mom: KeyMoments, sk: slice, sv: slice, Q: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The query rows ``mom.rows``' share of the weight gradients G_mu (their sum over blocks is G).

    Args:
        inst: the instance, in the dtype of ``mom`` (a single head, or :func:`flat_instance`'s (E, ...)
            one); Q: its query projections (all rows).
        mom: :class:`KeyMoments` of Z = :func:`key_inputs`; ``sk``, ``sv``: X_K's and X_V's columns.

    Returns:
        (G, aux): ``{"q": (n, d), ...}`` for the adapted weights, and the block's rows of ``"O"``,
        ``"c"`` (b, d) and ``"pXK"`` (b, n); each with a leading E when batched (per element).
    """
    rows = mom.rows
    Wv = inst.weight("v")  # (*lead, n, d)
    meanV = mom.mean[..., sv]  # (*lead, b, n) E~[X_V]
    O = meanV @ Wv  # (*lead, b, d) O~ = E~[V]
    c = inst.Y[..., rows, :] if inst.upstream else O - inst.Y[..., rows, :]  # (*lead, b, d); upstream: Y is dL/dO, exact as given
    need = set(inst.adapt)
    G: dict[str, torch.Tensor] = {}
    aux = {"O": O, "c": c}
    if need & {"q", "k"}:
        cV = c @ Wv.mT  # (*lead, b, n): c_i . V_j = (W_V c_i) . X_V,j
        pXK = (mom.cov[..., sk, sv] * cV[..., None, :]).sum(dim=-1)  # (*lead, b, n) Cov~_i(X_K, c_i . V)
        aux["pXK"] = pXK
        if "q" in need:
            G["q"] = inst.beta * (inst.Xq[..., rows, :].mT @ (pXK @ inst.weight("k")))  # beta X_Q^T (p~ K)
        if "k" in need:
            G["k"] = inst.beta * (pXK.mT @ Q[..., rows, :])  # beta X_K^T p~^T Q = beta (p~ X_K)^T Q
    if "v" in need:
        G["v"] = meanV.mT @ c  # X_V^T f~^T c = sum_i E~_i[X_V] c_i^T
    return G, aux


def moment_gradients(inst: AttentionLoRAInstance, mom: KeyMoments, sk: slice, sv: slice) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The LoRA gradients from the moments of all query rows (one block).

    Returns:
        (grads, G, aux): the LoRA gradients ``{"A_q": ...}``, the weight gradients and per-row
        ``"D"`` (L,), ``"O"``, ``"c"`` (L, d), ``"pXK"`` (L, n).
    """
    G, aux = block_gradients(inst, mom, sk, sv, inst.projections()[0])
    return lora_chain(inst, G), G, {"D": mom.D, **aux}


def _from_factors(U: torch.Tensor, V: torch.Tensor) -> tuple[Blocks, Blocks]:
    # (L, k) -> (k, L), or (E, L, k) -> (k, E, L): views in the layout of the block functions
    Ut, Vt = (U.T, V.T) if U.dim() == 2 else (U.permute(2, 0, 1), V.permute(2, 0, 1))

    def q(i0: int, i1: int) -> torch.Tensor:
        return Ut[..., i0:i1]

    def kk(j0: int, j1: int) -> torch.Tensor:
        return Vt[..., j0:j1]

    return q, kk


def lowrank_gradients(inst: AttentionLoRAInstance, U: torch.Tensor, V: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The LoRA gradients with exp(beta Q K^T) replaced by U V^T (any positive factorization).

    Args:
        inst: the instance (same dtype and device as U, V).
        U: (L, k) query-side factor; V: (L, k) key-side factor; U V^T must be entrywise > 0.

    Returns:
        (grads, G, aux) as :func:`moment_gradients`.
    """
    L = inst.L
    if U.dim() != 2 or U.shape != V.shape or U.shape[0] != L:
        raise InvalidArgumentError(f"U, V: expected two ({L}, k) factors, got {tuple(U.shape)} and {tuple(V.shape)}")
    Z, sk, sv = key_inputs(inst)
    q, kk = _from_factors(U, V)
    return moment_gradients(inst, key_moments(Z, q, kk, L, block=L), sk, sv)


class LowRankRun(NamedTuple):
    """What :func:`run_lowrank` returns: the gradients, aux tensors, phase times and validity problems."""

    grads: dict[str, torch.Tensor]
    G: dict[str, torch.Tensor]
    aux: dict[str, torch.Tensor]
    times: dict[str, float]
    reasons: list[str]


def run_lowrank(inst: AttentionLoRAInstance, query_blocks: Blocks | torch.Tensor, key_blocks: Blocks | torch.Tensor, t0: float, *,
                block: int | None = None, weights: torch.Tensor | None = None,
                on_block: Callable[[KeyMoments, dict[str, torch.Tensor]], None] | None = None,
                flat: AttentionLoRAInstance | None = None) -> LowRankRun:
    """Stream the query rows in blocks through :class:`MomentSource` and :func:`block_gradients`, timed from ``t0``.

    ``query_blocks`` and ``key_blocks`` are block functions, or the full (L, k) factors U and V.
    ``on_block(moments, aux)`` sees every query block (the error bound accumulates there). Reasons
    (for ``ApproxInfo.reason``) are collected, never raised: the normalizer D~ must be positive and
    finite in every row, and every gradient finite. ``aux`` holds ``"D"`` (L,).

    Batched ``inst``: the driver runs on E = prod(batch shape) elements at once, on
    :func:`flat_instance` (or ``flat``, the same thing already built by the caller); block functions
    return (k, E, b) and factors are (E, L, k). ``grads`` are then summed to the shapes of ``inst``'s
    factors (over the dimensions each is shared along), ``G`` stays per element (E, n, d), and
    ``aux["D"]`` is (*batch, L).

    Causal ``inst``: query i sees keys j <= i; the moments are prefix sums over the key blocks
    (:class:`MomentSource` with ``causal=True``) and blocks are at most :data:`CAUSAL_BLOCK` rows.
    """
    L, bs = inst.L, inst.batch_shape
    fi = flat_instance(inst) if flat is None else flat
    lead = (math.prod(bs),) if bs else ()
    if isinstance(query_blocks, torch.Tensor):
        U, V = query_blocks, key_blocks
        if (not isinstance(V, torch.Tensor) or U.shape != V.shape or U.dim() != len(lead) + 2 or tuple(U.shape[:-1]) != (*lead, L)):
            raise InvalidArgumentError(f"U, V: expected two ({', '.join(map(str, (*lead, L)))}, k) factors, got {tuple(U.shape)} and {tuple(getattr(V, 'shape', ()))}")
        query_blocks, key_blocks = _from_factors(U, V)
    block = block or (min(L, CAUSAL_BLOCK) if inst.causal else L)
    Z, sk, sv = key_inputs(fi)
    with torch.no_grad():
        Q, _, _ = fi.projections()
        src = MomentSource(Z, key_blocks, query_blocks, block=block, weights=weights, causal=inst.causal)
        _sync(Z)
        t1 = time.perf_counter()
        G: dict[str, torch.Tensor] = {}
        D = torch.empty(*lead, L, dtype=Z.dtype, device=Z.device)
        for i0 in range(0, L, block):
            mom = src.moments(i0, min(i0 + block, L))
            Gb, aux = block_gradients(fi, mom, sk, sv, Q)
            for mu, g in Gb.items():
                G[mu] = g if mu not in G else G[mu] + g
            D[..., mom.rows] = mom.D
            if on_block is not None:
                on_block(mom, aux)
        grads = lora_chain(inst, {mu: g.reshape(*bs, *g.shape[-2:]) for mu, g in G.items()})  # (E, n, d) -> (*batch, n, d), summed by the chain
        _sync(D)
    t2 = time.perf_counter()
    dmin = float(D.min())
    reasons = []
    if not dmin > 0 or not math.isfinite(float(D.max())):
        reasons.append(f"the approximate normalizer D~ is not positive and finite (min D~ = {dmin:.2e}, max |D~| = {float(D.abs().max()):.2e})")
    bad = [k for k, v in grads.items() if not bool(torch.isfinite(v).all())]
    if bad:
        reasons.append(f"non-finite gradients {bad} (min D~ = {dmin:.2e} in {D.dtype})")
    return LowRankRun(grads, G, {"D": D.reshape(*bs, L)}, {"keys": t1 - t0, "queries": t2 - t1, "total": t2 - t0}, reasons)
