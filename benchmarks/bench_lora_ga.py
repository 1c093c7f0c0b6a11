"""Benchmark: LoRA-GA initialization, randomized vs exact SVD, and model-level init vs PEFT.

Claim ``lora_ga.thm3.1``. In one run:

1. m = n = 4096, r = 8 (float32, CPU): ``lora_ga_init(svd="randomized")`` vs ``svd="exact"``:
   time ratio (target >= 5x faster) and the alignment residuals of both (target: differ by
   <= 1e-3). G has a decaying spectrum (sigma_i = exp(-i / 50)) as gradients do.
2. MiniLM, q and v of all 6 layers, r = 8, the same K batches: the toolkit's
   ``estimate_gradients`` + ``apply_lora_ga`` vs PEFT's ``preprocess_loraga`` + ``get_peft_model``
   (lora_ga): wall time and peak memory of each in a fresh process (target ratio <= 1.0).

Usage:
    python benchmarks/bench_lora_ga.py [--size 4096] [--batches 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lora_theory._memory import peak_memory_bytes
from lora_theory.lora_ga.init import alignment_report, lora_ga_init

MODEL_SETUP = """
import torch
from lora_theory.lora.pretrained import load_minilm, token_batches
from lora_theory.finetune.tasks import teacher_student_task
model = load_minilm()
task = teacher_student_task(model)
batches = token_batches({batches}, 8, 32)
for b in batches:
    task.loss(model, b)  # cache the teacher targets outside the measured region
"""

OURS = """
from lora_theory.lora_ga.model import apply_lora_ga, estimate_gradients
from lora_theory.lora.layer import add_lora
G = estimate_gradients(model, batches, task.loss, ["query", "value"])
add_lora(model, ["query", "value"], r=8, alpha=16, rslora=True, init="none")
apply_lora_ga(model, G, svd="randomized", compute_dtype=torch.float32)  # randomized SVD in float32, as PEFT
"""

PEFT = """
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.config import LoraGAConfig
from peft.tuners.lora.loraga import preprocess_loraga
cfg = LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=["query", "value"], init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())
def train_step():
    for b in batches:
        task.loss(model, b).backward()
preprocess_loraga(model, cfg, train_step)
peft_model = get_peft_model(model, cfg)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"args": vars(args)}

    m = n = args.size
    gen = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(m, 256, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(n, 256, generator=gen))
    S = torch.exp(-torch.arange(256, dtype=torch.float32) / 50)
    G = (U * S) @ V.T + 1e-4 * torch.randn(m, n, generator=gen)  # decaying spectrum plus a noise floor
    res = {}
    for svd in ("randomized", "exact"):
        lora_ga_init(G[:64, :64], 2, alpha=16.0, svd=svd, seed=0)  # warm-up of the kernels
        t0 = time.perf_counter()
        init = lora_ga_init(G, args.r, alpha=16.0, svd=svd, seed=0)
        dt = time.perf_counter() - t0
        rep = alignment_report(G, init.A, init.B, init.eta)
        res[svd] = {"seconds": dt, "rel_residual": rep.rel_residual}
    out["svd"] = res
    speed = res["exact"]["seconds"] / res["randomized"]["seconds"]
    diff = abs(res["exact"]["rel_residual"] - res["randomized"]["rel_residual"])
    print(f"[1] m = n = {m}, r = {args.r}, float32: randomized {res['randomized']['seconds']:.2f} s, exact {res['exact']['seconds']:.2f} s "
          f"({speed:.1f}x); residuals {res['randomized']['rel_residual']:.1e} vs {res['exact']['rel_residual']:.1e} (diff {diff:.1e})")

    if not args.skip_model:
        setup = MODEL_SETUP.format(batches=args.batches)
        runs = {"lora_theory": [], "peft": []}
        for _ in range(args.repeats):  # alternate, fresh process each: RSS peaks vary by tens of MiB run to run
            runs["lora_theory"].append(peak_memory_bytes(setup, OURS, threads=args.threads))
            runs["peft"].append(peak_memory_bytes(setup, PEFT, threads=args.threads))
        ours = {k: statistics.median(r[k] for r in runs["lora_theory"]) for k in ("seconds", "peak_bytes")}
        peft = {k: statistics.median(r[k] for r in runs["peft"]) for k in ("seconds", "peak_bytes")}
        out["model"] = {"lora_theory": ours, "peft": peft, "runs": runs}
        print(f"[2] MiniLM q,v r=8, {args.batches} batches of 8 x 32, median of {args.repeats} fresh processes each: lora_theory {ours['seconds']:.2f} s, {ours['peak_bytes'] / 2**20:.0f} MiB; "
              f"PEFT {peft['seconds']:.2f} s, {peft['peak_bytes'] / 2**20:.0f} MiB; ratios time {ours['seconds'] / peft['seconds']:.2f}, "
              f"memory {ours['peak_bytes'] / max(1, peft['peak_bytes']):.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
