"""Benchmark: CPU time of every claim check and every negative control of ``lora-theory reproduce`` (issue 22).

Runs each check (and each of its controls) in this process, one after the other, as ``reproduce``'s
sweep points do, and prints per item: user and system CPU seconds of this process (all its threads),
CPU seconds of its child processes (the memory probe of ``toolkit.grad_blocked``), wall seconds,
minor page faults and the verdict. System time is where process start-up, page faults and thread
hand-offs show; a loaded machine inflates wall time much more than CPU time, so compare CPU.

Usage:
    python benchmarks/bench_reproduce.py                     # every quick claim and control
    python benchmarks/bench_reproduce.py --claim limits.thm3.1 --claim toolkit.grad_blocked
    python benchmarks/bench_reproduce.py --no-controls --json times.json
    python benchmarks/bench_reproduce.py --full              # paper scale (long)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch


def _usage() -> tuple[float, float, float, int]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime, me.ru_stime, kids.ru_utime + kids.ru_stime, me.ru_minflt


def measure(claim: str, control: str | None, quick: bool) -> dict:
    """One check (under ``control``) with its CPU, child CPU, wall time and minor page faults."""
    from lora_theory.claims import run_check

    u0, s0, c0, f0 = _usage()
    t0 = time.perf_counter()
    row = run_check(claim, quick=quick, control=control)
    wall = time.perf_counter() - t0
    u1, s1, c1, f1 = _usage()
    return {"claim": claim, "control": control or "", "verdict": row["verdict"], "user_s": u1 - u0, "sys_s": s1 - s0,
            "children_s": c1 - c0, "wall_s": wall, "minor_faults": f1 - f0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--claim", action="append", help="claim id (repeatable; default: every claim reproduce --quick runs)")
    ap.add_argument("--full", action="store_true", help="paper-scale checks instead of the quick ones")
    ap.add_argument("--no-controls", action="store_true", help="claims only")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc malloc's thresholds as they are (what reproduce ran "
                    "with before issue 22: compare the sys s and faults columns)")
    args = ap.parse_args()
    from lora_theory._memory import reuse_freed_memory

    tuned = False if args.default_malloc else reuse_freed_memory()
    from lora_theory.claims import get_claim
    from lora_theory.report import select

    ids, _, _ = select(args.claim, [], experiments=False)
    print(f"{os.uname().nodename}: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; malloc thresholds {'raised' if tuned else 'default'}")
    print(f"{'claim':32s} {'control':28s} {'verdict':12s} {'user s':>7s} {'sys s':>6s} {'child s':>7s} {'cpu s':>7s} {'wall s':>7s} {'faults':>8s}")
    rows = []
    for cid in ids:
        items = [None] + ([] if args.no_controls else [c.name for c in get_claim(cid).controls])
        for ctl in items:
            r = measure(cid, ctl, not args.full)
            rows.append(r)
            print(f"{r['claim']:32s} {r['control']:28s} {r['verdict']:12s} {r['user_s']:7.1f} {r['sys_s']:6.1f} {r['children_s']:7.1f} "
                  f"{r['user_s'] + r['sys_s'] + r['children_s']:7.1f} {r['wall_s']:7.1f} {r['minor_faults']:8d}", flush=True)
    for label, keep in (("claims", lambda r: not r["control"]), ("controls", lambda r: bool(r["control"]))):
        part = [r for r in rows if keep(r)]
        if part:
            print(f"total {label}: {len(part)} checks, user {sum(r['user_s'] for r in part):.1f} s, sys {sum(r['sys_s'] for r in part):.1f} s, "
                  f"children {sum(r['children_s'] for r in part):.1f} s, wall {sum(r['wall_s'] for r in part):.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
