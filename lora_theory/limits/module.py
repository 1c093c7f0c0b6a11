"""LoRAAttention: multi-head attention with LoRA on q / k / v whose forward and backward choose, per call, the
certified polynomial method or the exact blocked path.

Per head h (row convention, as :mod:`lora_theory.limits.instance`):

    Q_h = X W_q,h + (alpha / r) X B_q A_q,h      W_q,h (n, d) frozen, B_q (n, r) shared by the heads, A_q,h (r, d)
    O_h = D^{-1} exp(beta Q_h K_h^T) V_h         (L_q, d), then the heads concatenated: (L_q, H d)

(the n -> H d projection's LoRA B A with A split by heads; K, V alike from X_kv, the query input for
self attention). Trainable parameters: ``A_q, B_q, ...`` for the adapted names; the pretrained W* (and
biases, folded as a row of W against a column of ones) are frozen buffers.

Path choice (``mode``):

- ``"auto"``: the forward runs :func:`lora_theory.limits.forward.approx_forward` when the polynomial for
  the call's score range certifies ``eps`` and the cost model (:class:`lora_theory.limits.plan.CostModel`)
  predicts it faster than :func:`attention_forward`, else the exact blocked forward; the backward
  builds the batched instance with the upstream gradient (``AttentionLoRAInstance(upstream=True)``)
  and runs :func:`lora_theory.approx_gradients` when :func:`lora_theory.approx_plan` predicts it faster and
  certifiable, else :func:`lora_theory.exact_gradients`. A refusal (:class:`ApproximationError`) falls back
  to the exact path: nothing uncertified is ever returned.
- ``"exact"``: always the exact blocked paths. ``"approx"``: always the polynomial method; a refusal
  raises :class:`ApproximationError` (the documented error).

The polynomial path gives the LoRA gradients only (the moment form contracts with X, Lemma 3.1); when
the input itself needs a gradient (a trainable layer below), the backward is exact (autograd through the
recomputed attention) and the log says so; forced "approx" then raises.

Every call appends a record to ``module.log``: step, phase ("forward" / "backward"), path, reason,
degree, k, R, the certified bound (forward: max-entry |O~ - O|; backward: the largest LoRA-gradient
bound), the CPU seconds of the call and the predicted seconds of both paths.

Reference: Hu et al. (2024), Thm 3.1 / A.1 (almost-linear LoRA gradients), Lemma 1.1 (AS23, the forward);
issue 23.
"""
from __future__ import annotations

import math
import time
from typing import Literal

import torch
from torch import nn

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive
from .approx import approx_gradients
from .exact import exact_gradients
from .forward import approx_forward, attention_forward, forward_score_range
from .instance import AttentionLoRAInstance, parse_adapt
from .lowrank import ApproximationError
from .plan import CostModel, approx_plan, cost_model, moment_columns
from .polynomial import exp_polynomial

__all__ = ["LoRAAttention", "replace_bert_attention"]

Mode = Literal["auto", "exact", "approx"]
_NAMES = ("q", "k", "v")


class _Fn(torch.autograd.Function):
    """O = attention(X W(A, B)) with the module's per-call path choice in forward and backward."""

    @staticmethod
    def forward(ctx, mod: LoRAAttention, x: torch.Tensor, xkv: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with torch.no_grad():
            Q, K, V = mod._projections(x, xkv)
            O = mod._forward_path(Q, K, V)
        ctx.mod = mod
        ctx.self_attention = xkv is x
        ctx.save_for_backward(x, xkv, *params)
        return O

    @staticmethod
    def backward(ctx, dO: torch.Tensor):  # type: ignore[override]
        x, xkv, *_ = ctx.saved_tensors
        mod: LoRAAttention = ctx.mod
        need_x = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grads, dx, dxkv = mod._backward_path(x, x if ctx.self_attention else xkv, dO, need_x)
        return (None, dx, dxkv, *[grads[name] for name in mod.param_names])


class LoRAAttention(nn.Module):
    """Drop-in multi-head attention (the softmax core and the q / k / v projections) with LoRA, certified fast paths.

    Args:
        n: input width; heads: H; head_dim: d.
        r, alpha: LoRA rank and alpha (scale alpha / r; default alpha = r); adapt: which of "q", "k", "v".
        causal: query i sees keys j <= i; beta: score scale (default 1 / sqrt(d)).
        eps: target sup relative error of the exp polynomial (the certification's eps).
        mode: "auto", "exact" or "approx" (see the module docstring).
        W: {"q", "k", "v": (n, H d)} pretrained weights (row convention); default N(0, 1/n).
        bias: {"q", "k", "v": (H d,)} pretrained biases, or None.
        compute_dtype: of the polynomial path (float64 certifies far tighter eps than float32).
        max_degree, memory_budget: as :func:`lora_theory.approx_gradients`.
        model: the cost model of the path choice (default :func:`lora_theory.limits.plan.cost_model`).
        seed: of the default weights and of B's init (A starts at 0: the LoRA update starts at 0).

    Input: ``x`` (batch, L_q, n) and, for cross attention, ``x_kv`` (batch, L_k, n). Output: (batch, L_q, H d).
    """

    def __init__(self, n: int, heads: int, head_dim: int, *, r: int = 2, alpha: float | None = None, adapt: str = "qkv",
                 causal: bool = False, beta: float | None = None, eps: float = 1e-3, mode: Mode = "auto",
                 W: dict[str, torch.Tensor] | None = None, bias: dict[str, torch.Tensor] | None = None,
                 compute_dtype: torch.dtype = torch.float64, max_degree: int = 40, memory_budget: float | None = None,
                 model: CostModel | None = None, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.n, self.heads, self.d = check_int("n", n, low=1), check_int("heads", heads, low=1), check_int("head_dim", head_dim, low=1)
        self.r = check_int("r", r, low=1, high=max(n, head_dim))
        self.alpha = float(r) if alpha is None else check_positive("alpha", alpha)
        self.adapt = parse_adapt(adapt)
        if not isinstance(causal, bool):
            raise InvalidArgumentError(f"causal: expected a bool, got {causal!r}")
        self.causal = causal
        self.beta = head_dim**-0.5 if beta is None else check_positive("beta", beta)
        self.eps = check_positive("eps", eps)
        if self.eps >= 1:
            raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
        self.mode: Mode = check_choice("mode", mode, ("auto", "exact", "approx"))  # type: ignore[assignment]
        if compute_dtype not in (torch.float64, torch.float32):
            raise InvalidArgumentError(f"compute_dtype: expected torch.float64 or torch.float32, got {compute_dtype!r}")
        self.compute_dtype = compute_dtype
        self.max_degree = check_int("max_degree", max_degree, low=0, high=60)
        self.memory_budget = memory_budget
        self.cost = cost_model() if model is None else model
        gen = torch.Generator().manual_seed(check_int("seed", seed, low=0))
        Hd = heads * head_dim
        for mu in _NAMES:
            w = W[mu] if W is not None and mu in W else torch.randn(n, Hd, generator=gen) / math.sqrt(n)
            if tuple(w.shape) != (n, Hd):
                raise InvalidArgumentError(f"W[{mu!r}]: expected shape ({n}, {Hd}), got {tuple(w.shape)}")
            self.register_buffer(f"W_{mu}", w.detach().to(dtype).reshape(n, heads, head_dim).permute(1, 0, 2).contiguous())  # (H, n, d)
            b = None if bias is None else bias.get(mu)
            if b is not None and tuple(b.shape) != (Hd,):
                raise InvalidArgumentError(f"bias[{mu!r}]: expected shape ({Hd},), got {tuple(b.shape)}")
            self.register_buffer(f"b_{mu}", None if b is None else b.detach().to(dtype).reshape(heads, 1, head_dim).clone())  # (H, 1, d)
        self.param_names = [f"{p}_{mu}" for mu in self.adapt for p in "AB"]
        for mu in self.adapt:
            self.register_parameter(f"A_{mu}", nn.Parameter(torch.zeros(heads, self.r, head_dim, dtype=dtype)))  # up: 0 at init
            self.register_parameter(f"B_{mu}", nn.Parameter((torch.randn(n, self.r, generator=gen) / math.sqrt(n)).to(dtype)))  # down, shared by heads
        self.log: list[dict] = []
        self._step = 0

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    @property
    def biased(self) -> bool:
        return any(getattr(self, f"b_{mu}") is not None for mu in _NAMES)

    def extra_repr(self) -> str:
        return (f"n={self.n}, heads={self.heads}, head_dim={self.d}, r={self.r}, adapt={''.join(self.adapt)!r}, causal={self.causal}, "
                f"eps={self.eps:g}, mode={self.mode!r}")

    # -- the pieces ------------------------------------------------------------------------------------
    def _weight(self, mu: str) -> torch.Tensor:
        """(H, n, d) W*_mu + (alpha / r) B_mu A_mu,h."""
        W = getattr(self, f"W_{mu}")
        if mu in self.adapt:
            W = W + self.scale * (getattr(self, f"B_{mu}") @ getattr(self, f"A_{mu}"))  # (n, r) @ (H, r, d)
        return W

    def _projections(self, x: torch.Tensor, xkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q, K, V), each (batch, H, L, d)."""
        out = []
        for mu, inp in (("q", x), ("k", xkv), ("v", xkv)):
            P = inp[:, None] @ self._weight(mu)  # (batch, 1, L, n) @ (H, n, d)
            b = getattr(self, f"b_{mu}")
            out.append(P if b is None else P + b)
        return tuple(out)  # type: ignore[return-value]

    def _record(self, **kw) -> None:
        self.log.append({"step": self._step, **kw})

    def _forward_path(self, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        t0 = time.process_time()
        L, d, E = max(Q.shape[-2], K.shape[-2]), self.d, Q.shape[0] * Q.shape[1]
        R = float(forward_score_range(Q, K, self.beta).max())
        rec = {"phase": "forward", "R": R, "degree": None, "k": None, "bound": None}
        path, reason = "exact", "mode='exact'"
        pa = pe = math.nan
        if self.mode != "exact":
            poly = exp_polynomial(max(R, 1e-12), self.eps, max_degree=self.max_degree) if math.isfinite(R) and R < 700 else None
            if poly is None or not poly.certified:
                reason = f"the degree-{self.max_degree} polynomial cannot certify eps = {self.eps:g} at score range R = {R:.3g}"
            else:
                k = math.comb(poly.degree + d, d)
                rec.update(degree=poly.degree, k=k)
                # the forward's counts in the cost model: one moment contraction over Z = V (c = moment_columns(d) columns) vs
                # the exact forward's two GEMMs (2 L^2 d), the exp and the normalization (L^2)
                c = self.cost
                pa = E * (c.a_const + c.a_fit * (poly.degree + 1) + c.a_feat * 2.0 * L * k + c.a_mm * 2.0 * L * k * moment_columns(d) + c.a_L * L
                          + c.a_row * L * d * d * d)
                pe = E * (c.e_const + c.e_mm * float(L) * L * 2 * d + c.e_elem * float(L) * L)
                reason = (f"approx predicted faster ({pa:.3g} s vs exact {pe:.3g} s)" if pa < pe else
                          f"approx predicted slower ({pa:.3g} s vs exact {pe:.3g} s; degree {poly.degree}, d = {d}: k = C({poly.degree + d}, {d}) = {k})")
            if self.mode == "approx" or (poly is not None and poly.certified and pa < pe):
                try:
                    O, info = approx_forward(Q, K, V, beta=self.beta, causal=self.causal, eps=self.eps, max_degree=self.max_degree,
                                             memory_budget=self.memory_budget, compute_dtype=self.compute_dtype)
                    path = "approx"
                    reason = ("mode='approx' (forced); " if self.mode == "approx" else "") + reason
                    rec.update(degree=info.degree, k=info.rank, bound=info.error_bound)
                except ApproximationError as e:
                    if self.mode == "approx":
                        raise
                    reason = f"refused: {e}"
        if path == "exact":
            O = attention_forward(Q, K, V, beta=self.beta, causal=self.causal)
        self._record(**rec, path=path, reason=reason, cpu_seconds=time.process_time() - t0, predicted_approx_s=pa, predicted_exact_s=pe)
        return O  # (batch, H, L, d)

    def instance(self, x: torch.Tensor, xkv: torch.Tensor, dO: torch.Tensor) -> AttentionLoRAInstance:
        """The batched (batch, H) instance of this layer with the upstream gradient dO (batch, H, L, d) (biases folded)."""
        dt = x.dtype
        X = x[:, None]  # (batch, 1, L, n): shared by the heads
        Xkv = X if xkv is x else xkv[:, None]
        W = {mu: getattr(self, f"W_{mu}").to(dt) for mu in _NAMES}
        B = {mu: getattr(self, f"B_{mu}").detach().to(dt) for mu in self.adapt}
        A = {mu: getattr(self, f"A_{mu}").detach().to(dt) for mu in self.adapt}
        if self.biased:  # X W + b = [X, 1] [W; b]: fold the bias as a row of W (B's row there is 0: no LoRA on a bias)
            X = torch.cat([X, torch.ones(*X.shape[:-1], 1, dtype=dt)], dim=-1)
            Xkv = X if xkv is x else torch.cat([Xkv, torch.ones(*Xkv.shape[:-1], 1, dtype=dt)], dim=-1)
            for mu in _NAMES:
                b = getattr(self, f"b_{mu}")
                W[mu] = torch.cat([W[mu], torch.zeros(self.heads, 1, self.d, dtype=dt) if b is None else b.to(dt)], dim=-2)
            B = {mu: torch.cat([b, torch.zeros(1, self.r, dtype=dt)]) for mu, b in B.items()}
        return AttentionLoRAInstance(X, Xkv, Xkv, W["q"], W["k"], W["v"], A, B, self.alpha, self.r, self.beta, dO.to(dt).contiguous(),
                                     "self" if xkv is x else "cross", self.causal, upstream=True)

    def _backward_path(self, x: torch.Tensor, xkv: torch.Tensor, dO: torch.Tensor, need_x: bool):
        t0 = time.process_time()
        rec = {"phase": "backward", "R": None, "degree": None, "k": None, "bound": None}
        pa = pe = math.nan
        path, reason = "exact", "mode='exact'"
        if need_x or xkv.shape[1] != x.shape[1]:
            why = ("the input needs dL/dX: the polynomial path gives LoRA gradients only" if need_x else
                   f"cross attention with L_k = {xkv.shape[1]} != L_q = {x.shape[1]}: the gradient instance has one length")
            if self.mode == "approx":
                raise ApproximationError(f"LoRAAttention: {why}; detach the input, or use mode='auto' / 'exact'")
            reason = why + " (exact autograd through the recomputed attention)"
            grads, dx, dxkv = self._autograd_backward(x, xkv, dO)
            self._record(**rec, path="exact", reason=reason, cpu_seconds=time.process_time() - t0, predicted_approx_s=pa, predicted_exact_s=pe)
            return grads, (dx if need_x else None), (dxkv if need_x else None)
        inst = self.instance(x, xkv, dO)
        grads = None
        if self.mode != "exact":
            try:
                plan = approx_plan(inst, self.eps, max_degree=self.max_degree, memory_budget=self.memory_budget, model=self.cost)
                pa, pe = plan.approx_seconds, plan.exact_seconds
                rec.update(R=plan.R, degree=plan.degree, k=plan.k)
                reason = (f"approx predicted faster ({pa:.3g} s vs exact {pe:.3g} s)" if plan.faster == "approx" else
                          f"approx predicted slower or not certifiable ({pa:.3g} s vs exact {pe:.3g} s; degree {plan.degree} ({plan.degree_source}), "
                          f"d = {plan.d}: k = {plan.k:.3g}; certifiable: {plan.certifiable})")
                if self.mode == "approx" or plan.faster == "approx":
                    g, info = approx_gradients(inst, eps=self.eps, max_degree=self.max_degree, memory_budget=self.memory_budget,
                                               compute_dtype=self.compute_dtype)
                    grads, path = g, "approx"
                    reason = ("mode='approx' (forced); " if self.mode == "approx" else "") + reason
                    rec.update(degree=info.degree, k=info.rank, R=info.R, bound=max(info.error_bound.values()), error_bound=dict(info.error_bound))
            except ApproximationError as e:
                if self.mode == "approx":
                    raise
                reason = f"refused: {e}"
        if grads is None:
            grads = exact_gradients(inst)
        if self.biased:  # drop the bias row of B's gradient (B has no such row)
            grads = {k: (v[..., :-1, :] if k[0] == "B" else v) for k, v in grads.items()}
        grads = {k: v.to(getattr(self, k).dtype) for k, v in grads.items()}
        self._record(**rec, path=path, reason=reason, cpu_seconds=time.process_time() - t0, predicted_approx_s=pa, predicted_exact_s=pe)
        return grads, None, None

    def _autograd_backward(self, x: torch.Tensor, xkv: torch.Tensor, dO: torch.Tensor):
        """Every gradient (LoRA factors and inputs) by autograd through the recomputed exact attention."""
        params = {k: getattr(self, k).detach().requires_grad_(True) for k in self.param_names}
        xs = x.detach().requires_grad_(True)
        xk = xs if xkv is x else xkv.detach().requires_grad_(True)
        with torch.enable_grad():
            out = []
            for mu, inp in (("q", xs), ("k", xk), ("v", xk)):
                W = getattr(self, f"W_{mu}")
                if mu in self.adapt:
                    W = W + self.scale * (params[f"B_{mu}"] @ params[f"A_{mu}"])
                P = inp[:, None] @ W
                b = getattr(self, f"b_{mu}")
                out.append(P if b is None else P + b)
            O = torch.nn.functional.scaled_dot_product_attention(*out, scale=self.beta, is_causal=self.causal)
            tensors = [params[k] for k in self.param_names] + [xs] + ([] if xk is xs else [xk])
            g = torch.autograd.grad(O, tensors, dO)
        grads = dict(zip(self.param_names, g[: len(self.param_names)], strict=True))
        dx = g[len(self.param_names)]
        dxkv = None if xk is xs else g[len(self.param_names) + 1]
        return grads, dx, dxkv

    # -- the module ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, x_kv: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, L_q, n) [and (batch, L_k, n)] -> (batch, L_q, H d): the heads' outputs concatenated."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.n:
            raise InvalidArgumentError(f"x: expected a tensor of shape (batch, L, {self.n}), got {tuple(getattr(x, 'shape', ()))}")
        xkv = x if x_kv is None else x_kv
        if xkv is not x and (not isinstance(xkv, torch.Tensor) or xkv.dim() != 3 or xkv.shape[-1] != self.n or xkv.shape[0] != x.shape[0]):
            raise InvalidArgumentError(f"x_kv: expected a tensor of shape ({x.shape[0]}, L_k, {self.n}), got {tuple(getattr(xkv, 'shape', ()))}")
        if self.causal and xkv.shape[1] != x.shape[1]:
            raise InvalidArgumentError(f"x_kv: causal attention needs as many keys as queries, got {xkv.shape[1]} and {x.shape[1]}")
        self._step += 1
        params = [getattr(self, k) for k in self.param_names]
        O = _Fn.apply(self, x, xkv, *params)  # (batch, H, L, d)
        return O.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.heads * self.d)

    def log_frame(self):
        """The log as a tidy pandas DataFrame (one row per call and phase)."""
        import pandas as pd

        return pd.DataFrame(self.log)


class _BertSelfAttention(nn.Module):
    """A BERT-family self-attention module's replacement: the same call and return as transformers 5's BertSelfAttention."""

    def __init__(self, attn: LoRAAttention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        if attention_mask is not None:
            m = attention_mask if attention_mask.dtype == torch.bool else attention_mask > torch.finfo(attention_mask.dtype).min / 2
            if not bool(m.all()):
                raise InvalidArgumentError("attention_mask: LoRAAttention takes unpadded batches (every key allowed); got a mask that hides keys")
        return self.attn(hidden_states), None


def replace_bert_attention(model: nn.Module, *, layers=None, **kwargs) -> list[LoRAAttention]:
    """Put a :class:`LoRAAttention` (with the layer's own weights, biases and scaling) in place of BERT-family self-attention modules.

    Args:
        model: a transformers model with BERT-style attention (BERT, MiniLM, RoBERTa): ``query``, ``key``, ``value``.
        layers: indices among its attention layers (None: all).
        **kwargs: passed to :class:`LoRAAttention` (r, alpha, adapt, eps, mode, ...).

    Returns:
        The new modules, in layer order (their ``log`` says which path each call took and why).

    Raises:
        InvalidArgumentError: a layer that is not BERT-style (GPT-2's fused c_attn and Llama's rotary
            embeddings do not have this shape: S is then not X W_Q W_K^T X^T).
    """
    from ..lora.attention import find_attention_layers, projection_weights, select_layers

    out = []
    for layer in select_layers(find_attention_layers(model), layers):
        if layer.family != "bert" or layer.causal:
            raise InvalidArgumentError(f"layers: expected BERT-style self-attention, got {layer.family} layer {layer.name}")
        P = projection_weights(layer)
        W = {mu: P[mu][0].detach() for mu in _NAMES}
        bias = {mu: P[mu][1].detach() for mu in _NAMES if P[mu][1] is not None} or None
        n = W["q"].shape[0]
        attn = LoRAAttention(n, layer.n_heads, layer.head_dim, W=W, bias=bias, beta=layer.scaling, dtype=W["q"].dtype, **kwargs)
        parent = model.get_submodule(layer.name.rsplit(".", 1)[0]) if "." in layer.name else model
        setattr(parent, layer.name.rsplit(".", 1)[-1], _BertSelfAttention(attn))
        out.append(attn)
    return out
