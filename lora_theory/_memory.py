"""Peak host memory of a snippet, measured in a fresh subprocess (ru_maxrss high-water mark).

torch's CPU allocator is invisible to ``tracemalloc``, so peak memory on CPU is measured as
the rise of the process's resident-set high-water mark over a baseline taken after ``setup``
ran. On CUDA, ``torch.cuda.max_memory_allocated`` is exact and used instead.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

__all__ = ["peak_memory_bytes"]

_TEMPLATE = """
import json, resource, sys, time, torch
torch.set_num_threads({threads})
{setup}
if {cuda}:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
{run}
if {cuda}:
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({{"peak_bytes": peak, "seconds": time.perf_counter() - t0}}))
"""


def peak_memory_bytes(setup: str, run: str, *, cuda: bool = False, threads: int = 2, timeout: float = 600) -> dict[str, float]:
    """Run ``setup`` then ``run`` in a new Python; return the peak memory ``run`` added and its time.

    Returns:
        ``{"peak_bytes": int, "seconds": float}``. On CPU this is the rise of ru_maxrss, an
        upper bound on what ``run`` allocated beyond the baseline (it includes allocator slack).
    """
    code = _TEMPLATE.format(setup=textwrap.dedent(setup), run=textwrap.dedent(run), cuda=cuda, threads=threads)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
