"""The proof-of-concept experiment: pretrain two small LMs, LoRA-fine-tune them at long context with LoRAAttention.

Text: :func:`lora_theory.lora.text.reference_text` as characters, split by position: the first 60 % for
pretraining, the next 25 % for fine-tuning (held out from pretraining), the last 15 % for validation.

Points (each a :func:`lora_theory.sweeps.run_sweep` point, stored as it finishes, so a re-run resumes):

- ``pretrain_point(kind, ...)``: trains ``TinyLM`` (``kind`` "standard" or "controlled") from scratch with
  Adam on random windows of ``pre_L`` characters; every ``log_every`` steps records the loss, the CPU
  seconds and each last-layer head's Cauchy-Schwarz score range R_h on a window of the fine-tuning
  length, as R_h / sqrt(ln L_ft). The trained weights are cached on disk (:func:`cache_dir`) for the
  fine-tuning points (recomputed deterministically if the file is missing).
- ``finetune_point(kind, mode, L, ...)``: the pretrained model's last attention replaced by
  :class:`~lora_theory.limits.module.LoRAAttention` (LoRA r on q, k, v; everything else frozen), trained
  with Adam on consecutive windows of L + 1 characters of the fine-tuning text (one window per step, an
  epoch = ``ft_windows`` windows); per step the paths the module took (forward, backward), R / sqrt(ln L),
  degree, k, the loss and the CPU seconds; after each epoch the validation loss (the exact path, no grad).

Times are CPU seconds of the process (time.process_time): the machine this ran on was shared.

Reference: Hu et al. (2024), App. G (their experiment: OPT models, standard vs outlier-free, minutes
per epoch of exact attention); issue 23.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..lora.text import reference_text
from ..sweeps import point_hash, run_points
from .model import TinyLM, char_vocab, encode_text

__all__ = ["FULL", "QUICK", "Config", "cache_dir", "experiment", "finetune_point", "pretrain_point", "split_text", "store_path"]

KINDS = ("standard", "controlled")
MODES = ("auto", "exact")


@dataclass(frozen=True)
class Config:
    """Sizes of one version of the experiment (quick: the reduced scale run on 2 shared cores)."""

    name: str
    n: int = 8
    heads: int = 2
    d: int = 4
    layers: int = 2
    pre_L: int = 128
    pre_batch: int = 16
    pre_steps: int = 300
    pre_lr: float = 3e-3
    log_every: int = 50
    R_max: float = 2.0
    ft_Ls: tuple[int, ...] = (4096,)
    ft_windows: int = 2
    ft_epochs: int = 2
    ft_lr: float = 1e-2
    val_windows: int = 1
    r: int = 2
    eps: float = 1e-3


QUICK = Config("quick")
FULL = Config("full", pre_steps=1500, ft_Ls=(4096, 8192, 16384), ft_windows=6, ft_epochs=3)


def store_path() -> Path:
    """``$LORA_THEORY_POC_STORE``, else ``~/.cache/lora-theory/poc.sqlite``."""
    env = os.environ.get("LORA_THEORY_POC_STORE")
    return Path(env) if env else Path.home() / ".cache" / "lora-theory" / "poc.sqlite"


def cache_dir() -> Path:
    """Where the pretrained weights are kept: beside the store, in ``poc-models/``."""
    return store_path().parent / "poc-models"


def split_text() -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vocab, pretraining ids, fine-tuning ids, validation ids): 60 / 25 / 15 % of the reference text by position."""
    text = reference_text()
    vocab = char_vocab(text)
    ids = encode_text(text, vocab)
    a, b = int(0.6 * len(ids)), int(0.85 * len(ids))
    return vocab, ids[:a], ids[a:b], ids[b:]


def _windows(ids: torch.Tensor, L: int, count: int) -> torch.Tensor:
    """(count, L + 1) consecutive non-overlapping windows from the start of ``ids``."""
    need = count * (L + 1)
    if len(ids) < need:
        raise ValueError(f"L: the text holds {len(ids) // (L + 1)} windows of {L + 1} characters, {count} requested")
    return ids[:need].view(count, L + 1)


def _lm_loss(model: TinyLM, w: torch.Tensor) -> torch.Tensor:
    """Next-character cross-entropy (nats) of windows w (B, L + 1): the model reads L characters, attention length L."""
    logits = model(w[:, :-1])  # (B, L, vocab)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))


def _model_file(kind: str, params: dict[str, Any]) -> Path:
    return cache_dir() / f"{kind}-{point_hash('poc-pretrain', params, 0)[:16]}.pt"


def pretrain_point(kind: str, n: int, heads: int, d: int, layers: int, pre_L: int, pre_batch: int, pre_steps: int, pre_lr: float,
                   log_every: int, R_max: float, ft_L: int, seed: int = 0) -> dict[str, Any]:
    """Pretrain one model; returns its curve (step, loss, CPU s, R_h / sqrt(ln ft_L) per head) and its validation loss."""
    params = {k: v for k, v in locals().items() if k != "kind"}
    model, curve, cpu = _pretrain(kind=kind, **params)
    _save(model, _model_file(kind, params))  # for the fine-tuning points
    vocab, _, _, val = split_text()
    with torch.no_grad():
        w = _windows(val, pre_L, 8)
        val_loss = float(_lm_loss(model, w))
    return {"kind": kind, "curve": curve, "cpu_seconds": cpu, "val_loss": val_loss, "vocab": len(vocab)}


def _pretrain(kind: str, n: int, heads: int, d: int, layers: int, pre_L: int, pre_batch: int, pre_steps: int, pre_lr: float,
              log_every: int, R_max: float, ft_L: int, seed: int = 0):
    vocab, pre, ft, _ = split_text()
    torch.manual_seed(seed)
    model = TinyLM(len(vocab), n, heads, d, layers, controlled=kind == "controlled", R_max=R_max)
    model.apply_norm_control()
    opt = torch.optim.Adam(model.parameters(), lr=pre_lr)
    gen = torch.Generator().manual_seed(seed)
    probe = _windows(ft, ft_L, 1)[:, :-1]  # one window of the fine-tuning length, for the heads' score ranges
    curve, t0 = [], time.process_time()
    for step in range(pre_steps + 1):
        if step % log_every == 0 or step == pre_steps:
            R = model.head_ranges(probe)
            curve.append({"step": step, "cpu_s": time.process_time() - t0, "R_over_sqrt_lnL": (R / math.sqrt(math.log(ft_L))).tolist(),
                          "loss": curve[-1]["loss"] if curve else math.nan})
        if step == pre_steps:
            break
        starts = torch.randint(0, len(pre) - pre_L - 1, (pre_batch,), generator=gen)
        w = torch.stack([pre[s : s + pre_L + 1] for s in starts.tolist()])
        loss = _lm_loss(model, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.apply_norm_control()
        if (step + 1) % log_every == 0:
            curve.append({"step": step + 1, "cpu_s": time.process_time() - t0, "R_over_sqrt_lnL": None, "loss": loss.item()})
    curve = [c for c in curve if c["R_over_sqrt_lnL"] is not None or c["loss"] == c["loss"]]
    return model, curve, time.process_time() - t0


def _pretrained(kind: str, params: dict[str, Any]) -> TinyLM:
    """The pretrained model of ``pretrain_point(kind, **params)``: from the cache file, else trained now and cached."""
    path = _model_file(kind, params)
    vocab, _, _, _ = split_text()
    if path.exists():
        model = TinyLM(len(vocab), params["n"], params["heads"], params["d"], params["layers"], controlled=kind == "controlled", R_max=params["R_max"])
        model.load_state_dict(torch.load(path))
        return model
    model, _, _ = _pretrain(kind=kind, **params)
    _save(model, path)
    return model


def _save(model: TinyLM, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a killed run never leaves half a file


_PRE_KEYS = ("n", "heads", "d", "layers", "pre_L", "pre_batch", "pre_steps", "pre_lr", "log_every", "R_max", "ft_L", "seed")


def finetune_point(kind: str, mode: str, L: int, pre: list, ft_windows: int, ft_epochs: int, ft_lr: float, val_windows: int, r: int,
                   eps: float, seed: int = 0) -> dict[str, Any]:
    """LoRA fine-tuning of the pretrained ``kind`` model's last attention at context L with LoRAAttention in ``mode``.

    ``pre``: the pretraining point's parameters as a list in the order of ``_PRE_KEYS`` (sweep points hold JSON lists, not dicts).
    """
    model = _pretrained(kind, dict(zip(_PRE_KEYS, pre, strict=True)))
    torch.manual_seed(seed)
    attn = model.attach_lora(r=r, mode=mode, eps=eps, seed=seed)
    _, _, ft, val = split_text()
    train = _windows(ft, L, ft_windows)
    valw = _windows(val, L, val_windows)
    opt = torch.optim.Adam(attn.parameters(), lr=ft_lr)

    def val_loss() -> float:
        attn.mode, saved = "exact", attn.mode  # the validation loss is the exact model's
        try:
            with torch.no_grad():
                return float(sum(_lm_loss(model, w[None]) for w in valw) / len(valw))
        finally:
            attn.mode = saved

    curve, epochs = [], []
    cpu = 0.0
    v0 = val_loss()
    for epoch in range(ft_epochs):
        e0 = cpu
        for w in train:
            t0 = time.process_time()
            loss = _lm_loss(model, w[None])
            opt.zero_grad()
            loss.backward()
            opt.step()
            cpu += time.process_time() - t0
            fwd, bwd = attn.log[-2], attn.log[-1]
            curve.append({"epoch": epoch, "cpu_s": cpu, "loss": loss.item(), "forward_path": fwd["path"], "backward_path": bwd["path"],
                          "R_over_sqrt_lnL": fwd["R"] / math.sqrt(math.log(L)), "degree": bwd["degree"], "k": bwd["k"],
                          "forward_bound": fwd["bound"], "backward_bound": bwd["bound"], "reason": bwd["reason"][:160]})
        epochs.append({"epoch": epoch, "cpu_s": cpu - e0, "val_loss": val_loss()})
    return {"curve": curve, "epochs": epochs, "val_loss_start": v0, "final_val_loss": epochs[-1]["val_loss"],
            "fast_forward_share": sum(c["forward_path"] == "approx" for c in curve) / len(curve),
            "fast_backward_share": sum(c["backward_path"] == "approx" for c in curve) / len(curve),
            "cpu_s_per_epoch": sum(e["cpu_s"] for e in epochs) / len(epochs)}


def _pre_params(cfg: Config, L: int) -> dict[str, Any]:
    return {"n": cfg.n, "heads": cfg.heads, "d": cfg.d, "layers": cfg.layers, "pre_L": cfg.pre_L, "pre_batch": cfg.pre_batch, "pre_steps": cfg.pre_steps,
            "pre_lr": cfg.pre_lr, "log_every": cfg.log_every, "R_max": cfg.R_max, "ft_L": L, "seed": 0}


def _run(fn, points: list[dict], name: str, store: Path, progress: bool) -> pd.DataFrame:
    return run_points(fn, points, store, name=name, what="proof-of-concept runs", progress=progress)


def experiment(quick: bool = True, *, store: str | Path | None = None, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Run (or read back) the experiment: {"pretrain": rows, "finetune": rows}; finished points are never recomputed."""
    cfg = QUICK if quick else FULL
    store = Path(store) if store is not None else store_path()
    pre_pts = [{"kind": k, **_pre_params(cfg, L)} for k in KINDS for L in cfg.ft_Ls[:1]]
    pre = _run(pretrain_point, pre_pts, f"poc-pretrain-{cfg.name}", store, progress)
    ft_pts = [{"kind": k, "mode": m, "L": L, "pre": [_pre_params(cfg, cfg.ft_Ls[0])[key] for key in _PRE_KEYS], "ft_windows": cfg.ft_windows, "ft_epochs": cfg.ft_epochs,
               "ft_lr": cfg.ft_lr, "val_windows": cfg.val_windows, "r": cfg.r, "eps": cfg.eps, "seed": 0}
              for L in cfg.ft_Ls for k in KINDS for m in MODES]
    ft = _run(finetune_point, ft_pts, f"poc-finetune-{cfg.name}", store, progress)
    return {"pretrain": pre, "finetune": ft, "config": pd.DataFrame([asdict(cfg)])}


def summary_table(res: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (model, L, mode): fast-path shares, CPU s per epoch, validation loss before/after, R / sqrt(ln L) range."""
    rows = []
    for _, p in res["finetune"].iterrows():
        R = [c["R_over_sqrt_lnL"] for c in p["curve"]]
        rows.append({"model": p["kind"], "L": p["L"], "mode": p["mode"], "fast_forward_share": p["fast_forward_share"],
                     "fast_backward_share": p["fast_backward_share"], "cpu_s_per_epoch": p["cpu_s_per_epoch"],
                     "val_loss_start": p["val_loss_start"], "final_val_loss": p["final_val_loss"], "R_over_sqrt_lnL_min": min(R), "R_over_sqrt_lnL_max": max(R)})
    return pd.DataFrame(rows)


def step_speedup_point(L: int, x_ratio: float, heads: int = 1, seed: int = 0) -> dict[str, Any]:
    """CPU seconds of one LoRA training step of one attention layer (n = d = 4, r = 2, eps = 1e-3, float32) in "auto" and "exact".

    The input is scaled so that the layer's Cauchy-Schwarz score range is R = x_ratio sqrt(ln L). Each mode is
    timed on a fresh layer after one warm-up call (the polynomial fits are cached per process); returns the
    paths "auto" took and why.
    """
    from ..limits.forward import forward_score_range
    from ..limits.module import LoRAAttention

    R = x_ratio * math.sqrt(math.log(L))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, L, 4, generator=gen)
    Y = torch.randn(1, L, 4 * heads, generator=gen)
    out: dict[str, Any] = {"R": R}
    for mode in MODES:
        m = LoRAAttention(4, heads, 4, r=2, mode=mode, eps=1e-3, seed=seed)
        with torch.no_grad():
            Q, K, _ = m._projections(x, x)
            xs = x * math.sqrt(R / float(forward_score_range(Q, K, m.beta).max()))  # scores scale with |x|^2 (A = 0 at init)

        def step(m=m, xs=xs) -> None:
            m.zero_grad()
            (0.5 * ((m(xs) - Y) ** 2).mean()).backward()

        if mode == "auto":
            step()  # warm-up: the polynomial fits are cached per process (the exact path has nothing to warm)
        t0 = time.process_time()
        step()
        out[f"{mode}_cpu_s"] = time.process_time() - t0
        if mode == "auto":
            out |= {"forward_path": m.log[-2]["path"], "backward_path": m.log[-1]["path"], "degree": m.log[-1]["degree"],
                    "reason": m.log[-1]["reason"][:200]}
    out["speedup"] = out["exact_cpu_s"] / out["auto_cpu_s"]
    return out


def speedup_study(quick: bool = True, *, store: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Speed-up of a training step (auto vs exact) vs R / sqrt(ln L): one stored point per (L, ratio); resumable."""
    Ls = (4096,) if quick else (4096, 16384)
    ratios = (0.3, 0.6, 1.0, 1.5, 2.2) if quick else (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0)
    pts = [{"L": L, "x_ratio": x, "heads": 1, "seed": 0} for L in Ls for x in ratios]
    df = _run(step_speedup_point, pts, f"poc-speedup-{'quick' if quick else 'full'}", Path(store) if store else store_path(), progress)
    return df[["L", "x_ratio", "R", "auto_cpu_s", "exact_cpu_s", "speedup", "forward_path", "backward_path", "degree", "reason"]]
