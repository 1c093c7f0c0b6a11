"""LoRA-adapted attention instances: ``W_mu = W_mu* + (alpha / r) B_mu A_mu``, ``Q = X_Q W_Q``.

One instance is everything the loss of Hu et al. (2024), Def. 2.5, depends on:

    L(A, B) = 1/2 || D^{-1} exp(beta X_Q W_Q W_K^T X_K^T) X_V W_V - Y ||_F^2,
    D = diag(exp(.) 1_L).

Shapes (the paper's row convention): ``Xq, Xk, Xv`` (L, n); ``Wq, Wk, Wv`` (n, d) are the
pretrained weights W*; for each adapted name mu in "q", "k", "v": ``B[mu]`` (n, r) and
``A[mu]`` (r, d); ``Y`` (L, d). The paper's square case is n = d (the default of
:func:`make_instance`); a real attention head has n = the model width (plus one for a folded
bias) and d = the head dimension.

Batched multi-head instances: every tensor may carry leading batch dimensions that broadcast
against each other (torch broadcasting), e.g. ``Xq`` (batch, 1, L, n) shared by the heads,
``Wq`` (heads, n, d), ``A["q"]`` (heads, r, d), ``B["q"]`` (n, r) shared by every head and
sequence, ``Y`` (batch, heads, L, d). The loss is then the sum of the per-element losses over
the broadcast batch shape, and the gradient of a broadcast tensor is summed over the dimensions
it is broadcast along (exactly autograd's convention). ``causal=True`` restricts every query i
to the keys j <= i (decoder attention; the paper's loss has no mask). ``upstream=True`` makes ``Y``
the upstream gradient dL/dO of any loss (training through a model): L = <D^-1 exp(S) V, Y>.

Reference: Hu, Su, Kuo, Song, Liu, "Computational Limits of Low-Rank Adaptation (LoRA)
Fine-Tuning for Transformer Models", arXiv 2406.03136, Def. 1.1, 1.2, 2.5; Thm 3.1 and A.1
for the norm bounds; Alman & Song (2023), Lemma 4.7 for the hard instances.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from .._validate import (
    InvalidArgumentError,
    check_choice,
    check_finite,
    check_int,
    check_matrix,
    check_positive,
    check_same_dtype_device,
)

__all__ = [
    "AttentionLoRAInstance",
    "hard_instance",
    "make_instance",
    "norm_bounds",
    "parse_adapt",
    "score_range",
    "score_ranges",
]

Adapt = Literal["qv", "qkv"]
Attention = Literal["self", "cross", "general"]
_NAMES = ("q", "k", "v")
_ROW_BLOCK_ELEMENTS = 1 << 20  # rows per block * L for the R computation: 8 MiB in float64


_BATCH_LABELS = "abcdefgh"  # einsum labels of batch dimensions (i, j, k are the matrix indices)


def batched_matmul(a: torch.Tensor, b: torch.Tensor, shape: tuple[int, ...] | torch.Size | None = None) -> torch.Tensor:
    """a @ b over broadcast batch dimensions; with ``shape``: summed over the batch dimensions ``shape`` lacks or has as 1.

    Same result as ``(a @ b).sum_to_size(shape)``, but through one einsum: a batch dimension that an
    operand has as size 1 (X shared by the heads, B shared by every head) is never expanded into a
    copy, and the sum runs inside the contraction (4-5x faster on MiniLM-sized heads).

    Args:
        a: (*batch_a, i, j); b: (*batch_b, j, k), batch dims broadcasting together.
        shape: the result's shape (*out, i, k) with ``out`` broadcastable to the batch shape, or None.
    """
    if shape is None:
        return torch.einsum("...ij,...jk->...ik", a, b)
    full = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    nd = len(full)
    if nd > len(_BATCH_LABELS) or len(shape) - 2 > nd:
        return (a @ b).sum_to_size(shape)

    def squeezed(t: torch.Tensor) -> tuple[torch.Tensor, str]:
        tb = (1,) * (nd - t.dim() + 2) + tuple(t.shape[:-2])
        dims = [i for i in range(nd) if tb[i] != 1]
        return t.reshape(*[tb[i] for i in dims], *t.shape[-2:]), "".join(_BATCH_LABELS[i] for i in dims)

    a2, la = squeezed(a)
    b2, lb = squeezed(b)
    ob = (1,) * (nd - len(shape) + 2) + tuple(shape[:-2])
    lo = "".join(_BATCH_LABELS[i] for i in range(nd) if ob[i] != 1)
    return torch.einsum(f"{la}ij,{lb}jk->{lo}ik", a2, b2).reshape(shape)


def parse_adapt(adapt: object) -> tuple[str, ...]:
    """``"qv"`` -> ``("q", "v")``: a non-empty subset of "q", "k", "v" in that order.

    The paper's two cases are ``"qv"`` (partial, C1) and ``"qkv"`` (full, C2); any other
    non-empty subset (``"v"``, ``"qk"``, ...) is accepted as well.
    """
    if not isinstance(adapt, str) or not adapt or len(set(adapt)) != len(adapt) or not set(adapt) <= set(_NAMES):
        raise InvalidArgumentError(
            f"adapt: expected a non-empty string of distinct letters from 'qkv' such as 'qv' or 'qkv', got {adapt!r}"
        )
    return tuple(n for n in _NAMES if n in adapt)


def _stack(name: str, t: object, tail: tuple[int | None, ...], batched: bool) -> tuple[int, ...]:
    """Check ``t`` is a floating tensor of shape (*batch, *tail) (None in ``tail``: any size); return batch."""
    if isinstance(t, torch.Tensor) and t.dim() > len(tail) and batched:
        ok = all(s is None or s == n for s, n in zip(tail, t.shape[-len(tail):], strict=True))
        if not t.is_floating_point():
            check_matrix(name, t, tail)  # raises: not floating point
        if not ok:
            want = "(*batch, " + ", ".join("*" if s is None else str(s) for s in tail) + ")"
            raise InvalidArgumentError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
        if 0 in t.shape[: -len(tail)]:
            raise InvalidArgumentError(f"{name}: expected non-empty batch dimensions, got shape {tuple(t.shape)}")
        return tuple(t.shape[: -len(tail)])
    check_matrix(name, t, tail)
    return ()


@dataclass(frozen=True, eq=False)
class AttentionLoRAInstance:
    """One LoRA-adapted attention head (or a batch of them) with its data: W_mu = W_mu* + (alpha / r) B_mu A_mu.

    Fields: ``Xq, Xk, Xv`` (L, n); ``Wq, Wk, Wv`` (n, d) pretrained; ``A[mu]`` (r, d) and
    ``B[mu]`` (n, r) for each adapted mu; ``alpha`` > 0; ``r`` in 1..max(n, d); ``beta`` > 0;
    ``Y`` (L, d); ``attention`` records how the inputs are tied ("self": Xq = Xk = Xv,
    "cross": Xk = Xv, "general": no tie); ``causal``: query i attends to keys j <= i only;
    ``upstream``: ``Y`` is the upstream gradient dL/dO of an arbitrary loss instead of a target (the
    loss is then the linear functional <D^-1 A V, Y>, whose LoRA gradients are those of any loss with
    that dL/dO: the chain of Lemma 3.1 with c = O - Y replaced by Y). Every tensor may have leading batch dimensions that broadcast together (see the module
    docstring); 2-D tensors everywhere are the paper's single head. All tensors share one dtype
    and device. Construction validates everything and raises ``InvalidArgumentError`` (a
    ``ValueError``) naming the bad field.
    """

    Xq: torch.Tensor
    Xk: torch.Tensor
    Xv: torch.Tensor
    Wq: torch.Tensor
    Wk: torch.Tensor
    Wv: torch.Tensor
    A: Mapping[str, torch.Tensor]
    B: Mapping[str, torch.Tensor]
    alpha: float
    r: int
    beta: float
    Y: torch.Tensor
    attention: Attention = "general"
    causal: bool = False
    upstream: bool = False

    def __post_init__(self) -> None:
        batches: dict[str, tuple[int, ...]] = {"Xq": _stack("Xq", self.Xq, (None, None), True)}
        L, n = self.Xq.shape[-2:]
        if L < 1 or n < 1:
            raise InvalidArgumentError(f"Xq: expected shape (L, n) with L >= 1 and n >= 1, got {tuple(self.Xq.shape)}")
        Wq = self.Wq
        # d is the head dimension: the columns of W_Q (square n x n when W_Q is malformed, for the message)
        d = int(Wq.shape[-1]) if isinstance(Wq, torch.Tensor) and Wq.dim() >= 2 and Wq.shape[-2] == n and Wq.shape[-1] >= 1 else n
        r = check_int("r", self.r, low=1, high=max(n, d))
        check_positive("alpha", self.alpha)
        check_positive("beta", self.beta)
        check_choice("attention", self.attention, ("self", "cross", "general"))
        if not isinstance(self.causal, bool):
            raise InvalidArgumentError(f"causal: expected a bool, got {self.causal!r}")
        if not isinstance(self.upstream, bool):
            raise InvalidArgumentError(f"upstream: expected a bool, got {self.upstream!r}")
        tensors: dict[str, torch.Tensor] = {}
        for name, tail in (("Xq", (L, n)), ("Xk", (L, n)), ("Xv", (L, n)), ("Y", (L, d)), ("Wq", (n, d)), ("Wk", (n, d)), ("Wv", (n, d))):
            batches[name] = _stack(name, getattr(self, name), tail, True)
            tensors[name] = getattr(self, name)
        if not isinstance(self.A, Mapping) or not isinstance(self.B, Mapping):
            raise InvalidArgumentError(f"A, B: expected dicts keyed by adapted names, got {type(self.A).__name__}, {type(self.B).__name__}")
        if set(self.A) != set(self.B):
            raise InvalidArgumentError(f"A, B: expected the same keys, got {sorted(self.A)} and {sorted(self.B)}")
        if not self.A or not set(self.A) <= set(_NAMES):
            raise InvalidArgumentError(f"A: expected keys forming a non-empty subset of 'q', 'k', 'v', got {sorted(map(str, self.A))}")
        for mu in self.A:
            for key, t, tail in ((f"A[{mu!r}]", self.A[mu], (r, d)), (f"B[{mu!r}]", self.B[mu], (n, r))):
                batches[key] = _stack(key, t, tail, True)
                tensors[key] = t
        check_same_dtype_device(tensors)
        try:
            batch_shape = tuple(torch.broadcast_shapes(*batches.values()))
        except RuntimeError:
            raise InvalidArgumentError(f"batch dimensions: expected leading shapes that broadcast together, got {batches}") from None
        for name, t in tensors.items():
            check_finite(name, t)
        if self.attention == "self" and not (self.Xq is self.Xk is self.Xv or (torch.equal(self.Xq, self.Xk) and torch.equal(self.Xk, self.Xv))):
            raise InvalidArgumentError("attention: 'self' requires Xq, Xk and Xv to be the same matrix")
        if self.attention == "cross" and not (self.Xk is self.Xv or torch.equal(self.Xk, self.Xv)):
            raise InvalidArgumentError("attention: 'cross' requires Xk and Xv to be the same matrix")
        # Freeze the dicts so the dataclass is frozen all the way down (tensors stay tensors).
        object.__setattr__(self, "A", dict(sorted(self.A.items(), key=lambda kv: _NAMES.index(kv[0]))))
        object.__setattr__(self, "B", dict(sorted(self.B.items(), key=lambda kv: _NAMES.index(kv[0]))))
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "beta", float(self.beta))
        object.__setattr__(self, "_batch_shape", batch_shape)

    # -- derived quantities ------------------------------------------------------------
    @property
    def L(self) -> int:
        """Sequence length."""
        return int(self.Xq.shape[-2])

    @property
    def d(self) -> int:
        """Head dimension: the columns of W_Q (= n in the paper's square case)."""
        return int(self.Wq.shape[-1])

    @property
    def n(self) -> int:
        """Input dimension: the columns of X (the rows of W_Q)."""
        return int(self.Xq.shape[-1])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The broadcast leading shape of all tensors; () for a single head."""
        return self._batch_shape  # type: ignore[attr-defined]

    @property
    def adapt(self) -> tuple[str, ...]:
        """Adapted weight names in q, k, v order."""
        return tuple(self.A)

    @property
    def scale(self) -> float:
        """The LoRA multiplier alpha / r."""
        return self.alpha / self.r

    @property
    def dtype(self) -> torch.dtype:
        return self.Xq.dtype

    @property
    def device(self) -> torch.device:
        return self.Xq.device

    def pretrained(self, mu: str) -> torch.Tensor:
        """W_mu*, (n, d)."""
        return {"q": self.Wq, "k": self.Wk, "v": self.Wv}[check_choice("mu", mu, _NAMES)]

    def weight(self, mu: str) -> torch.Tensor:
        """The adapted weight W_mu = W_mu* + (alpha / r) B_mu A_mu, (n, d) (batch dims broadcast)."""
        w = self.pretrained(mu)
        if mu in self.A:
            w = w + self.scale * batched_matmul(self.B[mu], self.A[mu])
        return w

    def projections(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q, K, V) = (Xq W_q, Xk W_k, Xv W_v), each (L, d) (batch dims broadcast)."""
        return tuple(batched_matmul(X, self.weight(mu)) for X, mu in ((self.Xq, "q"), (self.Xk, "k"), (self.Xv, "v")))  # type: ignore[return-value]

    def element(self, *index: int) -> AttentionLoRAInstance:
        """The single head at batch ``index`` (one int per batch dimension), as a 2-D instance (views, no copy).

        Ties are kept: with ``attention="self"`` the three inputs stay one tensor.
        """
        bs = self.batch_shape
        if len(index) != len(bs) or not all(isinstance(i, int) and not isinstance(i, bool) and -s <= i < s for i, s in zip(index, bs)):
            raise InvalidArgumentError(f"index: expected {len(bs)} integers within batch shape {bs}, got {index}")

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.expand(*bs, *t.shape[-2:])[index]  # (*batch, a, b) -> (a, b)

        Xq = pick(self.Xq)
        Xk = Xq if self.Xk is self.Xq else pick(self.Xk)
        Xv = Xk if self.Xv is self.Xk else pick(self.Xv)
        return dataclasses.replace(self, Xq=Xq, Xk=Xk, Xv=Xv, Wq=pick(self.Wq), Wk=pick(self.Wk), Wv=pick(self.Wv),
                                   A={k: pick(v) for k, v in self.A.items()}, B={k: pick(v) for k, v in self.B.items()}, Y=pick(self.Y))

    def replace(self, **changes: object) -> AttentionLoRAInstance:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> AttentionLoRAInstance:
        """The same instance in another dtype and/or on another device (ties preserved)."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype=dtype or t.dtype, device=device or t.device)

        Xq = mv(self.Xq)
        Xk = Xq if self.Xk is self.Xq else mv(self.Xk)
        Xv = Xk if self.Xv is self.Xk else (Xq if self.Xv is self.Xq else mv(self.Xv))
        return dataclasses.replace(
            self, Xq=Xq, Xk=Xk, Xv=Xv, Wq=mv(self.Wq), Wk=mv(self.Wk), Wv=mv(self.Wv),
            A={k: mv(v) for k, v in self.A.items()}, B={k: mv(v) for k, v in self.B.items()}, Y=mv(self.Y),
        )

    def detach(self) -> AttentionLoRAInstance:
        """The same instance with every tensor detached from autograd (views, no copy; ties preserved).

        The closed-form and low-rank gradients never record an autograd graph; an ``nn.Parameter`` or a
        tensor that requires grad is read through this (``approx_gradients``, ``random_feature_gradients``).
        """
        tensors = [self.Xq, self.Xk, self.Xv, self.Wq, self.Wk, self.Wv, self.Y, *self.A.values(), *self.B.values()]
        if not any(t.requires_grad for t in tensors):
            return self

        def dt(t: torch.Tensor) -> torch.Tensor:
            return t.detach()

        Xq = dt(self.Xq)
        Xk = Xq if self.Xk is self.Xq else dt(self.Xk)
        Xv = Xk if self.Xv is self.Xk else (Xq if self.Xv is self.Xq else dt(self.Xv))
        return dataclasses.replace(self, Xq=Xq, Xk=Xk, Xv=Xv, Wq=dt(self.Wq), Wk=dt(self.Wk), Wv=dt(self.Wv),
                                   A={k: dt(v) for k, v in self.A.items()}, B={k: dt(v) for k, v in self.B.items()}, Y=dt(self.Y))

    def __repr__(self) -> str:
        extra = (f", n={self.n}" if self.n != self.d else "") + (f", batch_shape={self.batch_shape}" if self.batch_shape else "")
        extra += ", causal=True" if self.causal else ""
        extra += ", upstream=True" if self.upstream else ""
        return (
            f"AttentionLoRAInstance(L={self.L}, d={self.d}, r={self.r}, adapt={''.join(self.adapt)!r}, "
            f"attention={self.attention!r}, alpha={self.alpha:g}, beta={self.beta:g}{extra}, dtype={self.dtype}, device={self.device})"
        )


def _max_abs(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def score_ranges(
    Q: torch.Tensor, K: torch.Tensor, beta: float = 1.0, *, causal: bool = False, allowed: torch.Tensor | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """R_b = max over allowed (i, j) of |beta Q_b,i . K_b,j| per batch element, in row blocks (no L x L matrix).

    Args:
        Q: (*batch, Lq, d) queries; K: (*batch, Lk, d) keys (batch dims broadcast).
        beta: the score scale (S = beta Q K^T).
        causal: allow only j <= i.
        allowed: optional bool mask broadcastable to (*batch, Lq, Lk): True where query i may
            attend to key j (padding, a model's attention mask).
        block_size: query rows per block; default keeps a block at about 2^20 entries per batch element.

    Returns:
        A tensor of shape ``batch`` (0-dim for 2-D inputs) in Q's dtype; 0 where no pair is allowed.
    """
    Lq, Lk = Q.shape[-2], K.shape[-2]
    b = block_size or max(1, min(Lq, _ROW_BLOCK_ELEMENTS // max(Lk, 1)))
    R: torch.Tensor | None = None
    cols = torch.arange(Lk, device=Q.device)
    for i in range(0, Lq, b):
        S = (Q[..., i : i + b, :] @ K.mT).abs_()  # (*batch, b, Lk) |Q_I K^T|
        keep = None
        if causal:
            keep = cols[None, :] <= torch.arange(i, min(i + b, Lq), device=Q.device)[:, None]  # (b, Lk): j <= i
        if allowed is not None:
            a = allowed[..., i : i + b, :] if allowed.shape[-2] != 1 else allowed
            keep = a if keep is None else keep & a
        if keep is not None:
            S = S.masked_fill(~keep, 0.0)  # |S| >= 0, so a masked 0 never raises the max
        m = S.amax(dim=(-2, -1))
        R = m if R is None else torch.maximum(R, m)
    assert R is not None  # Lq >= 1
    return R * beta


def score_range(inst: AttentionLoRAInstance, *, block_size: int | None = None) -> float:
    """R = max_{i,j} |beta (Q K^T)_{ij}| over allowed pairs (j <= i when causal), over every batch element.

    Computed in row blocks (:func:`score_ranges`), never an L x L matrix: memory O(block_size * L + L d).
    """
    Q, K, _ = inst.projections()
    if block_size is not None:
        block_size = check_int("block_size", block_size, low=1)
    return float(score_ranges(Q, K, inst.beta, causal=inst.causal, block_size=block_size).max())


def norm_bounds(inst: AttentionLoRAInstance) -> dict[str, float]:
    """The max-entry norms bounded by Gamma in Thm 3.1 (partial) / Thm A.1 (full), and R.

    Partial adaptation (K not adapted), Thm 3.1: ``"Xq_Wq"`` = ||X_Q W_Q||_max and
    ``"Xk_Wk"`` = ||X_K W_K*||_max. Full adaptation (K adapted), Thm A.1 / Remark 5.2: in
    addition ``"Xq_Wq_WkT"`` = ||X_Q W_Q W_K^T||_max and ``"Xk"`` = ||X_K||_max (the bound
    on C^(1) W and C^(2) when the gradient is taken through W_K; the paper prints W_K where
    the row convention needs W_K^T). ``"Gamma"`` is the largest of these, and ``"R"`` the score
    range max |beta Q K^T| (row-blocked, no L x L matrix; allowed pairs only when causal). For a
    batched instance every norm is the maximum over the batch.

    Returns:
        dict of floats keyed by the names above.
    """
    Q, K, _ = inst.projections()
    out = {"Xq_Wq": _max_abs(Q), "Xk_Wk": _max_abs(K)}
    if "k" in inst.adapt:
        out["Xq_Wq_WkT"] = _max_abs(Q @ inst.weight("k").mT)
        out["Xk"] = _max_abs(inst.Xk)
    out["Gamma"] = max(out.values())
    out["R"] = score_range(inst)
    return out


_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _check_dtype(dtype: object) -> torch.dtype:
    """Require one of the floating dtypes the toolkit computes in."""
    if not isinstance(dtype, torch.dtype) or dtype not in _DTYPES:
        raise InvalidArgumentError(f"dtype: expected one of {', '.join(map(str, _DTYPES))}, got {dtype!r}")
    return dtype


def _check_device(device: object) -> torch.device | None:
    """None, or a device this process can allocate on (cpu; cuda / mps only when available)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(f"device: expected 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(f"device: expected an available device, got {device!r}, but CUDA is not available (torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidArgumentError(f"device: expected a CUDA index < {torch.cuda.device_count()}, got {device!r}")
        return dev
    if dev.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return dev
    raise InvalidArgumentError(f"device: expected 'cpu' or an available 'cuda' / 'mps' device, got {device!r}")


def _check_representable(inst: AttentionLoRAInstance, dtype: torch.dtype, what: str) -> None:
    """Refuse an instance whose scores or gradients overflow float64, or whose data overflow ``dtype``.

    Magnitudes (float64 Python floats, inf on overflow): the score range bound
    R+ = beta max||Q_i|| max||K_j||, and a crude bound on every gradient entry,
    beta L max|X| 2 n (v + y) v max(|K|, |Q|) (alpha / r) n max(|A|, |B|) with v = max|V|,
    y = max|Y| (|c| <= v + y, sum_j |p_ij| <= 2 n (v + y) v). Called on the float64 instance
    before the cast.
    """
    f64 = torch.finfo(torch.float64).max
    Q, K, V = inst.projections()
    vals = {name: float(t.abs().max()) if t.numel() else 0.0 for name, t in (("Q", Q), ("K", K), ("V", V), ("Y", inst.Y), ("X", torch.cat([inst.Xq, inst.Xk, inst.Xv])))}
    ab = max([float(t.abs().max()) for t in (*inst.A.values(), *inst.B.values())] + [0.0])
    # Python float products overflow to inf (no exception), which the checks below catch
    R = inst.beta * float(Q.norm(dim=1).max()) * float(K.norm(dim=1).max())
    n = inst.Xq.shape[1]
    c = vals["V"] + vals["Y"]
    grad = inst.beta * inst.L * vals["X"] * 2 * n * c * vals["V"] * max(vals["K"], vals["Q"], 1.0) * inst.scale * n * max(ab, 1.0)
    if not (math.isfinite(R) and R <= f64 / 16):
        raise InvalidArgumentError(f"{what}: the instance overflows float64: the score range bound beta max||Q_i|| max||K_j|| = {R:.3g} "
                                   f"(expected <= {f64 / 16:.3g}); use a smaller bound or beta")
    if not (math.isfinite(grad) and grad <= f64 / 16):
        raise InvalidArgumentError(f"{what}: the instance's gradients may overflow float64: a bound on their entries is {grad:.3g} "
                                   f"(expected <= {f64 / 16:.3g}); use a smaller bound or beta")
    top = torch.finfo(dtype).max
    worst = max(R, *vals.values())
    if worst > top:
        raise InvalidArgumentError(f"{what}: the instance does not fit {dtype}: its scores or entries reach {worst:.3g} (largest {dtype} value {top:.3g}); "
                                   f"use a smaller bound or beta, or a wider dtype")


def _gaussian(gen: torch.Generator, shape: tuple[int, ...], std: float, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    # Draw on CPU in float64 from a seeded generator, then move: identical draws on every device.
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * std).to(dtype=dtype, device=device)


def make_instance(
    L: int,
    d: int,
    r: int,
    *,
    alpha: float | None = None,
    adapt: str = "qv",
    attention: str = "self",
    bound: float | None = None,
    beta: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    lora_init: bool = False,
) -> AttentionLoRAInstance:
    """A random generic instance: X ~ N(0, 1), W* ~ N(0, 1/d), A, B ~ N(0, 1/d), Y ~ N(0, 1).

    Args:
        L: sequence length, >= 1.
        d: dimension, >= 1.
        r: LoRA rank, 1 <= r <= d.
        alpha: LoRA alpha (> 0); default ``r``, so that alpha / r = 1.
        adapt: ``"qv"`` (partial, Thm 3.1) or ``"qkv"`` (full, Thm A.1); any non-empty subset
            of "qkv" is accepted.
        attention: ``"self"`` (Xq = Xk = Xv) or ``"cross"`` (Xk = Xv, drawn independently of
            Xq).
        bound: if given, rescale so that the norms of :func:`norm_bounds` meet Gamma = bound.
            Partial: ||X_Q W_Q||_max = ||X_K W_K*||_max = bound exactly (by scaling W_Q* with
            B_Q, and W_K*). Full: ||X_K||_max, ||X_K W_K||_max, ||X_Q W_Q||_max and
            ||X_Q W_Q W_K^T||_max are all <= bound and at least three equal it (the four are
            products of three free scales, so in general they cannot all be set at once).
        beta: inverse temperature, > 0.
        seed: seed of the CPU generator all draws come from.
        dtype: of every tensor: float64, float32, float16 or bfloat16 (gradients of large float16
            instances can still overflow its largest value, 65504).
        device: "cpu", or an available "cuda" / "mps" device.
        lora_init: the standard LoRA init B = 0 (then every dL/dA is zero).

    Raises:
        InvalidArgumentError: a bad argument, an unavailable device, or an instance that overflows:
            scores or gradients beyond float64 (e.g. ``bound=1e200``), or data beyond ``dtype``.

    Returns:
        An :class:`AttentionLoRAInstance`. B is non-zero unless ``lora_init``, so all six
        gradients are generically non-trivial.
    """
    L = check_int("L", L, low=1)
    d = check_int("d", d, low=1)
    r = check_int("r", r, low=1, high=d)
    names = parse_adapt(adapt)
    check_choice("attention", attention, ("self", "cross"))
    alpha = float(r) if alpha is None else check_positive("alpha", alpha)
    beta = check_positive("beta", beta)
    if bound is not None:
        bound = check_positive("bound", bound)
    dtype = _check_dtype(dtype)
    device = _check_device(device)
    seed = check_int("seed", seed, low=0)

    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    X = _gaussian(gen, (L, d), 1.0, f64, None)
    Xq = X
    Xk = Xv = _gaussian(gen, (L, d), 1.0, f64, None) if attention == "cross" else X
    W = {mu: _gaussian(gen, (d, d), 1.0 / math.sqrt(d), f64, None) for mu in _NAMES}
    A = {mu: _gaussian(gen, (r, d), 1.0 / math.sqrt(d), f64, None) for mu in names}
    B = {mu: (torch.zeros(d, r, dtype=f64) if lora_init else _gaussian(gen, (d, r), 1.0 / math.sqrt(d), f64, None)) for mu in names}
    Y = _gaussian(gen, (L, d), 1.0, f64, None)
    inst = AttentionLoRAInstance(Xq, Xk, Xv, W["q"], W["k"], W["v"], A, B, alpha, r, beta, Y, attention)
    if bound is not None:
        inst = _rescale_to_bound(inst, bound)
    _check_representable(inst, dtype, "make_instance")
    if dtype != f64 or device is not None:
        inst = inst.to(dtype=dtype, device=device)
    return inst


def _scale_weight(inst: AttentionLoRAInstance, mu: str, s: float, W: dict, B: dict) -> None:
    """Scale W_mu = W_mu* + (alpha/r) B A by s, by scaling W_mu* and B_mu (A is untouched)."""
    W[mu] = inst.pretrained(mu) * s
    if mu in B:
        B[mu] = B[mu] * s


def _rescale_to_bound(inst: AttentionLoRAInstance, gamma: float) -> AttentionLoRAInstance:
    """Rescale X_K, W_Q, W_K so the Thm 3.1 / A.1 norms meet ``gamma`` (see make_instance)."""
    W: dict[str, torch.Tensor] = {mu: inst.pretrained(mu) for mu in _NAMES}
    B = dict(inst.B)
    Xq, Xk, Xv = inst.Xq, inst.Xk, inst.Xv
    full = "k" in inst.adapt
    if full:
        # X_K's scale is free only through X itself: set ||X_K||_max = gamma.
        sx = gamma / _max_abs(Xk)
        Xk = Xk * sx
        Xv = Xk if inst.attention in ("self", "cross") else Xv
        Xq = Xk if inst.attention == "self" else Xq
        inst = inst.replace(Xq=Xq, Xk=Xk, Xv=Xv)
    Q, K, _ = inst.projections()
    _scale_weight(inst, "q", gamma / _max_abs(Q), W, B)
    _scale_weight(inst, "k", gamma / _max_abs(K), W, B)
    inst = inst.replace(Wq=W["q"], Wk=W["k"], B=B)
    if full:
        n3 = _max_abs(inst.Xq @ inst.weight("q") @ inst.weight("k").T)
        if n3 > gamma:  # shrink W_Q further so that ||X_Q W_Q W_K^T||_max = gamma as well
            W = {mu: inst.pretrained(mu) for mu in _NAMES}
            B = dict(inst.B)
            _scale_weight(inst, "q", gamma / n3, W, B)
            inst = inst.replace(Wq=W["q"], B=B)
    return inst


def hard_instance(
    L: int,
    d: int,
    r: int = 1,
    *,
    kappa: float = 1.0,
    bound: float | None = None,
    adapt: str = "qv",
    alpha: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    zero_target: bool = True,
) -> AttentionLoRAInstance:
    """An instance of the shape of Alman & Song (2023), Lemma 4.7 (the lower-bound instances).

    Q = Gamma * a_i with binary a_i of weight w = ceil(d / 2); half of the keys (a random half)
    are K_j = Gamma * 1_d, the others Gamma * b_j with random binary b_j. Then every score
    Q_i . K_j lies in [0, B'] with B' = Gamma^2 w, at least half of each row equals B', and
    V = {0,1}-valued (V_j = b_j, or 1_d for the first half). Gamma defaults to
    sqrt(ln L) * kappa, the Thm 4.1 scale. The instance is a cross-attention one
    (X_K = X_V = K, W_V = I / Gamma) and the adapted weights satisfy W_mu* + (alpha/r) B A =
    the target weight exactly, with random non-zero B, A. ``zero_target`` sets Y = 0, as in
    Thm 4.1.

    Args:
        L, d, r: sizes (d >= 2 so that a row has both matched and unmatched keys).
        kappa: the kappa(L) factor of Thm 4.1 when ``bound`` is None.
        bound: Gamma = ||Q||_max = ||K||_max directly.
        adapt, alpha, seed, dtype, device: as in :func:`make_instance`.

    Returns:
        An :class:`AttentionLoRAInstance` with beta = 1.
    """
    L = check_int("L", L, low=2)
    d = check_int("d", d, low=2)
    r = check_int("r", r, low=1, high=d)
    names = parse_adapt(adapt)
    kappa = check_positive("kappa", kappa)
    gamma = check_positive("bound", bound) if bound is not None else math.sqrt(math.log(L)) * kappa
    alpha = float(r) if alpha is None else check_positive("alpha", alpha)
    seed = check_int("seed", seed, low=0)
    dtype = _check_dtype(dtype)
    device = _check_device(device)
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    w = (d + 1) // 2
    # a_i: binary of weight w; random supports via argsort of uniform keys (no Python row loop).
    ranks = torch.rand(L, d, generator=gen, dtype=f64).argsort(dim=1)
    a = (ranks < w).to(f64)  # (L, d)
    b = (torch.rand(L, d, generator=gen, dtype=f64) < 0.5).to(f64)  # (L, d)
    matched = torch.randperm(L, generator=gen)[: (L + 1) // 2]
    b[matched] = 1.0
    Xq = gamma * a
    Xk = gamma * b
    eye = torch.eye(d, dtype=f64)
    target = {"q": eye, "k": eye, "v": eye / gamma}
    A = {mu: _gaussian(gen, (r, d), 1.0 / math.sqrt(d), f64, None) for mu in names}
    B = {mu: _gaussian(gen, (d, r), 1.0 / math.sqrt(d), f64, None) for mu in names}
    s = alpha / r
    W = {mu: target[mu] - s * (B[mu] @ A[mu]) if mu in names else target[mu] for mu in _NAMES}
    Y = torch.zeros(L, d, dtype=f64) if zero_target else _gaussian(gen, (L, d), 1.0, f64, None)
    inst = AttentionLoRAInstance(Xq, Xk, Xk, W["q"], W["k"], W["v"], A, B, alpha, r, 1.0, Y, "cross")
    _check_representable(inst, dtype, "hard_instance")
    if dtype != f64 or device is not None:
        inst = inst.to(dtype=dtype, device=device)
    return inst
