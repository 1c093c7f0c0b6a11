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
instead of waiting for it. The process pool survives faults: a worker that dies mid-point is
replaced and its point retried (``max_retries``), a point that hangs past ``point_timeout`` is
failed with "timeout", and no worker outlives a coordinator killed with SIGKILL.
"""
from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Self

from .._validate import InvalidArgumentError, check_int, check_positive

__all__ = ["EXECUTORS", "DaskExecutor", "Executor", "InProcessExecutor", "Outcome", "ProcessPoolExecutor", "check_executor", "die_with_parent", "make_executor"]

EXECUTORS = ("process", "inprocess", "dask-local", "dask://HOST:PORT")


class Outcome(NamedTuple):
    """What one point produced: its metrics (JSON-safe) or a traceback / cause, its wall time in seconds, and how many tries it took."""

    metrics: dict[str, Any] | None
    error: str | None
    seconds: float
    attempts: int = 1


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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker must not inherit the coordinator's SIGTERM handler
    try:
        import torch

        # cores // jobs threads each: 2 workers x 2 torch threads would oversubscribe 2 cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    except ImportError:  # torch is a dependency of the toolkit, not of the engine
        pass


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, poll: float = 0.5) -> None:
    """Make this process end when ``parent`` does, even if the parent is killed with SIGKILL.

    On Linux the kernel delivers SIGKILL to us when our parent dies (``prctl(PR_SET_PDEATHSIG)``,
    via ctypes); everywhere a daemon thread also polls ``os.getppid()`` every ``poll`` seconds and
    exits when we have been re-parented. The check after ``prctl`` closes the race in which the
    parent died before the request took effect.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes  # optional: the portable watchdog below still works without it

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(1)  # the coordinator is gone: nobody will read our result

    threading.Thread(target=watch, name="lora-theory-parent-watch", daemon=True).start()


def _worker_main(conn, fn: Callable[..., Any], jobs: int, parent: int) -> None:
    """A pool worker: compute the points the coordinator sends, one at a time, until told to stop."""
    die_with_parent(parent)
    _pool_worker_init(jobs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the coordinator closed the pipe
            return
        if task is None:
            return
        key, params, seed = task
        out = call_point(fn, params, key, seed)
        try:
            conn.send((key, out))
        except OSError:  # the coordinator is gone
            return


def _death_cause(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = " (kill -9 or the out-of-memory killer)" if exitcode == -signal.SIGKILL else ""
        return f"killed by {name}{why}"
    return f"exited with status {exitcode}"


class _Worker:
    """One worker process, its pipe, and the point it is computing (None when idle)."""

    __slots__ = ("conn", "proc", "started", "task")

    def __init__(self, proc, conn) -> None:
        self.proc, self.conn = proc, conn
        self.task: tuple[str, dict[str, Any]] | None = None
        self.started = 0.0


class ProcessPoolExecutor(Executor):
    """A local pool of ``jobs`` worker processes, each computing one point at a time.

    Faults (after Dask's worker-loss handling and Slurm's requeue of failed array tasks):

    - a worker that dies mid-point (SIGKILL, the out-of-memory killer, a segfault, ``os._exit``)
      is replaced by a fresh process and the point is retried, up to ``max_retries`` times; then
      the point is returned as failed with the cause ("worker died: killed by SIGKILL ...");
    - a point running longer than ``point_timeout`` seconds has its worker killed (and replaced)
      and is returned as failed with "timeout: ..." (not retried: a hang is usually deterministic);
    - workers die with the coordinator, even under ``kill -9`` (:func:`die_with_parent`).

    ``fn`` must be picklable (module-level) where processes are spawned; on Linux they are forked.
    """

    name = "process"

    def __init__(self, jobs: int, *, max_retries: int = 2, point_timeout: float | None = None) -> None:
        self.jobs = check_int("jobs", jobs, low=1)
        self.max_retries = check_int("max_retries", max_retries, low=0)
        if point_timeout is not None:
            point_timeout = check_positive("point_timeout", point_timeout)
        self.point_timeout = point_timeout
        self._ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._workers: list[_Worker | None] = [None] * self.jobs
        self.retries = 0  # points re-queued after their worker died
        self.deaths = 0  # workers lost (died mid-point or killed on timeout)

    def _spawn(self, fn) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(theirs, fn, self.jobs, os.getpid()), name="lora-theory-sweep-worker")
        proc.start()
        theirs.close()
        return _Worker(proc, ours)

    def _discard(self, i: int, kill: bool) -> None:
        w = self._workers[i]
        self._workers[i] = None
        if w is None:
            return
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        w.conn.close()

    def run(self, fn, items, seed):
        it = iter(items)
        retry: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        attempts: dict[str, int] = {}

        def next_task() -> tuple[str, dict[str, Any]] | None:
            if retry:
                return retry.popleft()
            return next(it, None)

        while True:
            for i in range(self.jobs):  # every idle slot gets a point (a dead or missing worker is replaced first)
                w = self._workers[i]
                if w is not None and w.task is not None:
                    continue
                task = next_task()
                if task is None:
                    break
                if w is None or not w.proc.is_alive():
                    self._discard(i, kill=True)
                    w = self._workers[i] = self._spawn(fn)
                try:
                    w.conn.send((task[0], task[1], seed))
                except OSError:  # died between the liveness check and the send: noticed below as a death mid-point
                    pass
                w.task, w.started = task, time.monotonic()
            busy = [(i, w) for i, w in enumerate(self._workers) if w is not None and w.task is not None]
            if not busy:
                return
            timeout = None
            if self.point_timeout is not None:
                timeout = max(0.0, min(w.started for _, w in busy) + self.point_timeout - time.monotonic())
            mpc.wait([w.conn for _, w in busy] + [w.proc.sentinel for _, w in busy], timeout)
            now = time.monotonic()
            for i, w in busy:
                key, params = w.task
                n = attempts.get(key, 0) + 1
                if w.conn.poll():  # a result (read it even if the worker died right after sending it)
                    try:
                        rkey, out = w.conn.recv()
                    except (EOFError, OSError):
                        pass
                    else:
                        w.task = None
                        attempts.pop(key, None)
                        yield rkey, out._replace(attempts=n)
                        continue
                if not w.proc.is_alive():
                    w.proc.join()
                    cause = _death_cause(w.proc.exitcode)
                    self._discard(i, kill=False)
                    self.deaths += 1
                    attempts[key] = n
                    if n <= self.max_retries:
                        self.retries += 1
                        retry.append((key, params))
                    else:
                        attempts.pop(key, None)
                        yield key, Outcome(None, f"worker died: {cause}, on each of {n} attempts (max_retries={self.max_retries})",
                                           now - w.started, n)
                elif self.point_timeout is not None and now - w.started >= self.point_timeout:
                    self._discard(i, kill=True)
                    self.deaths += 1
                    attempts.pop(key, None)
                    yield key, Outcome(None, f"timeout: the point ran longer than point_timeout = {self.point_timeout:g} s; its worker was killed",
                                       now - w.started, n)

    def close(self, cancel: bool = False) -> None:
        for i, w in enumerate(self._workers):
            if w is None:
                continue
            if cancel or w.task is not None:  # stop running points now (their results are lost by design; nothing was stored)
                self._discard(i, kill=True)
                continue
            try:
                w.conn.send(None)
            except OSError:
                pass
            w.proc.join(5)
            self._discard(i, kill=True)


class DaskExecutor(Executor):
    """Dask distributed: ``address=None`` starts a LocalCluster of ``jobs`` workers on 127.0.0.1.

    Worker loss is Dask's own business: the scheduler re-runs a task whose worker died, up to
    ``distributed.scheduler.allowed-failures`` times (set to ``max_retries`` for a LocalCluster;
    a remote scheduler keeps its own setting), then the point is returned as failed with the
    ``KilledWorker`` cause. Point timeouts need the "process" executor (Dask cannot kill a running
    task). LocalCluster workers exit by themselves when the coordinator dies.
    """

    name = "dask"

    def __init__(self, address: str | None, jobs: int = 1, *, max_retries: int = 2) -> None:
        self.jobs = check_int("jobs", jobs, low=1)
        self.max_retries = check_int("max_retries", max_retries, low=0)
        try:
            import dask  # optional
            from distributed import Client, LocalCluster
        except ImportError as e:  # optional dependency
            raise ImportError("the Dask executor needs dask[distributed]: pip install 'lora-theory[sweeps]'") from e
        self.cluster = None
        if address is None:
            with dask.config.set({"distributed.scheduler.allowed-failures": self.max_retries}):
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
            try:
                out = fut.result()
            except Exception as e:  # noqa: BLE001 (KilledWorker: the worker died on every allowed attempt; recorded with the point)
                out = Outcome(None, f"worker died: {type(e).__name__}: {e}", 0.0, self.max_retries + 1)
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


def check_executor(executor: object, point_timeout: float | None = None) -> str:
    """Validate an executor name (and that it can enforce ``point_timeout``); returns it."""
    if not isinstance(executor, str) or not (executor in EXECUTORS[:3] or executor.startswith("dask://")):
        raise InvalidArgumentError(f"executor: expected one of {EXECUTORS}, got {executor!r}")
    if executor.startswith("dask://"):
        host, _, port = executor.removeprefix("dask://").rpartition(":")
        if not host or not port.isdigit():
            raise InvalidArgumentError(f"executor: expected 'dask://HOST:PORT', got {executor!r}")
    if point_timeout is not None and executor != "process":
        raise InvalidArgumentError(f"point_timeout: needs the 'process' executor (only its workers can be killed), got executor {executor!r}")
    return executor


def make_executor(executor: str, jobs: int = 1, *, max_retries: int = 2, point_timeout: float | None = None) -> Executor:
    """``"inprocess"``, ``"process"``, ``"dask-local"`` or ``"dask://HOST:PORT"`` -> an Executor.

    ``max_retries`` (worker deaths a point may cause before it is stored as failed) applies to
    the process pool and Dask; ``point_timeout`` (seconds) to the process pool only.
    """
    jobs = check_int("jobs", jobs, low=1)
    max_retries = check_int("max_retries", max_retries, low=0)
    if point_timeout is not None:
        point_timeout = check_positive("point_timeout", point_timeout)
    executor = check_executor(executor, point_timeout)
    if executor == "inprocess":
        return InProcessExecutor()
    if executor == "process":
        return ProcessPoolExecutor(jobs, max_retries=max_retries, point_timeout=point_timeout)
    if executor == "dask-local":
        return DaskExecutor(None, jobs, max_retries=max_retries)
    host, _, port = executor.removeprefix("dask://").rpartition(":")
    return DaskExecutor(f"tcp://{host}:{port}", jobs, max_retries=max_retries)

