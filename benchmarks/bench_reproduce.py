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
    python benchmarks/bench_reproduce.py --compare BEFORE/results.json AFTER/results.json
                                                             # every claim's and control's verdict and margins, two reproduce runs
    python benchmarks/bench_reproduce.py --default-malloc    # glibc's own malloc thresholds (the system time before issue 22)
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


def _margin_numbers(text: str) -> tuple[float, str, float] | None:
    """"1.2e-15 <= 1e-10 (slack +100%)" or "... (exact)" -> (1.2e-15, "<=", 1e-10)."""
    import re

    m = re.match(r"\s*(\S+) (<=|>=) (\S+)", str(text))
    if not m:
        return None
    try:
        return float(m.group(1)), m.group(2), float(m.group(3))
    except ValueError:
        return None


def _work(payload: dict) -> float:
    return payload.get("work_seconds") or sum(c.get("seconds") or 0 for part in ("claims", "controls") for c in payload.get(part, []))


def compare(before: str, after: str, rel: float = 0.05) -> int:
    """Print every claim and control whose verdict (or caught) differs between two results.json, and every margin whose
    measured value moved by more than ``rel`` (relative); returns the number of verdict differences."""
    a, b = (json.load(open(p)) for p in (before, after))
    n_verdicts = 0
    claims_a, claims_b = ({c["id"]: c for c in x["claims"]} for x in (a, b))
    for cid in sorted(set(claims_a) | set(claims_b)):
        ca, cb = claims_a.get(cid), claims_b.get(cid)
        if ca is None or cb is None:
            print(f"claim {cid}: only in {'after' if ca is None else 'before'}")
            continue
        if ca["verdict"] != cb["verdict"]:
            n_verdicts += 1
            print(f"claim {cid}: verdict {ca['verdict']} -> {cb['verdict']}")
        ma, mb = ca.get("margins") or {}, cb.get("margins") or {}
        for k in sorted(set(ma) | set(mb)):
            xa, xb = _margin_numbers(ma.get(k, "")), _margin_numbers(mb.get(k, ""))
            if xa is None or xb is None or xa[1:] != xb[1:]:
                if ma.get(k) != mb.get(k):
                    print(f"claim {cid}: margin {k}: {ma.get(k)} -> {mb.get(k)}")
                continue
            va, vb = xa[0], xb[0]
            if abs(va - vb) > rel * max(abs(va), abs(vb), 1e-300):
                print(f"claim {cid}: margin {k} measured {va:.3g} -> {vb:.3g} (threshold {xa[2]:.3g}; {ma[k]} -> {mb[k]})")
    ctl_a, ctl_b = ({(c["id"], c["control"]): c for c in x["controls"]} for x in (a, b))
    for key in sorted(set(ctl_a) | set(ctl_b)):
        ca, cb = ctl_a.get(key), ctl_b.get(key)
        if ca is None or cb is None:
            print(f"control {key[0]}/{key[1]}: only in {'after' if ca is None else 'before'}")
            continue
        if (ca["verdict"], ca["caught"]) != (cb["verdict"], cb["caught"]):
            n_verdicts += 1
            print(f"control {key[0]}/{key[1]}: {ca['verdict']} (caught {ca['caught']}) -> {cb['verdict']} (caught {cb['caught']})")
    print(f"{len(claims_b)} claims, {len(ctl_b)} controls compared; {n_verdicts} verdict difference(s); "
          f"compute behind the reports (stored points' seconds summed): {_work(a):.0f} s -> {_work(b):.0f} s")
    return n_verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--claim", action="append", help="claim id (repeatable; default: every claim reproduce --quick runs)")
    ap.add_argument("--full", action="store_true", help="paper-scale checks instead of the quick ones")
    ap.add_argument("--no-controls", action="store_true", help="claims only")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc malloc's thresholds as they are (what reproduce ran "
                    "with before issue 22: compare the sys s and faults columns)")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two reproduce results.json instead of timing")
    args = ap.parse_args()
    if args.compare:
        raise SystemExit(1 if compare(*args.compare) else 0)
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
