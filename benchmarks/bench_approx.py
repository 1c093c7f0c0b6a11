"""Benchmark: the polynomial method (approx_gradients) vs the blocked exact gradient, SDPA and FAVOR+.

Claims ``limits.thm3.1`` / ``limits.thmA.1``; issue 15 targets. All in one run (d = 4, full
adaptation "qkv", R <= 2 by construction: bound 2 with beta = 1/d, eps = 1e-3, float64 unless
--dtype). Every time is taken twice: this process's CPU time (``cpu``: robust to other work on
shared cores; the ratios and exponents use it) and wall time (``wall``).

1. approx vs exact at L = 2^15 and 2^16: time ratio (targets >= 50x and >= 100x), every gradient's
   relative error (target <= 1e-2), measured error / certified bound;
2. fitted log-log time exponent of approx over L = 2^11 .. 2^16, and of exact over the L it ran at;
3. regression line: exact vs torch SDPA forward + backward (autograd) at L = 2^13 (exact must not be
   slower), and the peak memory of exact and approx at L = 2^16 (fresh processes);
4. at equal feature count k, the polynomial's gradient error vs Performer FAVOR+ (median over seeds);
5. bound tightness over the bounded regime: measured / certified bound for every gradient of
   L = 2^10 .. 2^13 x qv/qkv x self/cross x 2 seeds and part 1 (median and worst; soundness: worst <= 1);
6. with --profile: where approx's CPU time goes at L = 2^15 (cProfile on the process CPU clock);
7. with --batched (runs only this part): batched multi-head instances (issues 13, 15): per-head time
   of ONE approx_gradients call on 12 heads (batch shape (1, 12)) vs a Python loop over the 12 heads
   vs one head alone (each head at its own degree), L = 2^12 .. 2^14 at d = 4 and L = 2^12, 2^13 at d = 8 (--quick: L = 2^12
   only), both clocks, plus the batched result's max error / certified bound vs exact_gradients;
   then the same heads causal (L = 2^13, d = 4) vs unmasked and vs the exact causal gradient;
8. with --rectangular (runs only this part): one head with input width n > head dimension d = 4
   (n = 4, 8, 16, 32, L = 2^12): the moment form works on the n key-input columns, so its cost
   grows like n^2 (c = 1 + n + n(n + 1)/2 moment columns), against the exact gradient.

Usage:
    python benchmarks/bench_approx.py [--quick] [--profile] [--threads 1] [--json out.json]
    python benchmarks/bench_approx.py --device cuda      # L = 2^17 in part 1, synchronized wall time
    python benchmarks/bench_approx.py --batched [--quick] [--heads 12]   # part 7 only
    python benchmarks/bench_approx.py --rectangular                      # part 8 only
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

import lora_theory as lt
from lora_theory._memory import peak_memory_bytes
from lora_theory.limits.approx import approx_gradients
from lora_theory.limits.random_features import random_feature_gradients


def timed(fn, repeats: int, device: str, warmup: bool = True) -> dict:
    """min over ``repeats`` of both clocks: {"cpu": process CPU seconds, "wall": seconds}; CUDA synchronized."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if warmup:
        fn()
        sync()
    cpu, wall = math.inf, math.inf
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        sync()
        cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - w0)
    return {"cpu": cpu, "wall": wall}


def instance(L: int, args, adapt: str = "qkv", attention: str = "self", seed: int = 0) -> lt.AttentionLoRAInstance:
    # bound 2 with beta = 1/d keeps the score range R below 2 (reported)
    return lt.make_instance(L, args.d, 2, adapt=adapt, attention=attention, bound=2.0, beta=1.0 / args.d, seed=seed,
                            dtype=getattr(torch, args.dtype), device=args.device)


def ratios_to_bound(g, ex, info) -> list[float]:
    return [float((g[k].double() - ex[k].double()).abs().max()) / info.error_bound[k] for k in ex]


def heads_instance(L: int, d: int, heads: int, args) -> lt.AttentionLoRAInstance:
    """(1, heads) batched instance: head h is ``make_instance(L, d, 2, seed=h)`` (bound 2, beta 1/d as in part 1), stacked."""
    parts = [lt.make_instance(L, d, 2, adapt="qkv", bound=2.0, beta=1.0 / d, seed=h, dtype=getattr(torch, args.dtype), device=args.device)
             for h in range(heads)]

    def stack(get):
        return torch.stack([get(p) for p in parts])[None]  # (1, heads, a, b)

    X = stack(lambda p: p.Xq)
    return lt.AttentionLoRAInstance(X, X, X, stack(lambda p: p.Wq), stack(lambda p: p.Wk), stack(lambda p: p.Wv),
                                    {mu: stack(lambda p, mu=mu: p.A[mu]) for mu in "qkv"}, {mu: stack(lambda p, mu=mu: p.B[mu]) for mu in "qkv"},
                                    parts[0].alpha, 2, parts[0].beta, stack(lambda p: p.Y), "self")


def batched_part(args) -> list[dict]:
    """Part 7: per-head seconds of one batched call vs a Python loop over the heads vs one head alone.

    Every call picks its own polynomial: the batched call groups the heads by the degree each one's
    range needs (``info.element_degree``), the loop and the single head run each head at its own
    degree, so the ratio batched / loop measures the batching alone. "same degree" also times the
    loop with every head at the largest degree (what one polynomial for the whole batch would cost).
    """
    H = args.heads
    cases = [(1 << 12, 4)] if args.quick else [(1 << 12, 4), (1 << 13, 4), (1 << 14, 4), (1 << 12, 8), (1 << 13, 8)]
    rows = []
    print(f"[7] batched multi-head: {H} heads (batch shape (1, {H})), eps = {args.eps}; per-head ms, min of 2 runs after a warm-up")
    for L, d in cases:
        inst = heads_instance(L, d, H, args)
        heads = [inst.element(0, h) for h in range(H)]
        g, info = approx_gradients(inst, eps=args.eps)
        tb = timed(lambda inst=inst: approx_gradients(inst, eps=args.eps), 2, args.device)
        tl = timed(lambda heads=heads: [approx_gradients(e, eps=args.eps) for e in heads], 2, args.device)
        t1 = timed(lambda heads=heads: approx_gradients(heads[0], eps=args.eps), 2, args.device)
        same = {"eps": args.eps, "R": info.R, "degree": info.degree}
        ts = timed(lambda heads=heads, same=same: [approx_gradients(e, **same) for e in heads], 1, args.device, warmup=False)
        ex = lt.exact_gradients(inst.to(dtype=torch.float64))
        rb = max(ratios_to_bound(g, ex, info))
        degrees = sorted(int(x) for x in info.element_degree.ravel())
        row = {"L": L, "d": d, "heads": H, "degrees": degrees, "k_max": info.rank, "R_max": info.R,
               "batched_per_head": {c: tb[c] / H for c in tb}, "loop_per_head": {c: tl[c] / H for c in tl}, "one_head_0": t1,
               "loop_same_degree_per_head": {c: ts[c] / H for c in ts}, "batched_over_loop": {c: tb[c] / tl[c] for c in tb},
               "err_over_bound": rb}
        rows.append(row)
        print(f"    L={L:>6} d={d} degrees {degrees[0]}..{degrees[-1]} (k <= {info.rank}): per head batched {1e3 * tb['cpu'] / H:.1f} ms cpu / "
              f"{1e3 * tb['wall'] / H:.1f} wall, loop {1e3 * tl['cpu'] / H:.1f} / {1e3 * tl['wall'] / H:.1f}, one head (head 0) "
              f"{1e3 * t1['cpu']:.1f} / {1e3 * t1['wall']:.1f}; batched / loop = {tb['cpu'] / tl['cpu']:.2f} cpu, {tb['wall'] / tl['wall']:.2f} wall; "
              f"loop at the largest degree {1e3 * ts['cpu'] / H:.1f} ms cpu per head; error / bound {rb:.1e}")
    # causal: the same heads with a causal mask (prefix moments + masked diagonal blocks) vs unmasked, and vs exact
    L, d = cases[min(1, len(cases) - 1)]
    inst = heads_instance(L, d, H, args)
    causal = inst.replace(causal=True)
    g, info = approx_gradients(causal, eps=args.eps)
    tc = timed(lambda: approx_gradients(causal, eps=args.eps), 2, args.device)
    tn = timed(lambda: approx_gradients(inst, eps=args.eps), 2, args.device)
    c0 = time.process_time()
    ex = lt.exact_gradients(causal.to(dtype=torch.float64))
    te = time.process_time() - c0
    rb = max(ratios_to_bound(g, ex, info))
    rows.append({"L": L, "d": d, "heads": H, "causal": True, "batched_per_head": {c: tc[c] / H for c in tc},
                 "unmasked_per_head": {c: tn[c] / H for c in tn}, "exact_causal_per_head_cpu": te / H, "err_over_bound": rb})
    print(f"    causal L={L} d={d}: per head batched {1e3 * tc['cpu'] / H:.1f} ms cpu ({tc['cpu'] / tn['cpu']:.2f}x the unmasked "
          f"{1e3 * tn['cpu'] / H:.1f}), exact causal {1e3 * te / H:.0f} ms cpu per head ({te / tc['cpu']:.0f}x); error / bound {rb:.1e}")
    return rows


def rectangular_part(args) -> list[dict]:
    """Part 8: one head, X (L, n) with n > d: approx vs exact CPU time as n grows (R <= 2 by scaling W_Q, W_K)."""
    L, d, r = 1 << 12, 4, 2
    rows = []
    print(f"[8] rectangular heads: L = {L}, d = {d}, n = 4..32 (self attention, qkv), eps = {args.eps}")
    for n in (4, 8, 16, 32):
        gen = torch.Generator().manual_seed(0)

        def rnd(*shape, std=1.0, gen=gen):
            return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

        X = rnd(L, n)
        W = {mu: rnd(n, d, std=n**-0.5) for mu in "qkv"}
        A = {mu: rnd(r, d, std=0.5) for mu in "qkv"}
        B = {mu: rnd(n, r, std=0.5) for mu in "qkv"}
        inst = lt.AttentionLoRAInstance(X, X, X, W["q"], W["k"], W["v"], A, B, 2.0, r, 1.0 / d, rnd(L, d), "self")
        Q, K, _ = inst.projections()
        s = 2.0 / max(float(Q.abs().max()), float(K.abs().max()))  # ||Q||_max = ||K||_max <= 2, as in part 1
        inst = inst.replace(Wq=W["q"] * s, Wk=W["k"] * s, B={mu: B[mu] * s if mu in "qk" else B[mu] for mu in "qkv"})
        g, info = approx_gradients(inst, eps=args.eps)
        ta = timed(lambda inst=inst: approx_gradients(inst, eps=args.eps), 2, args.device)
        te = timed(lambda inst=inst: lt.exact_gradients(inst), 1, args.device, warmup=False)
        rb = max(ratios_to_bound(g, lt.exact_gradients(inst), info))
        c = 1 + n + n * (n + 1) // 2
        rows.append({"L": L, "d": d, "n": n, "degree": info.degree, "k": info.rank, "c": c, "approx": ta, "exact": te, "err_over_bound": rb})
        print(f"    n={n:>3}: degree {info.degree} k={info.rank} moment columns c={c}: approx {1e3 * ta['cpu']:.1f} ms cpu, "
              f"exact {1e3 * te['cpu']:.0f} ms cpu ({te['cpu'] / ta['cpu']:.1f}x); error / bound {rb:.1e}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="L = 2^12, 2^13 in part 1, 2^11..2^14 in part 2, no memory probes")
    ap.add_argument("--profile", action="store_true", help="part 6: where approx's CPU time goes at L = 2^15")
    ap.add_argument("--batched", action="store_true", help="part 7 only: batched multi-head instances, per-head speed")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--rectangular", action="store_true", help="part 8 only: n > d, the n^2 cost of the moment form")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    main_clock = "wall" if cuda else "cpu"
    out: dict = {"args": vars(args), "device_name": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}
    print(f"device {out['device_name']}, torch {torch.__version__}, {args.threads} thread(s); ratios and exponents on the {main_clock} clock")
    tight: list[float] = []
    if args.batched or args.rectangular:
        out["part7" if args.batched else "part8"] = batched_part(args) if args.batched else rectangular_part(args)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2, default=float)
        return

    # 1. speed, accuracy and bound at the target lengths
    Ls1 = [1 << 17] if cuda else ([1 << 12, 1 << 13] if args.quick else [1 << 15, 1 << 16])
    out["part1"] = []
    for L in Ls1:
        inst = instance(L, args)
        g, info = approx_gradients(inst, eps=args.eps)
        ta = timed(lambda inst=inst: approx_gradients(inst, eps=args.eps), 3, args.device)
        c0, w0 = time.process_time(), time.perf_counter()
        ex = lt.exact_gradients(inst.to(dtype=torch.float64))
        if cuda:
            torch.cuda.synchronize()
        te = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0}
        errs = {k: lt.max_rel_error(g[k], ex[k]) for k in ex}
        rb = ratios_to_bound(g, ex, info)
        tight += rb
        row = {"L": L, "R_bound": info.R, "degree": info.degree, "k": info.rank, "approx": ta, "exact": te,
               "speedup_cpu": te["cpu"] / ta["cpu"], "speedup_wall": te["wall"] / ta["wall"], "rel_err": errs, "err_over_bound": rb}
        out["part1"].append(row)
        target = {1 << 15: 50, 1 << 16: 100}.get(L)
        verdict = "" if target is None else f" (target >= {target}x: {'met' if row[f'speedup_{main_clock}'] >= target else 'MISSED'})"
        print(f"[1] L={L} d={args.d} {args.dtype} R<={info.R:.2f} degree={info.degree} k={info.rank}: approx {ta['cpu']:.3f} s cpu / {ta['wall']:.3f} s wall, "
              f"exact {te['cpu']:.2f} s cpu / {te['wall']:.2f} s wall: {row['speedup_cpu']:.0f}x cpu, {row['speedup_wall']:.0f}x wall{verdict}")
        print(f"    max rel err {max(errs.values()):.1e} (target <= 1e-2: {'met' if max(errs.values()) <= 1e-2 else 'MISSED'}); "
              f"error / certified bound: median {statistics.median(rb):.1e}, worst {max(rb):.1e}")

    # 2. time exponents
    Ls = [1 << j for j in (range(11, 15) if args.quick else range(11, 17))]
    ta_L, te_L = [], []
    for L in Ls:
        inst = instance(L, args)
        ta_L.append(timed(lambda inst=inst: approx_gradients(inst, eps=args.eps), 3, args.device)[main_clock])
        te_L.append(timed(lambda inst=inst: lt.exact_gradients(inst), 1, args.device, warmup=L < (1 << 13))[main_clock] if L <= (1 << 14) else math.nan)
    for row in out["part1"]:  # the part-1 exact runs extend the exact fit
        if row["L"] in Ls:
            te_L[Ls.index(row["L"])] = row["exact"][main_clock]
    sa = float(np.polyfit(np.log(Ls), np.log(ta_L), 1)[0])
    ok = [i for i, t in enumerate(te_L) if math.isfinite(t)]
    se = float(np.polyfit(np.log([Ls[i] for i in ok]), np.log([te_L[i] for i in ok]), 1)[0])
    out["part2"] = {"L": Ls, "approx": ta_L, "exact": te_L, "approx_exponent": sa, "exact_exponent": se}
    print(f"[2] {main_clock}-time exponent over L = 2^{Ls[0].bit_length() - 1}..2^{Ls[-1].bit_length() - 1}: approx {sa:.2f}, exact {se:.2f}")
    for L, a, e in zip(Ls, ta_L, te_L, strict=True):
        print(f"    L={L:>6}: approx {a:.4f} s   exact {e:.3f} s   ({e / a:.0f}x)")

    # 3. regression line: exact vs SDPA forward + backward at 2^13, and peak memory at 2^16
    L = 1 << 13
    inst = instance(L, args)
    t_ex = timed(lambda: lt.exact_gradients(inst), 2, args.device)
    t_sd = timed(lambda: lt.autograd_gradients(inst, method="sdpa"), 2, args.device)
    out["part3"] = {"L": L, "exact": t_ex, "sdpa": t_sd, "exact_over_sdpa": t_ex[main_clock] / t_sd[main_clock]}
    print(f"[3] L={L}: exact {t_ex['cpu']:.2f} s cpu / {t_ex['wall']:.2f} s wall, SDPA fwd+bwd {t_sd['cpu']:.2f} / {t_sd['wall']:.2f}: "
          f"exact = {out['part3']['exact_over_sdpa']:.2f}x SDPA (regression line: <= 1: {'held' if out['part3']['exact_over_sdpa'] <= 1 else 'BROKEN'})")
    if not args.quick:
        setup = (f"import lora_theory as lt\ninst = lt.make_instance({1 << 16}, {args.d}, 2, adapt='qkv', bound=2.0, beta={1.0 / args.d}, "
                 f"dtype=torch.{args.dtype}, device={args.device!r})")
        mem = {m: peak_memory_bytes(setup, call, cuda=cuda, threads=args.threads)["peak_bytes"]
               for m, call in (("exact", "lt.exact_gradients(inst)"), ("approx", f"lt.approx_gradients(inst, eps={args.eps})"))}
        plan = lt.approx_plan(lt.make_instance(1 << 16, args.d, 2, adapt="qkv", bound=2.0, beta=1.0 / args.d), args.eps)
        out["part3"]["peak_bytes_L65536"] = mem
        print(f"    peak memory at L = 2^16: exact {mem['exact'] / 2**20:.0f} MiB, approx {mem['approx'] / 2**20:.0f} MiB "
              f"(plan: approx {plan.approx_bytes / 2**20:.0f} MiB, exact {plan.exact_bytes / 2**20:.0f} MiB; one L x L float64 matrix: 32768 MiB)")

    # 4. equal feature count: polynomial vs random features
    rows = []
    for L in (1024, 4096):
        inst = instance(L, args)
        ex = lt.exact_gradients(inst)
        g, info = approx_gradients(inst, eps=args.eps)
        poly = max(lt.max_rel_error(g[k], ex[k]) for k in ex)
        rf = statistics.median(max(lt.max_rel_error(gr[k], ex[k]) for k in ex)
                               for gr, _ in (random_feature_gradients(inst, info.rank, seed=s) for s in range(5)))
        rows.append({"L": L, "k": info.rank, "poly_err": poly, "rf_err_median5": rf, "ratio": rf / poly})
        print(f"[4] L={L} k={info.rank}: polynomial err {poly:.1e}, FAVOR+ err (median of 5 seeds) {rf:.1e}: {rf / poly:.0f}x")
    out["part4"] = rows

    # 5. bound tightness over the bounded regime
    for L in (1 << 10, 1 << 11, 1 << 12, 1 << 13):
        for adapt in ("qv", "qkv"):
            for attention in ("self", "cross"):
                for seed in (0, 1):
                    inst = instance(L, args, adapt, attention, seed)
                    g, info = approx_gradients(inst, eps=args.eps)
                    tight += ratios_to_bound(g, lt.exact_gradients(inst.to(dtype=torch.float64)), info)
    out["part5"] = {"n": len(tight), "median": statistics.median(tight), "worst": max(tight), "min": min(tight)}
    print(f"[5] measured error / certified bound over {len(tight)} gradients (L = 2^10..2^13 x qv/qkv x self/cross x 2 seeds, and part 1): "
          f"median {out['part5']['median']:.2e} (target >= 1e-2: {'met' if out['part5']['median'] >= 1e-2 else 'MISSED'}), "
          f"worst {out['part5']['worst']:.2e} (sound: <= 1), smallest {out['part5']['min']:.1e}")

    # 6. where the time goes
    if args.profile:
        import cProfile
        import pstats

        inst = instance(1 << 15, args)
        approx_gradients(inst, eps=args.eps)
        prof = cProfile.Profile(time.process_time)
        prof.enable()
        for _ in range(3):
            approx_gradients(inst, eps=args.eps)
        prof.disable()
        st = pstats.Stats(prof)
        total = sum(v[3] for k, v in st.stats.items() if k[2] == "approx_gradients")
        parts = {"key features (FeatureMap)": ("features.py", "__call__"), "all moments: S and the query GEMMs": ("lowrank.py", "moments"),
                 "key pass (features + S)": ("lowrank.py", "__init__"), "gradient per block": ("lowrank.py", "block_gradients"),
                 "error bound per block": ("approx.py", "__call__"), "polynomial fit": ("polynomial.py", "exp_polynomial"),
                 "projections (X W)": ("instance.py", "projections")}
        out["part6"] = {}
        print(f"[6] CPU time of approx_gradients at L = 2^15 (cProfile, process clock, 3 calls, {total / 3:.3f} s each):")
        for name, (file, fn) in parts.items():
            cum = sum(v[3] for k, v in st.stats.items() if k[0].endswith(file) and k[2] == fn)
            out["part6"][name] = cum / total
            print(f"    {name:<38} {100 * cum / total:5.1f}%")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
