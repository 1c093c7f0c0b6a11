"""The asymptotic claims' verdicts with and without two busy background processes (issue 20: verdicts must not change under load).

    python benchmarks/limits_verdicts_under_load.py [--full] [--out results.json] [claim ...]

Runs each claim (default ``limits.thm3.1``, ``limits.thmA.1``, ``limits.threshold``) once on the
machine as it is, then again while two ``yes > /dev/null`` processes started by this script keep two
cores busy (they are stopped by their process ids afterwards, also on error), and prints both
verdicts, the margins that involve timing, and the load average at each run. Exit status 1 when a
verdict differs between the two runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from lora_theory.claims import run_check

TIMING = ("cost_form_ratio", "exponent_of_L_at_fixed_k_min", "exponent_of_L_at_fixed_k_max")


def _run(ids, quick: bool) -> dict:
    out = {}
    for cid in ids:
        c0, t0 = time.process_time(), time.perf_counter()
        row = run_check(cid, quick=quick)
        margins = row.get("margins") or {}
        out[cid] = {"verdict": row["verdict"], "load_average": os.getloadavg(), "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                    "timing_margins": {k: str(v) for k, v in margins.items() if k in TIMING}, "summary": row["summary"]}
        print(f"  {cid}: {row['verdict']} (load {out[cid]['load_average'][0]:.1f}; " + "; ".join(f"{k} {v}" for k, v in out[cid]["timing_margins"].items()) + ")",
              flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("claims", nargs="*", default=["limits.thm3.1", "limits.thmA.1", "limits.threshold"])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    print("as is:", flush=True)
    base = _run(a.claims, not a.full)
    busy = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(2)]
    try:
        time.sleep(2.0)
        print(f"with two busy processes (pids {[p.pid for p in busy]}):", flush=True)
        loaded = _run(a.claims, not a.full)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    same = all(base[c]["verdict"] == loaded[c]["verdict"] for c in a.claims)
    print("same verdicts:", same)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"as_is": base, "two_busy": loaded, "same": same}, fh, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
