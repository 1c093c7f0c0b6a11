"""The inputs of every attention layer of a Hugging Face model, captured with forward hooks: S = scaling q k^T.

For each attention layer the capture records what the softmax sees, without changing the model
(hooks are registered for one forward pass and removed, even on error):

    X (B, T, n)              the hidden states entering the attention module
    q, k, v (B, H, T, d)     the per-head projections as the model computes them (bias, LoRA
                             adapters, q/k norms and rotary position embeddings included;
                             grouped key/value heads repeated to H heads)
    scaling                  the factor of the scores: S = scaling q k^T (1/sqrt(d) in BERT)
    allowed (B, 1|H, T, T)   True where query i may attend to key j: the model's own attention
                             mask (boolean, or additive with large negative entries), the causal
                             mask of decoder layers, and the batch's padding (padded queries
                             and keys are never allowed)

Supported families (recognized by their attributes, so relatives such as RoBERTa, Mistral or
Qwen2 work too):

- ``"bert"``: ``query``, ``key``, ``value`` projections and ``num_attention_heads`` /
  ``attention_head_size`` (BERT, MiniLM, RoBERTa, ELECTRA; self-attention only);
- ``"gpt2"``: one ``c_attn`` Conv1D giving [q | k | v] (GPT-2; causal);
- ``"llama"``: ``q_proj``, ``k_proj``, ``v_proj`` and rotary position embeddings passed to the
  module as ``position_embeddings`` (Llama, Mistral, Qwen2/3 with their ``q_norm``/``k_norm``;
  grouped-query attention; causal).

Row convention as in the paper: a projection is X W + b with W (n, out) (``nn.Linear`` stores
W^T; GPT-2's ``Conv1D`` stores W). :func:`projection_weights` gives the base W and b (LoRA
adapters excluded; those come from :func:`lora_theory.lora.peft_bridge.find_lora_layers`).

Reference: Hu et al. (2024), Def. 1.1 (S = beta X W_Q W_K^T X^T); the transformers modeling files
of BERT, GPT-2 and Llama (``eager_attention_forward``: scores = q k^T * scaling + mask).
"""
from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .._validate import InvalidArgumentError, check_int
from .peft_bridge import clean_name

__all__ = ["AttentionInputs", "AttentionLayer", "capture_attention", "eval_mode", "find_attention_layers", "projection_weights", "select_layers"]

Family = Literal["bert", "gpt2", "llama"]
_NAMES = ("q", "k", "v")


@dataclass(frozen=True)
class AttentionLayer:
    """One attention module of a model and how to read it.

    Attributes:
        index: position among the model's attention layers (0-based, module order).
        name: module name (without PEFT's ``base_model.model.`` prefix).
        module: the attention module itself.
        family: "bert", "gpt2" or "llama".
        n_heads, n_kv_heads, head_dim: H, the key/value heads (< H with grouped-query attention), d.
        scaling: S = scaling q k^T.
        causal: the layer masks keys j > i.
        proj: for "q", "k", "v": (module whose output holds it, first column, width).
    """

    index: int
    name: str
    module: nn.Module
    family: Family
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    causal: bool
    proj: Mapping[str, tuple[nn.Module, int, int]]

    @property
    def rotary(self) -> bool:
        """Rotary position embeddings rotate q and k by position (then S is not X W_Q W_K^T X^T)."""
        return self.family == "llama"


@dataclass(frozen=True)
class AttentionInputs:
    """What one attention layer saw in one forward pass (tensors detached, in the model's dtype and device).

    Attributes:
        layer: the :class:`AttentionLayer`.
        X: (B, T, n) hidden states entering the module.
        q, k, v: (B, H, T, d) per-head projections (keys and values repeated to H heads for GQA).
        allowed: (B, 1 or H, T, T) bool, True where query i may attend to key j.
        padding: (B, T) bool, True at real (non-padding) tokens.
    """

    layer: AttentionLayer
    X: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    allowed: torch.Tensor
    padding: torch.Tensor

    @property
    def scaling(self) -> float:
        return self.layer.scaling

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) the number of real tokens per sequence."""
        return self.padding.sum(dim=-1)


def _is_module(mod: object, *names: str) -> bool:
    return all(isinstance(getattr(mod, n, None), nn.Module) for n in names)


def _forward_params(mod: nn.Module) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(mod.forward).parameters
    except (TypeError, ValueError):  # builtins / C extensions have no signature
        return {}


def _out_features(mod: nn.Module) -> int:
    if isinstance(mod, nn.Linear):
        return mod.out_features
    w = getattr(mod, "weight", None)
    if _is_conv1d(mod) and isinstance(w, torch.Tensor):
        return int(w.shape[1])
    base = _base(mod)
    if base is not mod:
        return _out_features(base)
    raise InvalidArgumentError(f"model: expected a Linear or Conv1D projection, got {type(mod).__name__}")


def _is_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D" and type(mod).__module__.startswith("transformers")


def _base(mod: nn.Module) -> nn.Module:
    """The base layer under a toolkit or PEFT LoRA wrapper (the module itself otherwise)."""
    if hasattr(mod, "get_base_layer"):
        return mod.get_base_layer()
    base = getattr(mod, "base", None)
    return base if isinstance(base, nn.Module) and hasattr(mod, "lora_A") else mod


def _describe(name: str, mod: nn.Module, index: int) -> AttentionLayer | None:
    """An AttentionLayer when ``mod`` is a supported attention module, else None."""
    causal = bool(getattr(mod, "is_causal", False))
    if _is_module(mod, "query", "key", "value") and hasattr(mod, "num_attention_heads") and hasattr(mod, "attention_head_size"):
        H, d = int(mod.num_attention_heads), int(mod.attention_head_size)
        # transformers < 5 has no .scaling on BERT; its eager path divides by sqrt(attention_head_size)
        scaling = float(getattr(mod, "scaling", d**-0.5))
        proj = {"q": (mod.query, 0, H * d), "k": (mod.key, 0, H * d), "v": (mod.value, 0, H * d)}
        return AttentionLayer(index, name, mod, "bert", H, H, d, scaling, causal, proj)
    if _is_module(mod, "c_attn") and hasattr(mod, "split_size") and hasattr(mod, "num_heads") and not getattr(mod, "is_cross_attention", False):
        H, E = int(mod.num_heads), int(mod.split_size)
        d = E // H
        scaling = float(getattr(mod, "scaling", d**-0.5 if getattr(mod, "scale_attn_weights", True) else 1.0))
        proj = {"q": (mod.c_attn, 0, E), "k": (mod.c_attn, E, E), "v": (mod.c_attn, 2 * E, E)}
        return AttentionLayer(index, name, mod, "gpt2", H, H, d, scaling, True, proj)
    if _is_module(mod, "q_proj", "k_proj", "v_proj") and hasattr(mod, "head_dim") and "position_embeddings" in _forward_params(mod):
        d = int(mod.head_dim)
        H, Hkv = _out_features(mod.q_proj) // d, _out_features(mod.k_proj) // d
        scaling = float(getattr(mod, "scaling", d**-0.5))
        proj = {"q": (mod.q_proj, 0, H * d), "k": (mod.k_proj, 0, Hkv * d), "v": (mod.v_proj, 0, Hkv * d)}
        return AttentionLayer(index, name, mod, "llama", H, Hkv, d, scaling, causal, proj)
    return None


def find_attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """Every supported attention module of ``model``, in module order (see the module docstring).

    Raises:
        InvalidArgumentError: if the model has none.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model: expected a torch.nn.Module (a transformers model), got {type(model).__name__}")
    out: list[AttentionLayer] = []
    for name, mod in model.named_modules():
        layer = _describe(clean_name(name), mod, len(out))
        if layer is not None:
            out.append(layer)
    if not out:
        raise InvalidArgumentError(f"model: expected attention layers (BERT-style query/key/value, GPT-2 c_attn, or Llama-style q_proj/k_proj/v_proj "
                                   f"with rotary embeddings), found none in {type(model).__name__}")
    return out


def select_layers(layers: list[AttentionLayer], which: Sequence[int] | int | None) -> list[AttentionLayer]:
    """``layers[i]`` for each index in ``which`` (negative from the end; None: all), checked."""
    if which is None:
        return layers
    if isinstance(which, int) and not isinstance(which, bool):
        which = [which]
    if not isinstance(which, Sequence):
        raise InvalidArgumentError(f"layers: expected a list of layer indices, got {which!r}")
    picked = []
    for i in which:
        i = check_int("layers", i, low=-len(layers), high=len(layers) - 1)
        picked.append(layers[i])
    if not picked:
        raise InvalidArgumentError("layers: expected at least one layer index, got an empty list")
    return picked


def projection_weights(layer: AttentionLayer) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """{"q", "k", "v": (W (n, width), b (width,) or None)}: the base projection in row convention, LoRA excluded."""
    out = {}
    for mu, (mod, start, width) in layer.proj.items():
        base = _base(mod)
        if isinstance(base, nn.Linear):
            W = base.weight.T  # (n, out): nn.Linear stores W^T
        elif _is_conv1d(base):
            W = base.weight  # (n, out): Conv1D stores W
        else:
            raise InvalidArgumentError(f"model: expected a Linear or Conv1D projection in {layer.name}, got {type(base).__name__}")
        b = getattr(base, "bias", None)
        out[mu] = (W[:, start : start + width], None if b is None else b[start : start + width])
    return out


def _interpret_mask(mask: object, B: int, T: int, device: torch.device) -> torch.Tensor:
    """The model's attention mask as bool (B, 1|H, T, T), True = attend (None: all allowed)."""
    if mask is None:
        return torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise InvalidArgumentError(f"model: expected a 4-D attention mask inside the attention layer, got {type(mask).__name__} "
                                   f"{tuple(getattr(mask, 'shape', ()))}")
    mask = mask[..., -T:, -T:]  # a longer key axis only appears with a cache; the last T keys are this input
    if mask.dtype == torch.bool:
        return mask
    # additive masks hold 0 (attend) or a huge negative number (finfo.min or -inf); halfway is unambiguous
    return mask > torch.finfo(mask.dtype).min / 2


@contextlib.contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block in eval mode (dropout off), then restore every module's own training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _model_kwargs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict:
    kwargs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    if "use_cache" in _forward_params(model):
        kwargs["use_cache"] = False  # a single pass: no key/value cache to fill
    return kwargs


def _check_batch(batch: object) -> tuple[int, int]:
    if not isinstance(batch, Mapping) or not isinstance(batch.get("input_ids"), torch.Tensor):
        raise InvalidArgumentError(f"batch: expected a dict with an 'input_ids' tensor (B, T) (e.g. from text_batches), got {type(batch).__name__}")
    ids = batch["input_ids"]
    if ids.dim() != 2 or ids.numel() == 0:
        raise InvalidArgumentError(f"batch: expected input_ids of shape (B, T) with B, T >= 1, got {tuple(ids.shape)}")
    m = batch.get("attention_mask")
    if m is not None and (not isinstance(m, torch.Tensor) or m.shape != ids.shape):
        raise InvalidArgumentError(f"batch: expected attention_mask of shape {tuple(ids.shape)}, got {tuple(getattr(m, 'shape', ()))}")
    return int(ids.shape[0]), int(ids.shape[1])


@torch.no_grad()
def capture_attention(model: nn.Module, batch: Mapping[str, torch.Tensor], *, layers: Sequence[int] | int | None = None) -> list[AttentionInputs]:
    """Run ``model(**batch)`` once with hooks, in eval mode (no dropout), and return what each selected layer saw.

    The model's training flags are restored afterwards, and the hooks removed, even on error.

    Args:
        model: a transformers model (any dtype and device; inputs are moved to its device).
        batch: {"input_ids": (B, T), optional "attention_mask": (B, T), ...} passed to the model.
        layers: indices into :func:`find_attention_layers` (negative counts from the end); None: all.

    Returns:
        One :class:`AttentionInputs` per selected layer, in layer order.

    Raises:
        InvalidArgumentError: no attention layers, a layer index out of range, a malformed batch,
            a cross-attention call, or a rotary layer called without position embeddings.
    """
    found = find_attention_layers(model)
    chosen = select_layers(found, layers)
    B, T = _check_batch(batch)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    padding = batch["attention_mask"].bool() if batch.get("attention_mask") is not None else torch.ones(B, T, dtype=torch.bool, device=device)
    seen: dict[int, dict] = {layer.index: {} for layer in chosen}
    handles = []

    def pre_hook(layer: AttentionLayer):
        params = list(_forward_params(layer.module))

        def hook(mod, args, kwargs):
            named = dict(zip(params, args)) | kwargs  # positional arguments by their names
            if named.get("encoder_hidden_states") is not None:
                raise InvalidArgumentError(f"model: {layer.name} is called as cross-attention; only self-attention is supported")
            rec = seen[layer.index]
            rec["X"] = named.get("hidden_states", args[0] if args else None).detach()
            rec["mask"] = named.get("attention_mask")
            rec["pos"] = named.get("position_embeddings")

        return hook

    def out_hook(layer: AttentionLayer, key: str):
        def hook(mod, args, output):
            seen[layer.index][key] = output.detach()

        return hook

    for layer in chosen:
        handles.append(layer.module.register_forward_pre_hook(pre_hook(layer), with_kwargs=True))
        mods = {}
        for mu, (mod, _, _) in layer.proj.items():
            norm = getattr(layer.module, f"{mu}_norm", None) if layer.family == "llama" and mu in "qk" else None
            mods[mu] = norm if isinstance(norm, nn.Module) else mod  # Qwen3-style per-head norm after the projection
        for mod in {id(m): m for m in mods.values()}.values():
            handles.append(mod.register_forward_hook(out_hook(layer, f"out{id(mod)}")))
        seen[layer.index]["mods"] = mods
    with _hooks(handles), eval_mode(model):
        model(**_model_kwargs(model, batch))
    out = []
    for layer in chosen:
        rec = seen[layer.index]
        if "X" not in rec:
            raise InvalidArgumentError(f"model: attention layer {layer.index} ({layer.name}) was not called by model(**batch)")
        heads = {}
        for mu in _NAMES:
            mod, start, width = layer.proj[mu]
            y = rec[f"out{id(rec['mods'][mu])}"]
            y = y.reshape(B, T, -1)[..., start : start + width] if rec["mods"][mu] is mod else y.reshape(B, T, -1)  # (B, T, width)
            heads[mu] = y.view(B, T, -1, layer.head_dim).transpose(1, 2)  # (B, H or Hkv, T, d)
        q, k, v = heads["q"], heads["k"], heads["v"]
        if layer.rotary:
            if rec["pos"] is None:
                raise InvalidArgumentError(f"model: {layer.name} got no position_embeddings; cannot apply its rotary embedding")
            cos, sin = rec["pos"]
            rope = getattr(sys.modules[type(layer.module).__module__], "apply_rotary_pos_emb", None)
            if rope is None:
                raise InvalidArgumentError(f"model: no apply_rotary_pos_emb next to {type(layer.module).__name__}")
            q, k = rope(q, k, cos, sin)  # the model's own rotation, (B, H, T, d) and (B, Hkv, T, d)
        if layer.n_kv_heads != layer.n_heads:  # grouped-query attention: head h reads key/value head h // (H / Hkv)
            k = k.repeat_interleave(layer.n_heads // layer.n_kv_heads, dim=1)
            v = v.repeat_interleave(layer.n_heads // layer.n_kv_heads, dim=1)
        allowed = _interpret_mask(rec["mask"], B, T, device)
        if layer.causal:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=device).tril()  # j <= i
        allowed = allowed & padding[:, None, None, :] & padding[:, None, :, None]  # (B, 1|H, T, T): real queries and keys only
        out.append(AttentionInputs(layer, rec["X"], q, k, v, allowed, padding))
    return out
