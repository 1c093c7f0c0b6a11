"""Where real attention heads sit on the phase diagram: R = max |S_ij| of a model's heads on real text.

For every attention head of a Hugging Face model, on given batches (real text: see
:mod:`lora_theory.lora.text`), :func:`attention_regime` measures the score range the paper's
almost-linear algorithm would have to cover,

    R = max over allowed (i, j) of |S_ij|,   S = scaling q k^T   (the softmax input before the mask)

with q, k the head's query and key rows as the model computes them (bias, LoRA, rotary embedding
included) and "allowed" the pairs the model lets attend (padding and causal masks), and puts it
next to the paper's threshold and the polynomial method's cost:

- ``gamma_q``, ``gamma_k``: the paper's max-entry bounds ||X W_Q||_max, ||X W_K||_max with the
  model's score scale split evenly between the two sides: the paper writes S = beta Q K^T with
  beta = 1, so the model's S = scaling q k^T is the paper's with Q = sqrt(scaling) q and
  K = sqrt(scaling) k; then R <= d gamma_q gamma_k.
- ``R_over_sqrt_ln_L``: R / sqrt(ln L), ``R_over_ln_L``: R / ln L, and
  ``Gamma_over_sqrt_ln_L``: max(gamma_q, gamma_k) / sqrt(ln L), the paper's hypothesis read
  literally on the entries (a head can meet it while R is d times larger).
- ``degree``, ``k``, ``cost_ratio``: :func:`lora_theory.approx_plan` for (L, d_head, R, eps):
  the degree g of the exp polynomial with sup relative error eps on [-R, R], the feature rank
  k = C(g + d, d) (an exact integer, however large), and the predicted approx/exact cost.
- ``regime``: "almost-linear" when R <= sqrt(ln L), else "past threshold". This is the paper's
  threshold Gamma = o(sqrt(log L)) (Thm 3.1; Thm 4.1 makes Gamma = Theta(sqrt(log L) kappa)
  hard) read with constant 1 and applied to the score range itself. It is the conservative
  reading: what the polynomial method's cost depends on is R, and with AS23's normalization
  (1/d inside the exponential) entries Gamma give R <= Gamma^2, so R = o(log L) is the looser
  score-range threshold; ``R_over_ln_L`` <= 1 reports that reading. At finite L neither is a
  sharp boundary; ``degree``, ``k`` and ``cost_ratio`` give the actual cost.

:func:`instance_from_attention` turns a real layer into an
:class:`~lora_theory.limits.instance.AttentionLoRAInstance` (one head or all heads, one sequence
or a batch) so that :func:`~lora_theory.limits.exact.exact_gradients` (and, for one head,
:func:`~lora_theory.limits.approx.approx_gradients`) run on it; :func:`adapter_gradients` maps
the instance's gradients back to the LoRA adapter's parameters. :func:`regime_trajectory` records
the report during fine-tuning.

Reference: Hu et al. (2024), Thm 3.1, Thm 4.1, Def. 2.5; Alman & Song (2023) for the
normalization; issue 13.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from .._validate import InvalidArgumentError, check_int, check_positive
from ..lora.attention import AttentionInputs, AttentionLayer, capture_attention, find_attention_layers, projection_weights, select_layers
from ..lora.peft_bridge import find_lora_layers
from .instance import AttentionLoRAInstance, score_ranges
from .plan import approx_plan

__all__ = [
    "REGIMES",
    "adapter_gradients",
    "attention_regime",
    "instance_from_attention",
    "regime_summary",
    "regime_trajectory",
]

#: the two values of the ``regime`` column
REGIMES = ("almost-linear", "past threshold")
_BLOCK_ENTRIES = 1 << 22  # entries of one (B, H, rows, T) score block: 32 MiB in float64


def _sequence_stats(cap: AttentionInputs, heads: Sequence[int] | None) -> pd.DataFrame:
    """Per (sequence, head): L, R, gamma_q, gamma_k of one captured layer, computed in float64."""
    layer = cap.layer
    hs = list(range(layer.n_heads)) if heads is None else list(heads)
    q = cap.q[:, hs].to(torch.float64)  # (B, h, T, d)
    k = cap.k[:, hs].to(torch.float64)
    allowed = cap.allowed if cap.allowed.shape[1] == 1 else cap.allowed[:, hs]
    B, h, T, _ = q.shape
    R = score_ranges(q, k, layer.scaling, allowed=allowed, block_size=max(1, _BLOCK_ENTRIES // (B * h * T)))  # (B, h)
    real = cap.padding[:, None, :, None]  # (B, 1, T, 1): entries of padded tokens do not count
    root = math.sqrt(layer.scaling)  # the paper's Q = sqrt(scaling) q, K = sqrt(scaling) k (beta = 1)
    gq = (q.abs() * real).amax(dim=(-2, -1)) * root  # (B, h)
    gk = (k.abs() * real).amax(dim=(-2, -1)) * root
    L = cap.lengths[:, None].expand(B, h)
    seq = torch.arange(B)[:, None].expand(B, h)
    head = torch.tensor(hs)[None, :].expand(B, h)
    return pd.DataFrame({"layer": layer.index, "head": head.reshape(-1).numpy(), "sequence": seq.reshape(-1).numpy(),
                         "L": L.reshape(-1).cpu().numpy(), "d_head": layer.head_dim, "R": R.reshape(-1).cpu().numpy(),
                         "gamma_q": gq.reshape(-1).cpu().numpy(), "gamma_k": gk.reshape(-1).cpu().numpy(), "scaling": layer.scaling})


def _with_plan(df: pd.DataFrame, eps: float, plan: bool = True) -> pd.DataFrame:
    """Add the ratios, the regime and (with ``plan``) the planner's degree / k / cost ratio to rows with L, d_head, R."""
    df = df.copy()
    lnL = df["L"].map(lambda L: math.log(L))
    df["sqrt_ln_L"] = lnL**0.5
    df["R_over_sqrt_ln_L"] = df["R"] / df["sqrt_ln_L"]
    df["R_over_ln_L"] = df["R"] / lnL
    df["Gamma_over_sqrt_ln_L"] = df[["gamma_q", "gamma_k"]].max(axis=1) / df["sqrt_ln_L"]
    df["regime"] = [REGIMES[0] if r <= 1.0 else REGIMES[1] for r in df["R_over_sqrt_ln_L"]]
    df["eps"] = eps
    if not plan:
        return df
    plans = [approx_plan(L=int(L), d=int(d), R=float(R), eps=eps, adapt="qv") for L, d, R in zip(df["L"], df["d_head"], df["R"], strict=True)]
    df["degree"] = [p.degree for p in plans]
    df["degree_source"] = [p.degree_source for p in plans]
    df["k"] = pd.Series([p.k for p in plans], index=df.index, dtype=object)  # exact Python ints (may exceed int64)
    df["log10_k"] = [math.log10(p.k) for p in plans]
    df["cost_ratio"] = [p.cost_ratio for p in plans]
    return df


def _check_heads(heads: object, layers: list[AttentionLayer]) -> list[int] | None:
    if heads is None:
        return None
    if isinstance(heads, int):
        heads = [heads]
    H = min(layer.n_heads for layer in layers)
    out = [check_int("heads", h, low=0, high=H - 1) for h in heads]  # type: ignore[union-attr]
    if not out:
        raise InvalidArgumentError("heads: expected at least one head index, got an empty list")
    return out


def _check_batches(batches: object) -> list[Mapping[str, torch.Tensor]]:
    if isinstance(batches, Mapping):
        batches = [batches]
    if not isinstance(batches, Sequence) or not batches:
        raise InvalidArgumentError(f"batches: expected a non-empty list of dicts with input_ids (e.g. text_batches(...)), got {batches!r:.60}")
    return list(batches)


def attention_regime(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor],
    *,
    layers: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    eps: float = 1e-3,
    per_sequence: bool = False,
    plan: bool = True,
) -> pd.DataFrame:
    """Score range R, norm bounds, degree, rank and regime of every attention head on ``batches``.

    Args:
        model: a transformers model with supported attention layers (:mod:`lora_theory.lora.attention`);
            any dtype (the report is computed in float64 from the model's own q and k) and device.
        batches: a batch or a list of batches {"input_ids": (B, T), "attention_mask": (B, T)}, real
            text (:func:`lora_theory.lora.text.text_batches`).
        layers: attention-layer indices (default all); heads: head indices (default all).
        eps: the target sup relative error of the exp polynomial for the planner.
        per_sequence: one row per (layer, head, sequence) instead of per (layer, head).
        plan: add the planner's columns (degree, degree_source, k, log10_k, cost_ratio); about
            10-40 ms per row (the exp polynomial is fitted), so trajectories skip them.

    Returns:
        A DataFrame with columns layer, head, L (non-padding length; the largest over the
        sequences), d_head, n_sequences, R (max over the sequences), R_median (median over the
        sequences of each sequence's R), gamma_q, gamma_k, scaling, sqrt_ln_L, R_over_sqrt_ln_L,
        R_over_ln_L, Gamma_over_sqrt_ln_L, regime, eps, and with ``plan`` degree, degree_source, k (exact int), log10_k,
        cost_ratio (``sequence`` instead of n_sequences / R_median with ``per_sequence``). The module
        docstring defines every column and the regime rule.

    Raises:
        InvalidArgumentError: no attention layers, a layer or head index out of range, no batches,
            a sequence with fewer than 2 real tokens, eps not in (0, 1).

    Reference: Hu et al. (2024), Thm 3.1 / 4.1; claim ids ``limits.thm3.1``, ``limits.thm4.1_regime``.
    """
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    batches = _check_batches(batches)
    heads = _check_heads(heads, select_layers(find_attention_layers(model), layers))
    parts = []
    offset = 0  # sequences numbered across batches
    # capture_attention runs the model in eval mode (dropout off) and restores its training flags
    for b, batch in enumerate(batches):
        caps = capture_attention(model, batch, layers=layers)
        for cap in caps:
            if int(cap.lengths.min()) < 2:
                raise InvalidArgumentError(f"batches: expected sequences of >= 2 real tokens (ln L > 0), got one of {int(cap.lengths.min())} in batch {b}")
            stats = _sequence_stats(cap, heads)
            stats["sequence"] += offset
            parts.append(stats)
        offset += int(caps[0].padding.shape[0])
    seqs = pd.concat(parts, ignore_index=True)
    if per_sequence:
        return _with_plan(seqs, eps, plan)
    agg = seqs.groupby(["layer", "head"], as_index=False).agg(
        L=("L", "max"), d_head=("d_head", "first"), n_sequences=("sequence", "nunique"), R=("R", "max"), R_median=("R", "median"),
        gamma_q=("gamma_q", "max"), gamma_k=("gamma_k", "max"), scaling=("scaling", "first"))
    return _with_plan(agg, eps, plan)


def regime_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer and overall: heads, quantiles of R and R / sqrt(ln L), fraction almost-linear, degree range.

    Args:
        df: an :func:`attention_regime` table (one row per head).

    Returns:
        DataFrame with columns layer ("all" for the overall row), heads, L, R_min, R_median, R_max,
        ratio_q10, ratio_median, ratio_q90, ratio_max (quantiles of R / sqrt(ln L)), frac_almost_linear,
        frac_R_below_ln_L, frac_Gamma_below_sqrt_ln_L, degree_min, degree_max (degrees only when the
        table has the planner's columns; -1 otherwise).
    """
    def summarize(g: pd.DataFrame, name: object) -> dict:
        x = g["R_over_sqrt_ln_L"]
        return {"layer": name, "heads": len(g), "L": int(g["L"].max()), "R_min": g["R"].min(), "R_median": g["R"].median(), "R_max": g["R"].max(),
                "ratio_q10": x.quantile(0.1), "ratio_median": x.median(), "ratio_q90": x.quantile(0.9), "ratio_max": x.max(),
                "frac_almost_linear": float((g["regime"] == REGIMES[0]).mean()), "frac_R_below_ln_L": float((g["R_over_ln_L"] <= 1).mean()),
                "frac_Gamma_below_sqrt_ln_L": float((g["Gamma_over_sqrt_ln_L"] <= 1).mean()),
                "degree_min": int(g["degree"].min()) if "degree" in g else -1, "degree_max": int(g["degree"].max()) if "degree" in g else -1}

    rows = [summarize(g, int(layer)) for layer, g in df.groupby("layer")]
    rows.append(summarize(df, "all"))
    return pd.DataFrame(rows)


# -- real layers as instances -------------------------------------------------------------------

def _layer(model: nn.Module, layer: object) -> AttentionLayer:
    found = find_attention_layers(model)
    i = check_int("layer", layer, low=-len(found), high=len(found) - 1)
    return found[i]


def _lora_of(model: nn.Module) -> dict[int, object]:
    return {id(h.module): h for h in find_lora_layers(model)}


def _per_head(t: torch.Tensor, H: int, d: int) -> torch.Tensor:
    """(rows, H * d) -> (H, rows, d): column block h of a multi-head projection is head h."""
    return t.reshape(t.shape[0], H, d).permute(1, 0, 2)


def instance_from_attention(
    model: nn.Module,
    layer: int,
    head: int | None,
    batch: Mapping[str, torch.Tensor],
    *,
    sequence: int | None = None,
    target: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> AttentionLoRAInstance:
    """The paper's instance for a real attention layer: X, W_Q*, W_K*, W_V*, the LoRA factors, beta = scaling.

    Mapping (row convention, Q = X W): a projection ``nn.Linear`` (W0 (m, n), bias b) with a LoRA
    adapter (A_peft (r, n), B_peft (m, r), scaling s) computes X W0^T + b + s X A_peft^T B_peft^T, so

    - W* = W0^T (n, m), split into heads by columns: W*_h = W0^T[:, h d : (h + 1) d] (n, d);
    - the paper's B = A_peft^T (n, r), shared by every head; the paper's A for head h is
      B_peft[h d : (h + 1) d]^T (r, d); alpha / r = s (alpha = s r, which covers rsLoRA too);
    - biases are folded in: X gets a last column of ones and W* a last row b_h (so Q = X W* + b
      exactly); B gets a last row of zeros (the adapter does not see the ones column), and the
      gradient of that row belongs to no parameter (:func:`adapter_gradients` drops it). Without
      biases nothing is appended.

    GPT-2's ``Conv1D`` stores W (n, 3m) directly; its q, k, v are the column blocks [0, m),
    [m, 2m), [2m, 3m), and one adapter on ``c_attn`` gives the same paper B to q, k and v.

    Args:
        model: a transformers model with LoRA adapters (toolkit :func:`~lora_theory.lora.layer.add_lora`
            or PEFT) on at least one of the layer's query, key, value projections.
        layer: attention-layer index (:func:`~lora_theory.lora.attention.find_attention_layers`).
        head: a head index (the instance is one head per sequence), or None (all heads: batch
            dimension H).
        batch: {"input_ids": (B, T), "attention_mask"}: sequences without padding (the paper's
            loss has no padding mask).
        sequence: one sequence of the batch (no sequence dimension), or None (batch dimension B).
        target: Y in the model's layout (B, T, H d) (split per head like the attention output);
            None: Y = 0 (as in Thm 4.1).
        dtype: of the instance (float64 for verification).

    Returns:
        An :class:`AttentionLoRAInstance` with batch shape (B, H), (B,), (H,) or () depending on
        ``sequence`` and ``head``; causal for decoder layers.

    Raises:
        InvalidArgumentError: no LoRA adapter on the layer, adapters with different r or scaling,
            rotary position embeddings (Q depends on the position: not X W), padded sequences,
            bad indices or a target of the wrong shape.

    Reference: Hu et al. (2024), Def. 1.2, 2.5.
    """
    lay = _layer(model, layer)
    if lay.rotary:
        raise InvalidArgumentError(f"layer: {lay.name} rotates q and k by position (rotary embeddings); the paper's Q = X W_Q has no such term")
    H, d = lay.n_heads, lay.head_dim
    if head is not None:
        head = check_int("head", head, low=0, high=H - 1)
    (cap,) = capture_attention(model, batch, layers=[lay.index])
    if not bool(cap.padding.all()):
        raise InvalidArgumentError("batch: expected sequences without padding (attention_mask all ones); the paper's loss has no mask")
    Bn, T = cap.padding.shape
    if sequence is not None:
        sequence = check_int("sequence", sequence, low=0, high=Bn - 1)
    device = cap.X.device
    weights = projection_weights(lay)
    handles = _lora_of(model)
    lora = {mu: handles[id(lay.proj[mu][0])] for mu in "qkv" if id(lay.proj[mu][0]) in handles}
    if not lora:
        raise InvalidArgumentError(f"model: expected a LoRA adapter on the query, key or value projection of {lay.name} (add_lora or PEFT), found none")
    if len({(h.r, h.scaling) for h in lora.values()}) != 1:
        raise InvalidArgumentError(f"model: expected one r and scaling for the adapters of {lay.name}, got {[(h.name, h.r, h.scaling) for h in lora.values()]}")
    r, s = next(iter(lora.values())).r, next(iter(lora.values())).scaling
    fold = any(b is not None for _, b in weights.values())

    def f(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=dtype)

    X = f(cap.X)  # (B, T, n)
    if fold:
        X = torch.cat([X, torch.ones(*X.shape[:-1], 1, dtype=dtype, device=device)], dim=-1)  # (B, T, n + 1): the bias column
    W, A, Bf = {}, {}, {}
    for mu in "qkv":
        w, b = weights[mu]
        w = f(w)
        if fold:
            w = torch.cat([w, f(b)[None] if b is not None else torch.zeros(1, w.shape[1], dtype=dtype, device=device)], dim=0)  # (n + 1, H d)
        W[mu] = _per_head(w, H, d)  # (H, n', d)
        if mu in lora:
            h = lora[mu]
            start, width = lay.proj[mu][1], lay.proj[mu][2]
            Bp = f(h.A).T  # (n, r): the paper's B is A_peft^T
            if fold:
                Bp = torch.cat([Bp, torch.zeros(1, r, dtype=dtype, device=device)], dim=0)  # (n + 1, r): the ones column bypasses the adapter
            Bf[mu] = Bp
            A[mu] = _per_head(f(h.B)[start : start + width].T, H, d)  # (H, r, d): the paper's A_h = B_peft[h-block]^T
    if target is None:
        Y = torch.zeros(Bn, H, T, d, dtype=dtype, device=device)
    else:
        if not isinstance(target, torch.Tensor) or tuple(target.shape) != (Bn, T, H * d):
            raise InvalidArgumentError(f"target: expected a tensor of shape {(Bn, T, H * d)} (B, T, H d), got {tuple(getattr(target, 'shape', ()))}")
        Y = f(target).view(Bn, T, H, d).transpose(1, 2)  # (B, H, T, d)
    if head is not None:
        W = {mu: w[head] for mu, w in W.items()}
        A = {mu: a[head] for mu, a in A.items()}
        Y = Y[:, head]  # (B, T, d)
    else:
        X = X[:, None]  # (B, 1, T, n'): shared by the heads
    if sequence is not None:
        X, Y = X[sequence], Y[sequence]
    return AttentionLoRAInstance(X, X, X, W["q"], W["k"], W["v"], A, Bf, s * r, r, lay.scaling, Y, "self", lay.causal)


def adapter_gradients(
    model: nn.Module, layer: int, grads: Mapping[str, torch.Tensor], *, head: int | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Map an instance's gradients (paper shapes) back to the LoRA adapters' parameters (PEFT shapes).

    dL/dA_peft = (dL/dB)^T without the folded bias row (r, n); dL/dB_peft has the rows of head h
    equal to (dL/dA_h)^T (zero for heads the instance does not contain). Adapters shared by
    several of q, k, v (GPT-2's ``c_attn``) add the contributions.

    Args:
        model, layer: as given to :func:`instance_from_attention`.
        grads: ``exact_gradients(inst)`` (or approx) for an instance built from that layer.
        head: the head of a single-head instance (None for an all-heads instance).

    Returns:
        {adapter module name: {"A": (r, n), "B": (m, r)}} in the adapter's dtype and device.
    """
    lay = _layer(model, layer)
    handles = _lora_of(model)
    H, d = lay.n_heads, lay.head_dim
    out: dict[str, dict[str, torch.Tensor]] = {}
    for mu in "qkv":
        if f"A_{mu}" not in grads:
            continue
        mod, start, width = lay.proj[mu]
        if id(mod) not in handles:
            raise InvalidArgumentError(f"grads: has A_{mu}, but {lay.name} has no adapter on its {mu} projection")
        h = handles[id(mod)]
        n = h.A.shape[1]
        slot = out.setdefault(h.name, {"A": torch.zeros_like(h.A), "B": torch.zeros_like(h.B)})
        gB, gA = grads[f"B_{mu}"], grads[f"A_{mu}"]
        slot["A"] += gB[:n].T.to(slot["A"])  # (r, n); row n (if present) is the folded bias: no parameter
        if gA.dim() == 3:  # (H, r, d): every head
            slot["B"][start : start + width] += gA.permute(1, 0, 2).reshape(gA.shape[1], H * d).T.to(slot["B"])  # (H d, r)
        else:
            if head is None:
                raise InvalidArgumentError("head: expected the head of this single-head instance, got None")
            h0 = start + check_int("head", head, low=0, high=H - 1) * d
            slot["B"][h0 : h0 + d] += gA.T.to(slot["B"])  # (d, r)
    return out


# -- the report during fine-tuning ------------------------------------------------------------

def regime_trajectory(
    model: nn.Module,
    train_step: Callable[[int], float],
    probe_batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    steps: int,
    every: int,
    evaluate: Callable[[], float] | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    eps: float = 1e-3,
    plan: bool = False,
) -> pd.DataFrame:
    """:func:`attention_regime` on fixed probe batches at step 0 and every ``every`` steps of ``train_step``.

    Args:
        model: the model being fine-tuned (the probes run in eval mode and restore its mode).
        train_step: ``train_step(step)`` does one optimizer step (step = 1 .. steps) and returns its loss.
        probe_batches: fixed batches of real text the report is measured on.
        steps, every: the number of steps and the probe interval (the last step is always probed).
        evaluate: optional held-out loss, recorded at each probe.
        layers, heads, eps, plan: as in :func:`attention_regime` (no planner columns by default).

    Returns:
        The :func:`attention_regime` rows of every probe with columns step, train_loss (the last
        step's loss; None at step 0) and eval_loss (None without ``evaluate``).
    """
    steps = check_int("steps", steps, low=0)
    every = check_int("every", every, low=1)
    frames = []

    def probe(step: int, loss: float | None) -> None:
        df = attention_regime(model, probe_batches, layers=layers, heads=heads, eps=eps, plan=plan)
        df.insert(0, "step", step)
        df["train_loss"] = loss
        df["eval_loss"] = evaluate() if evaluate is not None else None
        frames.append(df)

    probe(0, None)
    for step in range(1, steps + 1):
        loss = float(train_step(step))
        if step % every == 0 or step == steps:
            probe(step, loss)
    return pd.concat(frames, ignore_index=True)
