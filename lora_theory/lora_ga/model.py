"""LoRA-GA on real models: G = (1/K) sum_k dL_k/dW0 per target layer, then A, B from G; W0 -> W0 - eta B A.

:func:`estimate_gradients` averages dL/dW0 over K batches for every target linear layer. Only
the target weights require grad, and a post-accumulate hook moves each layer's gradient into
its accumulator (optionally on the CPU) and frees it at once, so at most one layer's gradient
is alive besides the accumulators. :func:`apply_lora_ga` then initializes the LoRA factors of
every adapted layer in place (the toolkit's :class:`~lora_theory.lora.layer.LoRALinear`, or a
PEFT ``LoraModel``'s ``lora.Linear`` layers) and moves the frozen weight to W0 - eta B A
(computed in float64, cast to the weight's dtype) so that the output at step 0 is unchanged.

Reference: Wang et al. (2024), Algorithm 1 (gradient estimate, SVD, init, weight offset);
claims ``lora_ga.offset_exact``, ``lora_ga.thm3.1``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from .._validate import InvalidArgumentError
from ..lora.peft_bridge import find_lora_layers, target_linears
from .init import LoraGAInit, lora_ga_init

__all__ = ["apply_lora_ga", "estimate_gradients"]


def estimate_gradients(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    target_modules: Iterable[str] | str,
    *,
    offload: Literal["cpu"] | None = None,
    dtype: torch.dtype = torch.float32,
    mode: Literal["train", "eval"] = "train",
) -> dict[str, torch.Tensor]:
    """G_l = (1/K) sum_k dL(batch_k)/dW0_l for every target layer l, one layer's gradient alive at a time.

    Args:
        model: a torch model (plain, with :class:`LoRALinear` layers, or a PEFT model).
        batches: K batches (any objects ``loss_fn`` understands).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` (the ordinary training loss).
        target_modules: names / suffixes / regex of the layers (as in :func:`~lora_theory.lora.layer.add_lora`).
        offload: "cpu" keeps the accumulators on the CPU (for big models on a GPU).
        dtype: accumulator dtype (float32 default; float64 for verification).
        mode: "train" (the training loss as the authors and PEFT estimate it, dropout on) or
            "eval" (deterministic: dropout off, so two estimates on the same batches agree).

    Returns:
        {name: (m, n) averaged gradient} (names as in :func:`lora_theory.lora.peft_bridge.target_linears`).

    The model's requires_grad flags and train/eval mode are restored afterwards.
    """
    targets = target_linears(model, target_modules)
    saved = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    acc: dict[str, torch.Tensor] = {}
    hooks = []

    def make_hook(name: str):
        def hook(p: torch.Tensor) -> None:
            g = p.grad.detach().to(dtype=dtype, device="cpu" if offload == "cpu" else p.grad.device)
            if name in acc:
                acc[name] += g
            else:
                acc[name] = g  # owned: p.grad is dropped below, so no copy is needed
            p.grad = None  # free this layer's gradient now: only the accumulators stay alive

        return hook

    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for name, lin in targets.items():
            lin.weight.requires_grad_(True)
            hooks.append(lin.weight.register_post_accumulate_grad_hook(make_hook(name)))
        model.train(mode == "train")
        K = 0
        for batch in batches:
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise InvalidArgumentError(f"loss_fn: expected a scalar tensor, got {type(loss).__name__} {getattr(loss, 'shape', '')}")
            loss.backward()
            K += 1
        if K == 0:
            raise InvalidArgumentError("batches: expected at least one batch, got none")
    finally:
        for h in hooks:
            h.remove()
        for p, flag in saved.items():
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)
    return {name: g / K for name, g in acc.items()}


@torch.no_grad()
def apply_lora_ga(
    model: nn.Module,
    grads: Mapping[str, torch.Tensor],
    *,
    direction: str = "ArB2r",
    scale: str = "stable",
    gamma: float = 16.0,
    svd: str = "exact",
    seed: int | None = 0,
    adapter_name: str = "default",
    compute_dtype: torch.dtype = torch.float64,
) -> dict[str, LoraGAInit]:
    """Initialize every LoRA layer of ``model`` whose gradient is in ``grads``; W0 -> W0 - eta B A.

    Works on the toolkit's :class:`LoRALinear` (eta from its alpha, r, rslora) and on PEFT
    ``lora.Linear`` layers (eta = their ``scaling[adapter_name]``; A, B written to
    ``lora_A[adapter].weight`` / ``lora_B[adapter].weight``). alpha is taken as eta * r (or
    eta * sqrt(r)) so that the init's eta equals the layer's.

    ``compute_dtype`` is the dtype of the SVD and the init (float64 default; float32 matches PEFT's
    precision and speed).

    Returns:
        {name: LoraGAInit} for the layers it initialized.
    """
    done: dict[str, LoraGAInit] = {}
    try:
        layers = find_lora_layers(model, adapter_name)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"adapter_name: {e}".replace("adapter: ", "")) from None
    for h in layers:
        clean, r, eta, base, A_param, B_param = h.name, h.r, h.scaling, h.base, h.A, h.B
        if clean not in grads:
            continue
        # The SVD runs in compute_dtype (float64 by default: exact to ~1e-15 before the factors are
        # rounded to the weight's dtype; float32 is what PEFT uses, faster, ~1e-6); the offset is float64.
        work = compute_dtype
        G = grads[clean].to(device=base.weight.device, dtype=work)
        W0 = base.weight.detach().to(work)
        # eta = alpha / r with rslora=False: pass alpha = eta r so the init uses the layer's eta
        init = lora_ga_init(G, r, alpha=eta * r, rslora=False, direction=direction, scale=scale, gamma=gamma, svd=svd, seed=seed, W0=W0)
        A_param.copy_(init.A.to(A_param.dtype))
        B_param.copy_(init.B.to(B_param.dtype))
        # The offset uses the factors as stored (in the adapter's dtype), so that W_res + eta B A
        # reproduces W0 up to one rounding of W_res in the weight's dtype.
        offset = eta * (B_param.to(torch.float64) @ A_param.to(torch.float64))
        base.weight.copy_((base.weight.detach().to(torch.float64) - offset).to(base.weight.dtype))
        done[clean] = init
    if not done:
        raise InvalidArgumentError(f"grads: expected names of LoRA layers in the model, got {sorted(grads)[:8]}")
    return done
