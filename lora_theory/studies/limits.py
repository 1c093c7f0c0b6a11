"""Studies and figures of the Computational Limits paper (Hu et al. 2024; claims ``limits.*``).

- ``limits_grad_closed_form``: the max-entry relative error of every gradient of
  :func:`lora_theory.exact_gradients` (blocked closed form) against
  :func:`lora_theory.autograd_gradients` (float64), per score range R (claims
  ``limits.grad_closed_form``, ``toolkit.grad_blocked``).
- ``degree_vs_range``, ``phase_transition``, ``gradient_error_vs_bound``, ``runtime_scaling``:
  the norm-bound sweeps of :mod:`lora_theory.limits.norm_sweeps`.

Drawing is in :mod:`lora_theory.plotting.limits`.
"""
from __future__ import annotations

import itertools

import pandas as pd
import torch

from ..limits.exact import autograd_gradients, exact_gradients
from ..limits.instance import make_instance, norm_bounds
from ..limits.norm_sweeps import degree_sweep, gradient_error_sweep
from ..tolerances import max_rel_error
from . import lazy_plot, register_figure

__all__ = ["closed_form_agreement", "phase_transition_study", "runtime_study"]


def closed_form_agreement(
    bounds: tuple[float, ...] = (0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
    *,
    L: int = 256,
    d: int = 8,
    r: int = 2,
    seeds: tuple[int, ...] = (0, 1),
    block_size: int = 37,
) -> pd.DataFrame:
    """Max relative error of blocked exact gradients (float64 and float32) vs float64 autograd.

    Returns:
        Tidy DataFrame: dtype, adapt, attention, bound, seed, R, param, rel_err.
    """
    rows = []
    for adapt, attention, bound, seed in itertools.product(("qv", "qkv"), ("self", "cross"), bounds, seeds):
        inst = make_instance(L, d, r, adapt=adapt, attention=attention, bound=bound, seed=seed)
        ref = autograd_gradients(inst, method="dense")
        R = norm_bounds(inst)["R"]
        for dtype in (torch.float64, torch.float32):
            g = exact_gradients(inst.to(dtype=dtype), block_size=block_size)
            for k, v in g.items():
                rows.append({"dtype": str(dtype).removeprefix("torch."), "adapt": adapt, "attention": attention,
                             "bound": bound, "seed": seed, "R": R, "param": k, "rel_err": max_rel_error(v, ref[k])})
    return pd.DataFrame(rows)


def _compute(quick: bool) -> pd.DataFrame:
    if quick:
        return closed_form_agreement(bounds=(0.5, 2.0, 8.0, 32.0), L=96, seeds=(0,))
    return closed_form_agreement()


register_figure(
    "limits_grad_closed_form",
    claims=("limits.grad_closed_form", "toolkit.grad_blocked"),
    description="Blocked closed-form LoRA gradient vs float64 autograd: max relative error per score range R, float64 and float32.",
    compute=_compute,
    plot=lazy_plot("limits", "plot_closed_form_agreement"),
)
register_figure(
    "degree_vs_range",
    claims=("limits.degree_bound", "limits.degree_tightness"),
    description="Minimal degree of a polynomial with sup relative error <= eps for e^s on [-R, R] (Chebyshev, Taylor), with the fitted Aggarwal-Alman bound.",
    compute=lambda quick: degree_sweep(Rs=(0.1, 0.5, 1, 2, 4, 8) if quick else (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)),
    plot=lazy_plot("limits", "plot_degree_vs_range"),
)
register_figure(
    "phase_transition",
    claims=("limits.threshold", "limits.thm3.1", "limits.thm4.1_regime", "limits.rank_count"),
    description="limits.threshold as the claim decides it (d = ceil(log2 L / 2), eps = 1/L, R = Gamma^2, k = C(g + d, d); Gamma* = where k reaches L). "
                "Left: the rank exponent log_L k vs x = Gamma / sqrt(ln L): the toolkit's planned degree at L = 2^8..2^16 (solid; hollow markers where the degree is "
                "the fitted bound degree_bound because float64 cannot certify a fit, no missing points) and the Bessel bracket of the minimal degree (band, lo..hi) "
                "out to 2^512; the threshold is log_L k = 1. Right: x* = Gamma* / sqrt(ln L) over L = 2^8..2^512 (the bracket's band and its geometric mean; dots: the "
                "toolkit's x* at reachable L) with the fitted power p of Gamma* ~ (ln L)^p per window.",
    compute=lambda quick: phase_transition_study(quick),
    plot=lazy_plot("limits", "plot_phase_transition"),
)
register_figure(
    "gradient_error_vs_bound",
    claims=("limits.thm3.1", "limits.thm4.1_regime", "toolkit.poly_vs_random_features"),
    description="Measured relative gradient error of approx_gradients at a fixed degree budget (g = 8, d = 4) vs Gamma, random and AS23 hard instances, several L; FAVOR+ random features at the same feature count for comparison.",
    compute=lambda quick: gradient_error_sweep(Ls=(256, 1024) if quick else (256, 1024, 4096), gammas=(0.5, 1, 1.5, 2, 3, 4) if quick else (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
                                               peer=True),
    plot=lazy_plot("limits", "plot_gradient_error_vs_bound"),
)
register_figure(
    "runtime_scaling",
    claims=("limits.thm3.1",),
    description="limits.thm3.1 (a): single-thread CPU time (time.process_time, min over interleaved rounds; the machine was shared) of approx_gradients at fixed "
                "degree, so fixed rank k (d = 4, R <= 4, partial adaptation), and of the exact blocked gradient, vs L. Left: the measurements, the fitted cost "
                "form a + b L + c approx_flops per k (lines) and the exponent of L at fixed k the claim decides on (joint fit, band [0.9, 1.1]); right: measured / "
                "fitted for every (L, k, d) point (d = 2, 8 included), band [1/2, 2].",
    compute=lambda quick: runtime_study(quick),
    plot=lazy_plot("limits", "plot_runtime_scaling"),
)


def phase_transition_study(quick: bool, *, reach: tuple[int, ...] | None = None, far: tuple[int, ...] = (32, 128, 512), xs=None,
                           threshold_log2_Ls: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Rows kind = "curve" (source toolkit | bracket: log2_L, x, d, R, degree or degree_lo/hi, log_L_k or log_L_k_lo/hi, degree_source)
    and kind = "threshold" (source toolkit | bracket: log2_L, x_star, x_star_min, x_star_max, Gamma_star), for claim ``limits.threshold``."""
    import math

    import numpy as np

    from ..limits import asymptotics, norm_sweeps, plan

    xs = np.round(np.arange(0.1, 1.201, 0.1 if quick else 0.05), 3) if xs is None else xs
    reach = ((8, 12, 16) if quick else (8, 10, 12, 14, 16)) if reach is None else tuple(reach)
    rows = []
    for log2_L in reach + tuple(far):
        lnL = log2_L * math.log(2)
        d = asymptotics.half_log_dimension(log2_L)
        for x in xs:
            R = float(x * x * lnL)
            lo, hi = asymptotics.degree_bracket(R, log_inv_eps=lnL)
            rows.append({"kind": "curve", "source": "bracket", "log2_L": log2_L, "x": float(x), "d": d, "R": R, "degree_lo": lo, "degree_hi": hi,
                         "log_L_k_lo": asymptotics.log_rank(lo, d) / lnL, "log_L_k_hi": asymptotics.log_rank(hi, d) / lnL})
            if log2_L in reach:  # the running method's own plan (degree measured where float64 certifies it, else the fitted bound)
                pl = plan.approx_plan(L=2**log2_L, d=d, R=R, eps=2.0**-log2_L)
                rows.append({"kind": "curve", "source": "toolkit", "log2_L": log2_L, "x": float(x), "d": d, "R": R, "degree": pl.degree,
                             "degree_source": pl.degree_source, "log_L_k": math.log(pl.k) / lnL})
    ev = asymptotics.threshold_table(asymptotics.THRESHOLD_LOG2_LS if threshold_log2_Ls is None else threshold_log2_Ls)
    rows += [{"kind": "threshold", "source": "bracket", **r} for r in ev.to_dict("records")]
    tk = norm_sweeps.threshold_sweep(tuple(2**j for j in reach), regime="half_log")
    rows += [{"kind": "threshold", "source": "toolkit", "log2_L": math.log2(r["L"]), "d": r["d"], "Gamma_star": r["Gamma_star"], "x_star": r["x_star"]}
             for r in tk.to_dict("records")]
    return pd.DataFrame(rows)


def runtime_study(quick: bool, *, grid=None, rounds: int | None = None) -> pd.DataFrame:
    """Rows method = "approx" (limits.scaling.cost_sweep over the claim's grid, with fitted_seconds of the cost form and the joint
    fixed-rank exponent) and method = "exact" (exact_gradients, CPU seconds, one thread), for claim ``limits.thm3.1``."""
    import math
    import time

    from .._threads import torch_threads
    from ..limits import scaling

    df = scaling.cost_sweep(scaling.cost_grid(quick) if grid is None else grid, rounds=(5 if quick else 4) if rounds is None else rounds)  # the claim's grid
    Ls = sorted(df.L.unique())
    a, b, c = scaling.fit_cost_form(df)
    sel = df[df.d == 4]
    e, _ = scaling.fixed_rank_exponent(sel.L, sel.k, sel.cpu_seconds)
    df = df.assign(method="approx", fitted_seconds=a + b * df.L + c * df.flops, fixed_k_exponent=e, a=a, b=b, c=c)
    rows = []
    with torch_threads(1):
        for L in Ls:
            inst = make_instance(L, 4, 2, adapt="qv", bound=2.0, beta=0.25, seed=0)
            best = math.inf
            for _ in range(1 if L >= 1 << 14 else 2):
                t0 = time.process_time()
                exact_gradients(inst)
                best = min(best, time.process_time() - t0)
            rows.append({"method": "exact", "L": L, "d": 4, "cpu_seconds": best})
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True)


# -- real models on the phase diagram (issue 13) ------------------------------------------------

#: degrees whose contours the real-heads figure draws (eps = 1e-3)
REGIME_DEGREES = (4, 8, 16, 32, 64, 128)


def _degree_contours(eps: float, d: int, degrees=REGIME_DEGREES) -> list[dict]:
    """R_g = the largest R whose planned degree is <= g (bisection on approx_plan; the degree does not depend on L)."""
    from ..limits.plan import approx_plan

    rows = []
    for g in degrees:
        lo, hi = 0.0, 1.0
        while approx_plan(L=2, d=d, R=hi, eps=eps, adapt="qv").degree <= g:
            lo, hi = hi, 2 * hi
        for _ in range(30):  # R_g to 1e-9 relative: the degree is a step function of R
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if approx_plan(L=2, d=d, R=mid, eps=eps, adapt="qv").degree <= g else (lo, mid)
        rows.append({"kind": "degree_contour", "degree": g, "R": lo, "d_head": d, "eps": eps})
    return rows


def real_heads_study(Ls: tuple[int, ...] = (32, 64, 128, 256, 512), *, sequences: int = 8, eps: float = 1e-3) -> pd.DataFrame:
    """Every head of the pretrained MiniLM on real English (CPython's Language Reference), at several L.

    Returns:
        Tidy DataFrame: rows ``kind == "head"`` are :func:`lora_theory.limits.regime.attention_regime`
        rows (one per (L, layer, head), R the max over ``sequences`` windows of L tokens, disjoint
        text per L); rows ``kind == "degree_contour"`` give, per degree g, the largest R the
        polynomial method covers at that degree (eps). Columns include text (the corpus fingerprint).
    """
    from ..limits.regime import attention_regime
    from ..lora.pretrained import load_minilm
    from ..lora.text import load_tokenizer, reference_text, text_batches, text_fingerprint

    model, tok = load_minilm(), load_tokenizer()
    parts = []
    for L in Ls:
        batches = text_batches(tok, L, batch_size=sequences)
        parts.append(attention_regime(model, batches, eps=eps).assign(kind="head", model="all-MiniLM-L6-v2"))
    df = pd.concat(parts, ignore_index=True)
    df["k"] = df["k"].map(str)  # exact integers, kept exact in the CSV
    df["text"] = text_fingerprint(reference_text())
    return pd.concat([df, pd.DataFrame(_degree_contours(eps, int(df.d_head.iloc[0])))], ignore_index=True)


def regime_finetuning_study(
    methods: tuple[str, ...] = ("lora", "lora_ga", "lora_plus"),
    *,
    steps: int = 120,
    every: int = 10,
    batch_size: int = 8,
    seq_len: int = 64,
    probe_len: int = 128,
    probe_sequences: int = 4,
    lrs: dict[str, float] | None = None,
    r: int = 8,
    alpha: float = 16.0,
    ratio: float = 16.0,
    seeds: tuple[int, ...] = (0,),
) -> pd.DataFrame:
    """The regime report of MiniLM's 72 heads while it is fine-tuned with LoRA, LoRA-GA and LoRA+ (query, value).

    Stand-in task (until the fine-tuning issue's real tasks land): the teacher-student task of
    :func:`lora_theory.finetune.tasks.teacher_student_task` (the teacher is MiniLM with a fixed
    random rank-8 change of its query and value weights) on real text: consecutive windows of the
    Language Reference, a fresh batch per step (cycling through the text in epochs when it is used
    up); the report is measured every ``every`` steps on fixed held-out windows (``probe_sequences``
    x ``probe_len`` tokens at the start of the text, disjoint from the training windows), as is the
    held-out task loss (the premise: the model does learn). The teacher's own
    report is included (method "teacher", at every probed step) as the direction the task pulls.
    Adapters: the toolkit's LoRA on query and value (r, alpha, rsLoRA), AdamW; LoRA-GA by
    :func:`lora_theory.apply_lora_ga` (ArB2r, stable scale) from the gradient of 4 batches; LoRA+
    by :func:`lora_theory.make_loraplus_optimizer` (eta_B = ratio eta_A).

    Returns:
        Tidy DataFrame: method, seed, lr, step, layer, head, L, R, R_over_sqrt_ln_L, regime,
        train_loss, eval_loss (plus the other report columns, without the planner's).
    """
    import copy

    from ..finetune.tasks import teacher_student_task
    from ..limits.regime import attention_regime, regime_trajectory
    from ..lora.layer import add_lora
    from ..lora.pretrained import load_minilm
    from ..lora.text import load_tokenizer, reference_text, text_batches
    from ..lora_ga.model import apply_lora_ga, estimate_gradients
    from ..lora_plus.optim import make_loraplus_optimizer

    lrs = {"lora": 1e-3, "lora_ga": 1e-4, "lora_plus": 3e-4, **(lrs or {})}
    tok = load_tokenizer()
    probe = text_batches(tok, probe_len, batch_size=probe_sequences)  # the first windows of the text: held out
    held_out = probe
    n_tokens = len(tok(reference_text(), add_special_tokens=False, verbose=False)["input_ids"])
    skip = -(-probe_sequences * (probe_len - 2) // (seq_len - 2))  # training windows start after the probe text
    n_train = min(steps, (n_tokens // (seq_len - 2) - skip) // batch_size)
    train = text_batches(tok, seq_len, batch_size=batch_size, n_batches=n_train, offset=skip)  # step i uses train[(i - 1) % n_train]: epochs
    base = load_minilm()
    frames = []
    for seed in seeds:
        torch.manual_seed(seed)
        task = teacher_student_task(base, seed=seed)
        teacher = attention_regime(task.teacher, probe, plan=False)
        for method in methods:
            model = copy.deepcopy(base)
            add_lora(model, ["query", "value"], r=r, alpha=alpha, rslora=True, init="lora", seed=seed)
            if method == "lora_ga":
                G = estimate_gradients(model, train[:4], task.loss, ["query", "value"], mode="eval")
                apply_lora_ga(model, G, direction="ArB2r", scale="stable", gamma=16, seed=seed)
            model.eval()  # dropout off: the curves reflect the methods, not dropout noise
            lr = lrs[method]
            if method == "lora_plus":
                opt = make_loraplus_optimizer(model, lr=lr, ratio=ratio)
            else:
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)

            def step(i: int, model=model, opt=opt, task=task) -> float:
                loss = task.loss(model, train[(i - 1) % len(train)])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return float(loss.detach())

            def evaluate(model=model, task=task) -> float:
                with torch.no_grad():
                    return float(sum(task.loss(model, b) for b in held_out) / len(held_out))

            df = regime_trajectory(model, step, probe, steps=steps, every=every, evaluate=evaluate)
            frames.append(df.assign(method=method, seed=seed, lr=lr))
        probed = sorted(frames[-1].step.unique())
        frames += [teacher.assign(step=s, method="teacher", seed=seed, lr=float("nan")) for s in probed]
    return pd.concat(frames, ignore_index=True)


def _finetune_compute(quick: bool) -> pd.DataFrame:
    if quick:
        return regime_finetuning_study(steps=4, every=2, batch_size=2, seq_len=32, probe_len=48, probe_sequences=2)
    return regime_finetuning_study(steps=60, every=10, seeds=(0, 1))


register_figure(
    "regime_real_heads",
    claims=("limits.thm3.1", "limits.thm4.1_regime"),
    description="Phase diagram with real heads: R = max |q.k/sqrt(d)| of every MiniLM head on real English (CPython's Language Reference) vs L = 32..512, "
                "the sqrt(ln L) threshold, ln L, and the degree the polynomial method needs at eps = 1e-3.",
    compute=lambda quick: real_heads_study(sequences=2 if quick else 8),
    plot=lazy_plot("limits", "plot_real_heads"),
)
register_figure(
    "regime_during_finetuning",
    claims=("limits.thm3.1", "limits.thm4.1_regime"),
    description="R per MiniLM head over LoRA / LoRA-GA / LoRA+ fine-tuning (query, value; teacher-student stand-in task on real text), "
                "probed on held-out text; held-out loss; the teacher's R for reference.",
    compute=_finetune_compute,
    plot=lazy_plot("limits", "plot_regime_during_finetuning"),
)
