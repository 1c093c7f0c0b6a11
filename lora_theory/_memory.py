"""Peak memory of a piece of code: sampled resident set size on CPU, the allocator's peak on CUDA.

torch's CPU allocator is invisible to ``tracemalloc``, and the process's ru_maxrss high-water
mark hides any allocation smaller than what imports already touched. So on CPU a thread
samples the *current* RSS (``/proc/self/statm``) every ``interval`` seconds while the code
runs, and the peak is the largest sample minus the RSS just before. Large tensors come from
mmap and go back to the OS when freed, so the RSS tracks live tensors; a spike shorter than
the sampling interval can be missed, which the callers' sizes (>= milliseconds per block)
make immaterial. On CUDA, ``torch.cuda.max_memory_allocated`` is exact and used instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

__all__ = ["PeakMemory", "peak_memory_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the high-water mark (an upper bound)
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Context manager: ``with PeakMemory(cuda=False) as pm: ...``; then ``pm.peak_bytes``.

    The peak is measured relative to the memory in use when the block starts.
    """

    def __init__(self, *, cuda: bool = False, interval: float = 0.0005) -> None:
        self.cuda = cuda
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._max = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._max = max(self._max, _rss_bytes())
            self._stop.set()
            self._thread.join()
            self.peak_bytes = self._max - self._base


_TEMPLATE = """
import json, time, torch
from lora_theory._memory import PeakMemory
torch.set_num_threads({threads})
{setup}
with PeakMemory(cuda={cuda}) as pm:
    t0 = time.perf_counter()
{run}
    seconds = time.perf_counter() - t0
print(json.dumps({{"peak_bytes": pm.peak_bytes, "seconds": seconds}}))
"""


def peak_memory_bytes(setup: str, run: str, *, cuda: bool = False, threads: int = 2, timeout: float = 600) -> dict[str, float]:
    """Run ``setup`` then ``run`` in a new Python; return the peak memory ``run`` added and its time.

    Returns:
        ``{"peak_bytes": int, "seconds": float}`` (see :class:`PeakMemory` for what is measured).
    """
    code = _TEMPLATE.format(setup=textwrap.dedent(setup), run=textwrap.indent(textwrap.dedent(run), "    "), cuda=cuda, threads=threads)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
