"""One LoRA training step of an attention layer: LoRAAttention in "auto" vs the exact blocked path vs SDPA autograd (issue 23).

A step = forward of the layer (LoRA on q, k, v), the loss 1/2 mean((O - Y)^2), and the backward to the LoRA
factors. Defaults: L = 2^15, one head, n = d_head = 4, r = 2, R <= 2 (inputs scaled so that the
Cauchy-Schwarz score range beta max||q|| max||k|| is 2), eps = 1e-3, float32 parameters (the polynomial
path computes in float64), CPU. Times: this process's CPU time (time.process_time; the machine is shared)
and wall time; on CUDA synchronized wall time. Target: auto >= 20x faster than both alternatives.

Then the loss trajectory: 100 SGD steps in "auto" and, from the same start, in "exact" (at --traj-L, default
2^12 so that the exact run fits the time on 2 shared cores); at every step of the auto run the exact loss
at the same parameters is computed (float64, dense) and must lie within the certified loss bound

    |L(O~) - L(O)| <= mean_ie |O~_ie - Y_ie| b + b^2 / 2,   b = the forward's certified max-entry bound

(0 on steps where the forward took the exact path). Printed: steps on the fast path, the worst
|L~ - L| / bound, and the largest gap between the two trajectories.

    python benchmarks/bench_train_step.py                   # CPU, L = 2^15 step + trajectory at 2^12 (~6 min)
    python benchmarks/bench_train_step.py --L 13 --steps 20 # a quick look
    python benchmarks/bench_train_step.py --device cuda     # on a GPU
    python benchmarks/bench_train_step.py --json out.json   # the numbers, for benchmarks/README.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lora_theory.limits.forward import forward_score_range  # noqa: E402
from lora_theory.limits.module import LoRAAttention  # noqa: E402


def make_layer(L: int, mode: str, device: str, seed: int = 0, R: float = 2.0):
    """The layer (n = d = 4, one head, A random small), input x scaled so that R = beta max||q|| max||k|| = R, target Y."""
    m = LoRAAttention(4, 1, 4, r=2, mode=mode, eps=1e-3, seed=seed).to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mu in m.adapt:
            getattr(m, f"A_{mu}").copy_(torch.randn(getattr(m, f"A_{mu}").shape, generator=gen) * 0.1)
    x = torch.randn(1, L, 4, generator=gen).to(device)
    with torch.no_grad():
        Q, K, _ = m._projections(x, x)
        x = x * math.sqrt(R / float(forward_score_range(Q, K, m.beta).max()))  # scores scale with |x|^2
    Y = torch.randn(1, L, 4, generator=gen).to(device)
    return m, x, Y


def sdpa_step(m: LoRAAttention, x: torch.Tensor, Y: torch.Tensor) -> float:
    """The same step by autograd through scaled_dot_product_attention."""
    P = []
    for mu in "qkv":
        W = getattr(m, f"W_{mu}") + m.scale * (getattr(m, f"B_{mu}") @ getattr(m, f"A_{mu}"))
        P.append(x[:, None] @ W)
    O = torch.nn.functional.scaled_dot_product_attention(*P, scale=m.beta).transpose(1, 2).reshape(x.shape)
    loss = 0.5 * ((O - Y) ** 2).mean()
    loss.backward()
    return loss.item()


def module_step(m: LoRAAttention, x: torch.Tensor, Y: torch.Tensor) -> float:
    loss = 0.5 * ((m(x) - Y) ** 2).mean()
    loss.backward()
    return loss.item()


def timed(fn, device: str) -> tuple[float, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.process_time() - c0, time.perf_counter() - w0


def step_timing(L: int, device: str, repeats: int) -> dict:
    out: dict = {"L": L, "device": device}
    auto, x, Y = make_layer(L, "auto", device)
    module_step(auto, x, Y)  # warm-up: the polynomial fits are cached after the first call
    best = (math.inf, math.inf)
    for _ in range(repeats):
        auto.zero_grad()
        best = min(best, timed(lambda: module_step(auto, x, Y), device))
    fwd, bwd = auto.log[-2], auto.log[-1]
    out["auto"] = {"cpu_s": best[0], "wall_s": best[1], "forward_path": fwd["path"], "backward_path": bwd["path"], "degree": bwd["degree"],
                   "k": bwd["k"], "R": fwd["R"], "forward_bound": fwd["bound"], "backward_bound": bwd["bound"]}
    exact, _, _ = make_layer(L, "exact", device)
    out["exact"] = dict(zip(("cpu_s", "wall_s"), timed(lambda: module_step(exact, x, Y), device), strict=True))
    grads_exact = {k: getattr(exact, k).grad.clone() for k in exact.param_names}
    sd, _, _ = make_layer(L, "exact", device)
    out["sdpa"] = dict(zip(("cpu_s", "wall_s"), timed(lambda: sdpa_step(sd, x, Y), device), strict=True))
    out["grad_err_auto_vs_exact"] = max(float((getattr(auto, k).grad - grads_exact[k]).abs().max()) for k in grads_exact)
    clock = "wall_s" if device.startswith("cuda") else "cpu_s"
    out["clock"] = clock
    out["speedup_vs_exact"] = out["exact"][clock] / out["auto"][clock]
    out["speedup_vs_sdpa"] = out["sdpa"][clock] / out["auto"][clock]
    return out


def trajectory(L: int, steps: int, device: str, lr: float = 0.5) -> dict:
    runs = {}
    checks = []
    for mode in ("auto", "exact"):
        m, x, Y = make_layer(L, mode, device)
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            O = m(x)
            loss = 0.5 * ((O.double() - Y.double()) ** 2).mean()
            loss.backward()
            losses.append(loss.item())
            if mode == "auto":
                fwd = m.log[-2]
                with torch.no_grad():  # the exact loss at the same parameters: dense float64 attention, the check's own reference
                    Q, K, V = (t.double() for t in m._projections(x, x))
                    Oe = torch.softmax(m.beta * Q @ K.mT, dim=-1) @ V
                    le = float(0.5 * ((Oe.transpose(1, 2).reshape(x.shape) - Y.double()) ** 2).mean())
                b = fwd["bound"] if fwd["path"] == "approx" else 0.0
                bound = float((O.double() - Y.double()).abs().mean()) * b + 0.5 * b * b
                slack = 1e-12 * abs(le)  # the float64 reference's own rounding
                checks.append({"path": fwd["path"], "backward_path": m.log[-1]["path"], "gap": abs(losses[-1] - le), "bound": bound,
                               "within": abs(losses[-1] - le) <= bound + slack})
            opt.step()
        runs[mode] = losses
    gap = max(abs(a - b) for a, b in zip(runs["auto"], runs["exact"], strict=True))
    return {"L": L, "steps": steps, "fast_forward_share": sum(c["path"] == "approx" for c in checks) / steps,
            "fast_backward_share": sum(c["backward_path"] == "approx" for c in checks) / steps,
            "all_within_certified_bound": all(c["within"] for c in checks),
            "worst_gap_over_bound": max((c["gap"] / c["bound"] if c["bound"] > 0 else (0.0 if c["gap"] == 0 else math.inf)) for c in checks),
            "loss_auto_first_last": (runs["auto"][0], runs["auto"][-1]), "loss_exact_first_last": (runs["exact"][0], runs["exact"][-1]),
            "max_trajectory_gap": gap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=15, help="log2 of the sequence length of the timed step (default 15)")
    ap.add_argument("--traj-L", type=int, default=12, help="log2 of L for the 100-step trajectory (default 12)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the auto step (exact and SDPA: one run each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-trajectory", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here (unmeasured)")
        sys.exit(2)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"device {a.device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()}")
    res = {"step": step_timing(2**a.L, a.device, a.repeats)}
    s = res["step"]
    clk = s["clock"]
    print(f"L=2^{a.L} n=d=4 H=1 r=2 R={s['auto']['R']:.3g} eps=1e-3: auto {s['auto'][clk]:.3g} s ({s['auto']['forward_path']}/{s['auto']['backward_path']}, "
          f"degree {s['auto']['degree']}, k {s['auto']['k']}), exact blocked {s['exact'][clk]:.3g} s, SDPA autograd {s['sdpa'][clk]:.3g} s [{clk}]")
    print(f"  speed-up vs exact blocked {s['speedup_vs_exact']:.1f}x, vs SDPA autograd {s['speedup_vs_sdpa']:.1f}x (target >= 20x: "
          f"{'met' if min(s['speedup_vs_exact'], s['speedup_vs_sdpa']) >= 20 else 'NOT met'}); max |grad auto - grad exact| "
          f"{s['grad_err_auto_vs_exact']:.2e} (certified backward bound {s['auto']['backward_bound']:.2e})")
    if a.json:  # the step's numbers first: the trajectory may be interrupted
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2, default=str)
    if not a.skip_trajectory:
        t = trajectory(2**a.traj_L, a.steps, a.device)
        res["trajectory"] = t
        print(f"trajectory L=2^{a.traj_L}, {a.steps} steps: fast path forward {t['fast_forward_share']:.0%}, backward {t['fast_backward_share']:.0%}; "
              f"every auto loss within its certified bound of the exact loss at the same parameters: {t['all_within_certified_bound']} "
              f"(worst gap / bound {t['worst_gap_over_bound']:.2g}); loss auto {t['loss_auto_first_last'][0]:.5f} -> {t['loss_auto_first_last'][1]:.5f}, "
              f"exact {t['loss_exact_first_last'][0]:.5f} -> {t['loss_exact_first_last'][1]:.5f}; largest gap between the trajectories {t['max_trajectory_gap']:.2e}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
