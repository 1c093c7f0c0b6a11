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
import tempfile
import textwrap
import threading
import time

__all__ = ["PeakMemory", "available_bytes", "fmt_bytes", "peak_memory_bytes", "reuse_freed_memory"]

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
import importlib.util, sys
sys.path[:] = {path!r}  # the caller's import path without its working folder: a user's inspect.py or torch.py there is never imported
_spec = importlib.util.spec_from_file_location("lora_theory", {init!r}, submodule_search_locations=[{package!r}])
_mod = importlib.util.module_from_spec(_spec)
sys.modules["lora_theory"] = _mod  # this very copy of the toolkit, wherever it lives
_spec.loader.exec_module(_mod)
from lora_theory.sweeps.executors import die_with_parent
import os
die_with_parent({parent})  # a probe never outlives its caller (e.g. a sweep worker killed on timeout)
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


def _import_path() -> list[str]:
    """sys.path without the entries that mean "the current folder" ('' and the working directory itself)."""
    cwd = os.path.realpath(os.getcwd())
    return [p for p in sys.path if p and os.path.realpath(p) != cwd]


def peak_memory_bytes(setup: str, run: str, *, cuda: bool = False, threads: int = 2, timeout: float = 600) -> dict[str, float]:
    """Run ``setup`` then ``run`` in a new Python; return the peak memory ``run`` added and its time.

    The probe is isolated from the caller's folder: ``python -I`` (no PYTHONPATH, no user site,
    no script folder on the path) in an empty temporary working folder, with the caller's import
    path minus its working folder, and this copy of ``lora_theory`` loaded from its own files. So
    a user's ``inspect.py`` (or any module shadowing the standard library or torch) in the folder
    where ``lora-theory`` runs is never imported.

    Returns:
        ``{"peak_bytes": int, "seconds": float}`` (see :class:`PeakMemory` for what is measured).

    Raises:
        RuntimeError: the probe failed (its stderr tail is in the message).
    """
    package = os.path.dirname(os.path.abspath(__file__))
    code = _TEMPLATE.format(setup=textwrap.dedent(setup), run=textwrap.indent(textwrap.dedent(run), "    "), cuda=cuda, threads=threads,
                            path=_import_path(), init=os.path.join(package, "__init__.py"), package=package, parent=os.getpid())
    with tempfile.TemporaryDirectory(prefix="lora-theory-probe-") as cwd:
        res = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def available_bytes() -> int | None:
    """Memory this process can still allocate: ``MemAvailable`` (/proc/meminfo), capped by a cgroup
    limit (v2 ``memory.max`` - ``memory.current``, or v1); None where neither is known."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:  # not Linux
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * _PAGE
        except (ValueError, OSError, AttributeError):
            avail = None
    for limit_f, used_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_f) as fh:
                limit = fh.read().strip()
            with open(used_f) as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge v1 number: no limit
            room = max(0, int(limit) - used)
            avail = room if avail is None else min(avail, room)
        break
    return avail


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_TUNED = False


def reuse_freed_memory() -> bool:
    """Let this process (and the workers it forks) reuse the memory of freed tensors instead of returning it to the OS.

    glibc's malloc serves blocks above its mmap threshold (dynamic, 128 KiB to 32 MiB) with fresh
    ``mmap`` and unmaps them on free, and trims the heap top above its trim threshold; torch's CPU
    tensors come from malloc, so a check that allocates and frees (block, L) pieces thousands of
    times pays a page fault for every 4 KiB of every piece, again and again. Measured on
    ``lora_plus.ratio`` (quick): 5.8 million minor faults and 10.4 s of system time against 18 s
    of user time; ``limits.thm4.1_regime`` 5.0 million faults and 9.9 s (its blocks exceed 32 MiB);
    with the thresholds below 59 thousand faults and 0.1 s each (``benchmarks/bench_reproduce.py``).
    Sets, with ``mallopt``, the mmap threshold to 1 GiB (or, where glibc refuses that, its
    documented maximum of 32 MiB; larger blocks still come from mmap) and the trim threshold to
    2 GiB; the price is that the resident size stays near its peak. Only where glibc is the C library (Linux); elsewhere
    (and if ``mallopt`` refuses) nothing changes. Never called in the memory probe
    (:func:`peak_memory_bytes` starts a fresh interpreter), whose RSS must track live tensors.

    Returns True when the thresholds are set (now or by an earlier call).
    """
    global _TUNED
    if _TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt  # glibc only (musl has none): AttributeError otherwise
    except (OSError, AttributeError):
        return False
    # 1 GiB where this glibc accepts it (2.36 does), else its documented maximum, 32 MiB
    mmap_ok = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) or bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    _TUNED = mmap_ok and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))  # never trim below 2 GiB of free heap top
    return _TUNED
