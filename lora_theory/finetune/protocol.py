"""One fine-tuning run per sweep point: full FT, LoRA, LoRA-GA or LoRA+ on a real task, with its curve and costs.

:func:`run_point` is the module-level sweep function (``lora_theory.sweeps.run_sweep``): it
builds the MiniLM :class:`~lora_theory.finetune.tasks.ProbeModel` of the task (the pretrained
encoder under a frozen linear-probe head), applies one method, trains it for ``steps`` AdamW
steps on seeded mini-batches of the training split, and returns the validation-loss curve, the
process CPU seconds spent (torch single-threaded), and the final validation and test metrics.

Methods (same rank r, same target modules ``TARGETS``: every linear layer of the 6 transformer
blocks; same budget of steps, batches and data order per seed):

- ``full``: every parameter of the transformer blocks trains (the token/position embeddings and the
  unused pooler stay frozen, as the adapters never reach them);
- ``lora``: PEFT's default init (B = 0, A ~ U(+-1/sqrt(n))), rsLoRA eta = alpha / sqrt(r);
- ``lora_ga``: LoRA-GA (Wang et al. 2024, Alg. 1): G from ``ga_batches`` training batches,
  randomized SVD, A, B from ``direction`` and ``scale`` (default ArB2r, stable, gamma 16),
  W0 -> W0 - eta B A. Its gradient batches are charged: ``init_steps`` = ``ga_batches`` and
  ``init_cpu`` = the CPU seconds of estimate + SVD + offset;
- ``lora_plus``: PEFT's init, AdamW with eta_B = ``ratio`` * eta_A (Hayou et al. 2024).

Dropout is off for every method (eval mode) so that the curves reflect the methods, not dropout
noise. Every module attribute a negative control may patch is reached through its module
(``ga_model.apply_lora_ga``, ``lp_optim.loraplus_param_groups``, ``lora_layer.add_lora``), and
:func:`code_fingerprint` hashes what those attributes are now, so a sweep point run under a
control is a different point of the store (never a stale, uncorrupted result).

Reference: Wang et al. (2024) LoRA-GA, Sec. 4; Hayou et al. (2024) LoRA+, Sec. 5; claims in
``lora_theory.claims.finetune``.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from .._threads import torch_threads
from .._validate import InvalidArgumentError, check_choice, check_int, check_positive
from ..lora import layer as lora_layer
from ..lora.peft_bridge import lora_factors
from ..lora_ga import model as ga_model
from ..lora_plus import optim as lp_optim
from . import data as ft_data
from . import tasks as ft_tasks

__all__ = ["METHODS", "RUN_VERSION", "TARGETS", "code_fingerprint", "run_point"]

METHODS = ("full", "lora", "lora_ga", "lora_plus")
#: every linear layer of the 6 blocks (a regex over full module names, as PEFT's target_modules)
TARGETS = r".*layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"

_PATCHABLE = {  # what each method calls through a module attribute (the targets of negative controls)
    "full": (),
    "lora": (("lora.layer", "add_lora"),),
    "lora_ga": (("lora.layer", "add_lora"), ("lora_ga.model", "estimate_gradients"), ("lora_ga.model", "apply_lora_ga"),
                ("lora_ga.model", "lora_ga_init")),
    "lora_plus": (("lora.layer", "add_lora"), ("lora_plus.optim", "loraplus_param_groups")),
}
_MODULES = {"lora.layer": lora_layer, "lora_ga.model": ga_model, "lora_plus.optim": lp_optim}


def _code_digest(code: Any, h: Any) -> None:
    """Feed a code object into ``h``: its bytecode and constants, nested code objects recursively (never a repr holding a memory address)."""
    h.update(code.co_code)
    for c in code.co_consts:
        if hasattr(c, "co_code"):  # a nested function, lambda or generator expression
            _code_digest(c, h)
        else:
            h.update(repr(c).encode())


def _describe(obj: Any) -> str:
    """The same string in every process for the same function (module, name, code); a mock or other object: its type and repr."""
    code = getattr(obj, "__code__", None)
    if code is None:  # a mock, a partial, a class: its type and repr say what it is
        return f"{type(obj).__qualname__}:{obj!r:.200}"
    h = hashlib.sha256()
    _code_digest(code, h)
    return f"{obj.__module__}.{obj.__qualname__}:{h.hexdigest()[:16]}"


#: the version of what a run computes (training loop, model, data, metrics): bump it on any change that can
#: change a stored result, so that stored points of the old protocol are recomputed, not reused
RUN_VERSION = 1


def code_fingerprint(method: str) -> str:
    """sha256 of :data:`RUN_VERSION` and of every function ``method`` reaches through a patchable attribute, as they are now.

    A negative control replaces one of those functions, so its runs get another fingerprint (and
    another sweep-point hash) and are computed afresh instead of read back uncorrupted.
    """
    check_choice("method", method, METHODS)
    parts = [f"run-v{RUN_VERSION}"] + [_describe(getattr(_MODULES[m], a)) for m, a in _PATCHABLE[method]]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@functools.cache
def _base(task: str, split_seed: int):
    """(model, tokenizer or None, {split: data}) of a task, built once per process.

    VADER tasks: the probe model (the probe fit costs ~20 s); ``cpython_mlm``: the
    :class:`~lora_theory.finetune.tasks.MLMModel` (decoder fit ~1 CPU-minute; no tokenizer needed,
    the windows are token ids already).
    """
    from ..lora.pretrained import load_minilm, load_tokenizer  # heavy

    splits = {s: ft_data.load_task(task, s, split_seed=split_seed) for s in ft_data.SPLITS}
    with torch_threads(1):
        if splits["train"].info.kind == "mlm":
            cache = Path.home() / ".cache" / "lora-theory" / f"mlm_decoder_{split_seed}.pt"
            return ft_tasks.mlm_model(load_minilm(), splits["train"].input_ids, splits["train"].labels, cache=str(cache), steps=60), None, splits
        tok = load_tokenizer()
        model = ft_tasks.probe_model(load_minilm(), tok, splits["train"].texts, splits["train"].y, splits["train"].info.kind)
    return model, tok, splits


def _batches(tok, d, idx: list[int]) -> dict[str, torch.Tensor]:
    if isinstance(d, ft_data.MLMData):
        ids, labels = d.input_ids[idx], d.labels[idx]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "y": labels[labels != -100]}
    from ..lora.pretrained import encode

    return {**encode(tok, [d.texts[i] for i in idx]), "y": d.y[idx]}


@functools.cache
def _eval_batches(task: str, split_seed: int, split: str, n: int | None, bs: int = 128) -> tuple[tuple[dict[str, torch.Tensor], ...], torch.Tensor]:
    """The first ``n`` entries of a split, encoded once, in batches of similar token length (less padding), and their targets."""
    _, tok, splits = _base(task, split_seed)
    d = splits[split]
    m = len(d) if n is None else min(n, len(d))
    if isinstance(d, ft_data.MLMData):  # windows of one length: no sorting needed
        batches = tuple(_batches(tok, d, list(range(i, min(i + bs, m)))) for i in range(0, m, bs))
        return batches, torch.cat([b["y"] for b in batches])
    lengths = [len(tok.tokenize(t)) for t in d.texts[:m]]
    idx = sorted(range(m), key=lambda i: (lengths[i], i))  # sorted by length: each batch pads to a similar length
    batches = tuple(_batches(tok, d, idx[i:i + bs]) for i in range(0, m, bs))
    return batches, torch.cat([b["y"] for b in batches])


def _eval(model, task, key: tuple[str, int, str, int | None]) -> tuple[float, float]:
    """(loss, metric) of ``model`` on the cached evaluation batches ``key`` = (task, split_seed, split, n)."""
    batches, y = _eval_batches(*key)
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = torch.cat([model({k: v.to(dev) for k, v in b.items()}) for b in batches]).cpu()
    return float(task.loss_of(out, y)), task.metric(out, y)


def run_point(*, task: str, method: str, lr: float, seed: int, steps: int, batch_size: int = 16, eval_every: int = 5, val_curve: int = 256,
              r: int = 8, alpha: float = 16.0, ratio: float = 16.0, direction: str = "ArB2r", scale: str = "stable", gamma: float = 16.0,
              ga_batches: int = 4, split_seed: int = 0, final_val: bool = False, warmup: int = 0, ga_source: str = "gradient",
              device: str = "cpu", code: str = "") -> dict[str, Any]:
    """Train one (task, method, lr, seed) and measure it; a module-level sweep point.

    Args:
        task: a key of :data:`lora_theory.finetune.data.TASKS`.
        method: "full", "lora", "lora_ga" or "lora_plus".
        lr: AdamW learning rate (eta_A for LoRA+).
        seed: seed of the data order and of the adapters' random init.
        steps, batch_size: the training budget (steps of ``batch_size`` training examples).
        warmup: steps of linear learning-rate warmup (then constant).
        eval_every: steps between evaluations of the validation loss on the first ``val_curve``
            validation entries (the curve; step 0 included).
        r, alpha: rank and rsLoRA alpha (eta = alpha / sqrt(r)) of every adapter.
        ratio: LoRA+'s eta_B / eta_A. direction, scale, gamma, ga_batches: LoRA-GA's settings.
        ga_source: "gradient" (LoRA-GA) or "random": the SVD is taken of a seeded Gaussian matrix
            of each gradient's shape instead of the gradient (LoRA-GA's Table 3 arm "+SO": the
            stable scale and offset without the gradient's directions; no gradient batch is charged).
        device: "cpu" (single thread: CPU seconds comparable between methods) or "cuda" (the
            "CPU seconds" then time the host process, not the GPU: compare steps, not seconds).
        split_seed: the data split (fixed across training seeds).
        final_val: also evaluate the whole validation split at the end (else ``val_loss`` is the
            last curve point, on the first ``val_curve`` validation entries, and ``val_metric`` nan).
        code: :func:`code_fingerprint` of the method (part of the point's identity only).

    Returns:
        curve_step, curve_val (validation loss), curve_cpu (cumulative training CPU seconds at
        each evaluation, init excluded), init_steps, init_cpu, step_cpu (median CPU seconds of a
        training step), val_loss, val_metric, test_loss, test_metric (whole test split),
        diverged (a non-finite loss stopped the run; its later curve points are inf).
    """
    check_choice("task", task, tuple(ft_data.TASKS))
    check_choice("method", method, METHODS)
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    eval_every = check_int("eval_every", eval_every, low=1)
    lr = check_positive("lr", lr)
    check_choice("ga_source", ga_source, ("gradient", "random"))
    check_choice("device", device, ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("device: expected a machine with a CUDA GPU for 'cuda', got none (torch.cuda.is_available() is False)")
    with torch_threads(1):  # CPU seconds of one thread: comparable between methods on a shared machine
        return _train(task, method, lr, seed, steps, batch_size, eval_every, val_curve, r, alpha, ratio, direction, scale, gamma, ga_batches,
                      split_seed, final_val, warmup, ga_source, device)


def _train(task, method, lr, seed, steps, batch_size, eval_every, val_curve, r, alpha, ratio, direction, scale, gamma, ga_batches, split_seed,
           final_val, warmup, ga_source="gradient", device="cpu"):
    base, tok, splits = _base(task, split_seed)
    info = splits["train"].info
    loss_fn = ft_tasks.SupervisedTask(info.kind)
    model = copy.deepcopy(base).to(device)
    train = splits["train"]
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < (steps + ga_batches) * batch_size:
        order += torch.randperm(len(train), generator=gen).tolist()  # epochs of the training split, reshuffled

    def batch(k: int) -> dict[str, torch.Tensor]:
        return {k_: v.to(device) for k_, v in _batches(tok, train, order[k * batch_size:(k + 1) * batch_size]).items()}

    init_cpu, init_steps = 0.0, 0
    if method == "full":
        for name, p in model.named_parameters():
            p.requires_grad_(".layer." in name)  # the 6 transformer blocks; embeddings, pooler and head stay frozen
    else:
        lora_layer.add_lora(model.encoder, TARGETS, r=r, alpha=alpha, rslora=True, init="lora", seed=seed)
        if method == "lora_ga":
            t0 = time.process_time()
            G = ga_model.estimate_gradients(model, [batch(k) for k in range(ga_batches)], loss_fn.loss, TARGETS, mode="eval")
            if ga_source == "random":  # "+SO": random directions (a Gaussian matrix's singular vectors), stable scale and offset kept
                g_rand = torch.Generator().manual_seed(10_000 + seed)
                G = {k: torch.randn(v.shape, generator=g_rand, dtype=v.dtype) for k, v in G.items()}
            ga_model.apply_lora_ga(model, G, direction=direction, scale=scale, gamma=gamma, svd="randomized", seed=seed,
                                   compute_dtype=torch.float32)
            init_cpu, init_steps = time.process_time() - t0, (ga_batches if ga_source == "gradient" else 0)
    model.eval()  # dropout off for every method (module docstring)
    params = [p for p in model.parameters() if p.requires_grad]
    if method == "lora_plus":
        opt = torch.optim.AdamW(lp_optim.loraplus_param_groups(model, lr, ratio, one_d="base"), lr=lr, weight_decay=0.0)
    elif method == "full":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    else:
        A, B = lora_factors(model)
        opt = torch.optim.AdamW([*A, *B], lr=lr, weight_decay=0.0)
    # linear warmup over the first ``warmup`` steps, then constant (Adam's first steps are sign-like and
    # full-size on every coordinate; without warmup they move the model off the probe's optimum by noise)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / (warmup + 1)))
    curve_key, val_key, test_key = (task, split_seed, "val", val_curve), (task, split_seed, "val", None), (task, split_seed, "test", None)
    curve_step, curve_val, curve_cpu = [0], [_eval(model, loss_fn, curve_key)[0]], [0.0]
    cpu, step_cpu, diverged = 0.0, [], False
    for step in range(1, steps + 1):
        b = batch(step - 1)
        t0 = time.process_time()
        loss = loss_fn.loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        dt = time.process_time() - t0
        cpu += dt
        step_cpu.append(dt)
        if not math.isfinite(float(loss.detach())):
            diverged = True
        if step % eval_every == 0 or step == steps or diverged:
            v = math.inf if diverged else _eval(model, loss_fn, curve_key)[0]
            v = v if math.isfinite(v) else math.inf  # a nan loss is a divergence: never "below the target"
            curve_step.append(step)
            curve_val.append(v)
            curve_cpu.append(cpu)
            if not math.isfinite(v):
                diverged = True
        if diverged:
            break
    if diverged:
        val_loss = val_metric = test_loss = test_metric = math.nan
    else:
        val_loss, val_metric = _eval(model, loss_fn, val_key) if final_val else (curve_val[-1], math.nan)
        test_loss, test_metric = _eval(model, loss_fn, test_key)
    return {"curve_step": curve_step, "curve_val": curve_val, "curve_cpu": curve_cpu, "init_steps": init_steps, "init_cpu": init_cpu,
            "step_cpu": float(torch.tensor(step_cpu).median()), "val_loss": val_loss, "val_metric": val_metric, "test_loss": test_loss,
            "test_metric": test_metric, "diverged": diverged, "metric": info.metric}

