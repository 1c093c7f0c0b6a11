"""Executors for sweeps: run ``fn(**params)`` for many points, hand results back unordered.

Three kinds, one interface (``run(fn, items, seed) -> iterator of (key, Outcome)`` and
``close(cancel)``):

- ``"inprocess"``: a plain loop in the calling process (debugging, pdb, profilers);
- ``"process"``: a local process pool of ``jobs`` workers (the default for ``jobs > 1``);
- ``"dask-local"`` (a Dask ``LocalCluster`` of ``jobs`` single-threaded worker processes on
  127.0.0.1) or ``"dask://HOST:PORT"`` (a running Dask scheduler): for clusters.

Workers only compute: every result comes back to the coordinating process, which alone writes
the store. At most a few points per worker are in flight, so a million-point sweep does not queue
a million futures, and stopping (Ctrl-C, SIGTERM) cancels the queue and terminates the workers
instead of waiting for it.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import random
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Self

from .._validate import InvalidArgumentError, check_int

__all__ = ["EXECUTORS", "DaskExecutor", "Executor", "InProcessExecutor", "Outcome", "ProcessPoolExecutor", "make_executor"]

EXECUTORS = ("process", "inprocess", "dask-local", "dask://HOST:PORT")


class Outcome(NamedTuple):
    """What one point produced: its metrics (JSON-safe) or a traceback, and its wall time in seconds."""

    metrics: dict[str, Any] | None
    error: str | None
    seconds: float


def _jsonable(v: Any) -> Any:
    """numpy / torch scalars and small arrays -> Python values; anything else must already be JSON."""
    if isinstance(v, bool | str | None.__class__):
        return v
    if isinstance(v, int | float):  # numpy float64 is a float subclass: normalise it to a plain float
        return int(v) if isinstance(v, int) else float(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):  # numpy scalars / arrays, torch tensors
        return _jsonable(v.tolist())
    raise TypeError(f"expected JSON-serializable metric values (numbers, strings, lists), got {type(v).__name__}: {v!r:.80}")


def point_seed(seed: int, key: str) -> int:
    """The RNG seed of one point: sha256(seed, point hash) -> 63 bits, independent of worker and order."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16) >> 1


def call_point(fn: Callable[..., Any], params: dict[str, Any], key: str, seed: int | None, restore: bool = False) -> Outcome:
    """Run one point (in whichever process or worker executes it) and never raise an Exception.

    With ``seed`` set, the global RNGs (``random``, numpy, torch) are seeded with
    :func:`point_seed` before the call, so a point's metrics do not depend on which worker ran it
    or what ran before it (determinism across executors and resumes); ``restore=True`` (the
    in-process executor) puts the caller's RNG states back afterwards (~0.2 ms, mostly numpy's).
    """
    t0 = time.perf_counter()
    saved = None
    try:
        if seed is not None:
            saved = _seed_all(point_seed(seed, key), restore)
        out = fn(**params)
        if not isinstance(out, dict):
            raise TypeError(f"{getattr(fn, '__name__', fn)!r}: expected a dict of metrics, got {type(out).__name__}")
        metrics = _jsonable(out)
        json.dumps(metrics, allow_nan=True)  # fail here (recorded with the point), not in the coordinator
        return Outcome(metrics, None, time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 (any failure of a point is recorded with it) (retried only on request); the sweep goes on
        return Outcome(None, traceback.format_exc(), time.perf_counter() - t0)
    finally:
        if saved is not None:
            _restore_all(saved)


def _seed_all(s: int, save: bool) -> tuple | None:
    import numpy as np
    import torch

    gen = torch.default_generator
    saved = (random.getstate(), np.random.get_state(), gen.get_state()) if save else None
    random.seed(s)
    np.random.seed(s & 0xFFFFFFFF)  # numpy's legacy seed takes 32 bits
    # the CPU generator only: torch.manual_seed also queues lazy seeding of every accelerator
    # backend (3 stack captures, ~1.5 ms a point); CPU is where determinism is promised
    gen.manual_seed(s)
    return saved


def _restore_all(saved: tuple) -> None:
    import numpy as np
    import torch

    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.default_generator.set_state(saved[2])


class Executor:
    """Base: ``run`` yields ``(key, Outcome)`` as points finish; ``close(cancel=True)`` stops at once."""

    name = "executor"

    def run(self, fn: Callable[..., Any], items: Iterable[tuple[str, dict[str, Any]]], seed: int | None) -> Iterator[tuple[str, Outcome]]:
        raise NotImplementedError

    def close(self, cancel: bool = False) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(cancel=exc_type is not None)


class InProcessExecutor(Executor):
    """Points one after another in this process (Ctrl-C interrupts the running point itself)."""

    name = "inprocess"

    def run(self, fn, items, seed):
        for key, params in items:
            yield key, call_point(fn, params, key, seed, restore=True)


def _pool_worker_init(jobs: int) -> None:
    """Worker start-up: leave Ctrl-C to the coordinator, and share the cores between workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops the pool; workers must not die mid-result
    try:
        import torch

        # cores // jobs threads each: 2 workers x 2 torch threads would oversubscribe 2 cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    except ImportError:  # torch is a dependency of the toolkit, not of the engine
        pass


class ProcessPoolExecutor(Executor):
    """A local pool of ``jobs`` worker processes (``fn`` must be picklable: a module-level function)."""

    name = "process"

    def __init__(self, jobs: int) -> None:
        self.jobs = check_int("jobs", jobs, low=1)
        self.pool = cf.ProcessPoolExecutor(max_workers=self.jobs, initializer=_pool_worker_init, initargs=(self.jobs,))
        self.inflight = 4 * self.jobs  # enough to keep every worker busy, few enough to stop at once

    def run(self, fn, items, seed):
        it = iter(items)
        pending: dict[cf.Future, str] = {}

        def fill() -> None:
            for key, params in it:
                pending[self.pool.submit(call_point, fn, params, key, seed)] = key
                if len(pending) >= self.inflight:
                    return

        fill()
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()
            fill()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            # the stdlib pool has no public "terminate" before Python 3.14: stop the running points
            # now instead of waiting for them (their results are lost by design; nothing was stored)
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class DaskExecutor(Executor):
    """Dask distributed: ``address=None`` starts a LocalCluster of ``jobs`` workers on 127.0.0.1."""

    name = "dask"

    def __init__(self, address: str | None, jobs: int = 1) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as e:  # optional dependency
            raise ImportError("the Dask executor needs dask[distributed]: pip install 'lora-theory[dask]'") from e
        self.jobs = check_int("jobs", jobs, low=1)
        self.cluster = None
        if address is None:
            self.cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(address, timeout=30)
            except OSError as e:
                raise InvalidArgumentError(f"executor: expected a reachable Dask scheduler at {address!r}, got {e}") from None
        threads = sum(self.client.nthreads().values()) or self.jobs
        self.inflight = max(8, 4 * threads)
        self._pending: list = []

    def run(self, fn, items, seed):
        from distributed import as_completed

        it = iter(items)
        keys: dict[str, str] = {}
        ac = as_completed()

        def submit_one() -> bool:
            for key, params in it:
                # pure=False: a point is re-run on request (retry_failed), never served from Dask's cache
                fut = self.client.submit(call_point, fn, params, key, seed, pure=False)
                keys[fut.key] = key
                self._pending.append(fut)
                ac.add(fut)
                return True
            return False

        for _ in range(self.inflight):
            if not submit_one():
                break
        for fut in ac:
            key = keys.pop(fut.key)
            out = fut.result()
            self._pending.remove(fut)
            fut.release()
            yield key, out
            submit_one()

    def close(self, cancel: bool = False) -> None:
        if cancel and self._pending:
            self.client.cancel(self._pending)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(executor: str, jobs: int = 1) -> Executor:
    """``"inprocess"``, ``"process"``, ``"dask-local"`` or ``"dask://HOST:PORT"`` -> an Executor."""
    jobs = check_int("jobs", jobs, low=1)
    if not isinstance(executor, str):
        raise InvalidArgumentError(f"executor: expected one of {EXECUTORS}, got {executor!r}")
    if executor == "inprocess":
        return InProcessExecutor()
    if executor == "process":
        return ProcessPoolExecutor(jobs)
    if executor == "dask-local":
        return DaskExecutor(None, jobs)
    if executor.startswith("dask://"):
        host, _, port = executor.removeprefix("dask://").rpartition(":")
        if not host or not port.isdigit():
            raise InvalidArgumentError(f"executor: expected 'dask://HOST:PORT', got {executor!r}")
        return DaskExecutor(f"tcp://{host}:{port}", jobs)
    raise InvalidArgumentError(f"executor: expected one of {EXECUTORS}, got {executor!r}")

