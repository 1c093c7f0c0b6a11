"""Benchmark: blocked exact_gradients vs dense autograd_gradients (time and peak memory per L).

Claim ``limits.grad_blocked``. Each (method, L) runs in a fresh Python process: one warm-up
call, during which the peak memory is measured (sampled RSS on CPU, the allocator's peak on
CUDA; ``lora_theory._memory.PeakMemory``), then ``--repeats`` timed calls. Dense methods are skipped where one L x L matrix alone would
exceed ``--dense-max-gib``.

Usage:
    python benchmarks/bench_exact.py                       # L = 2^10 .. 2^14, plus 2^16 blocked
    python benchmarks/bench_exact.py --device cuda --Ls 10 11 12 13 14 15 16
    python benchmarks/bench_exact.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

SNIPPET = r"""
import json, statistics, time, torch
from lora_theory._memory import PeakMemory
torch.set_num_threads({threads})
import lora_theory as lt
dev = {device!r}
inst = lt.make_instance({L}, {d}, {r}, adapt={adapt!r}, dtype=getattr(torch, {dtype!r}), device=dev, seed=0)
cuda = dev.startswith("cuda")
sync = torch.cuda.synchronize if cuda else (lambda: None)
fn = {{"blocked": lambda: lt.exact_gradients(inst),
       "autograd_sdpa": lambda: lt.autograd_gradients(inst, method="sdpa"),
       "autograd_dense": lambda: lt.autograd_gradients(inst, method="dense")}}[{method!r}]
with PeakMemory(cuda=cuda) as pm:
    fn(); sync()
times = []
for _ in range({repeats}):
    t0 = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t0)
print(json.dumps({{"seconds": statistics.median(times), "peak_bytes": pm.peak_bytes}}))
"""


def run_one(method: str, L: int, args) -> dict:
    code = SNIPPET.format(threads=args.threads, device=args.device, L=L, d=args.d, r=args.r, adapt=args.adapt,
                          dtype=args.dtype, method=method, repeats=args.repeats)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=args.timeout)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--Ls", type=int, nargs="+", default=[10, 11, 12, 13, 14, 16], help="log2 of the lengths")
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--r", type=int, default=2)
    ap.add_argument("--adapt", default="qkv")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-max-gib", type=float, default=2.0, help="skip dense methods when one L x L matrix exceeds this")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args()
    itemsize = 4 if args.dtype == "float32" else 8
    rows = []
    print(f"d={args.d} r={args.r} adapt={args.adapt} {args.dtype} device={args.device} threads={args.threads}")
    print(f"{'L':>7} {'blocked s':>10} {'sdpa s':>9} {'dense s':>9} {'blk/sdpa':>9} {'blk/dense':>9} {'blk MiB':>9} {'sdpa MiB':>9} {'dense MiB':>9}")
    for lg in args.Ls:
        L = 1 << lg
        row = {"L": L}
        dense_ok = L * L * itemsize / 2**30 <= args.dense_max_gib
        for m in ("blocked", "autograd_sdpa", "autograd_dense"):
            row[m] = run_one(m, L, args) if (m == "blocked" or dense_ok) else {"skipped": f"one L x L matrix is {L * L * itemsize / 2**30:.0f} GiB"}
        rows.append(row)

        def g(m, k, scale=1.0, fmt="{:.3f}"):
            v = row[m].get(k)
            return fmt.format(v / scale) if v is not None else "-"

        def ratio(m):
            a, b = row["blocked"].get("seconds"), row[m].get("seconds")
            return f"{a / b:.2f}x" if a and b else "-"

        print(f"{L:>7} {g('blocked', 'seconds'):>10} {g('autograd_sdpa', 'seconds'):>9} {g('autograd_dense', 'seconds'):>9} "
              f"{ratio('autograd_sdpa'):>9} {ratio('autograd_dense'):>9} {g('blocked', 'peak_bytes', 2**20, '{:.0f}'):>9} "
              f"{g('autograd_sdpa', 'peak_bytes', 2**20, '{:.0f}'):>9} {g('autograd_dense', 'peak_bytes', 2**20, '{:.0f}'):>9}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
