"""Run a sweep durably: skip finished points, run the rest on an executor, record every result from
the coordinating process as it arrives, show progress, stop cleanly on Ctrl-C / SIGTERM.

``run_sweep(fn, points, store, name=...)``: ``fn(**params) -> dict`` of metrics (a module-level
function, so that worker processes can import it). A point that raises is stored with its
traceback and is retried only with ``retry_failed=True``; a point whose worker died is retried on a
fresh worker (``max_retries``) before it is stored as failed with the cause; a point that runs past
``point_timeout`` is stored as failed with "timeout". Runs sharing a store share the work through
leases (see :mod:`lora_theory.sweeps.store`).
"""
from __future__ import annotations

import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .._validate import InvalidArgumentError, check_int, check_positive
from .executors import check_executor, make_executor
from .grid import check_point, point_hash
from .store import Holder, ResultStore, StoreError

__all__ = ["SweepInterrupted", "run_points", "run_sweep"]


class SweepInterrupted(BaseException):
    """Raised in the coordinator by SIGTERM (a BaseException, like KeyboardInterrupt: never recorded as a failed point)."""


def _on_sigterm(signum, frame):  # SIGTERM behaves like Ctrl-C: stop cleanly, keep what is stored
    raise SweepInterrupted()


def run_sweep(fn: Callable[..., dict], points: Sequence[dict[str, Any]], store: ResultStore | str | Path, *, name: str,
              jobs: int = 1, executor: str | None = None, seed: int | None = 0, retry_failed: bool = False,
              progress: bool = True, max_retries: int = 2, point_timeout: float | None = None, lease_ttl: float = 60.0,
              on_result: Callable[[dict[str, Any], dict[str, Any] | None, str | None, float], None] | None = None) -> dict[str, int]:
    """Run the points of sweep ``name`` that ``store`` does not hold yet; commit each as it finishes.

    A point's identity is ``point_hash(name, params, seed)`` (with the toolkit version), so a
    re-run (the default behaviour is resume) skips every stored point, and a changed seed or
    toolkit version recomputes. Results are written only by coordinating processes.

    Several runs may share one store (two ``sweep run`` processes, or ``reproduce`` twice): each
    point is leased in the store before it is computed (:meth:`ResultStore.claim`), leases are
    renewed every ``lease_ttl / 3`` seconds by a heartbeat thread, and a run that meets a point
    leased by a live holder leaves it to that holder, then waits for it at the end (taking it over
    if the holder dies: its pid is gone from this node, or its lease expired).

    Args:
        fn: ``fn(**params) -> dict`` of JSON-able metrics (numbers, strings, lists; numpy/torch
            scalars are converted). Must be picklable (module-level) for process and Dask executors.
        points: parameter dicts of JSON values (e.g. from :func:`~lora_theory.sweeps.grid.grid`).
        store: a :class:`ResultStore` or a path to one (created if missing).
        name: the sweep's name (part of every point's hash).
        jobs: workers for "process" and "dask-local".
        executor: "process" (a local process pool; the default when ``jobs > 1`` or a
            ``point_timeout`` is set), "inprocess" (the default otherwise; debugging),
            "dask-local" (a Dask LocalCluster of ``jobs`` workers on 127.0.0.1) or
            "dask://HOST:PORT" (a running Dask scheduler).
        seed: sweep seed; before each point the global RNGs (random, numpy, torch) are seeded from
            (seed, point hash), so stored metrics are identical across runs, executors and resumes.
            ``None`` leaves the RNGs alone.
        retry_failed: also re-run points stored with an error before this run started.
        progress: show a progress bar (points done, failed, rate, ETA).
        max_retries: how many times a point whose worker died (SIGKILL, out of memory) is retried
            on a fresh worker before it is stored as failed with the cause.
        point_timeout: seconds after which a running point's worker is killed and the point
            stored as failed with "timeout" (process executor only).
        lease_ttl: seconds a lease lives without renewal (a holder on another host that stops
            renewing loses its points after this long).
        on_result: called in the coordinator as each point of this run is stored, with
            ``(params, metrics, error, seconds)`` (metrics None for a failed point, or one that
            another run stored); a caller's own progress display (``reproduce`` uses it).

    Returns:
        {"total" (distinct points), "skipped" (already stored), "done", "failed"} counts for this run, plus
        "retries" (points re-run after their worker died), "others" (finished by another run on the
        same store meanwhile) when non-zero, and "interrupted": 1 when Ctrl-C or SIGTERM stopped it
        (everything finished before that is stored).

    Raises:
        InvalidArgumentError: bad arguments or points. StoreError: a foreign, corrupt or read-only store.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"name: expected a non-empty string, got {name!r}")
    if not callable(fn):
        raise InvalidArgumentError(f"fn: expected a callable fn(**params) -> dict, got {type(fn).__name__}")
    jobs = check_int("jobs", jobs, low=1)
    if seed is not None:
        seed = check_int("seed", seed, low=0)
    max_retries = check_int("max_retries", max_retries, low=0)
    if point_timeout is not None:
        point_timeout = check_positive("point_timeout", point_timeout)
    lease_ttl = check_positive("lease_ttl", lease_ttl)
    if isinstance(points, dict | str) or not isinstance(points, Sequence):
        raise InvalidArgumentError(f"points: expected a list of parameter dicts, got {type(points).__name__}")
    points = [check_point(p, i) for i, p in enumerate(points)]
    if executor is None:
        executor = "process" if jobs > 1 or point_timeout is not None else "inprocess"
    executor = check_executor(executor, point_timeout)
    if executor != "inprocess":
        try:
            pickle.dumps(fn)
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # lambdas, closures, locally defined functions
            raise InvalidArgumentError(f"fn: expected a picklable (module-level) function for executor {executor!r}, got {fn!r} ({e})") from None

    own = not isinstance(store, ResultStore)
    st = ResultStore(store) if own else store
    try:
        started = time.time()
        finished = st.done(name, include_failed=not retry_failed)
        hashes = [point_hash(name, p, seed) for p in points]
        todo: dict[str, dict[str, Any]] = {}
        for h, p in zip(hashes, points, strict=True):
            if h not in finished:
                todo.setdefault(h, p)  # a point listed twice runs (and is stored) once
        total = len(set(hashes))
        counts = {"total": total, "skipped": total - len(todo), "done": 0, "failed": 0, "retries": 0, "others": 0}
        if todo:
            _run(fn, todo, st, name, seed, jobs, executor, counts, progress, _Options(max_retries, point_timeout, lease_ttl,
                                                                                     started if retry_failed else None), on_result)
    finally:
        if own:
            st.close()
    return {k: v for k, v in counts.items() if v or k in ("total", "skipped", "done", "failed")}


class _Options(NamedTuple):
    max_retries: int
    point_timeout: float | None
    lease_ttl: float
    retry_before: float | None


class _Heartbeat(threading.Thread):
    """Renews this run's leases every ttl/3 seconds on its own connection (the coordinator may be busy computing a point)."""

    def __init__(self, path: Path, holder: Holder, ttl: float) -> None:
        super().__init__(name="lora-theory-lease-heartbeat", daemon=True)
        self.path, self.holder, self.ttl = path, holder, ttl
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            st = ResultStore(self.path, check=False, synchronous="NORMAL")
        except StoreError:
            return
        try:
            while not self.stop.wait(self.ttl / 3):
                try:
                    st.renew(self.holder, self.ttl)
                except StoreError:  # a busy or vanished file: the next beat tries again (a lease lasts 3 beats)
                    continue
        finally:
            st.close()


def _run(fn, todo, st: ResultStore, name, seed, jobs, executor, counts, progress, opts: _Options, on_result=None) -> None:
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    old = signal.signal(signal.SIGTERM, _on_sigterm) if in_main and hasattr(signal, "SIGTERM") else None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("failed {task.fields[failed]}"),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not progress)
    holder = Holder.this_process()
    beat = _Heartbeat(st.path, holder, opts.lease_ttl)
    beat.start()
    started = time.perf_counter()
    ex = None
    cancel = True  # unless the loop completes: stop workers at once on Ctrl-C, SIGTERM or an error
    try:
        ex = make_executor(executor, jobs, max_retries=opts.max_retries, point_timeout=opts.point_timeout)
        pending = dict(todo)
        with bar:
            task = bar.add_task(name, total=len(todo), failed=0, rate="")

            def advance(key: str, kind: str, metrics: dict[str, Any] | None = None, error: str | None = None, seconds: float = 0.0) -> None:
                counts[kind] += 1
                if on_result is not None:
                    on_result(todo[key], metrics, error, seconds)
                bar.update(task, advance=1, failed=counts["failed"],
                           rate=f"{(counts['done'] + counts['failed']) / max(time.perf_counter() - started, 1e-9):.2f} pts/s")

            while pending:
                busy: dict[str, dict[str, Any]] = {}

                def claimed(pending=pending, busy=busy):
                    for h in list(pending):
                        status = st.claim(name, h, holder, ttl=opts.lease_ttl, retry_before=opts.retry_before)
                        if status == "claimed":
                            yield h, pending.pop(h)
                        elif status == "done":  # another run stored it meanwhile
                            pending.pop(h)
                            advance(h, "others")
                        else:  # a live holder computes it: leave it, come back at the end
                            busy[h] = pending.pop(h)

                for h, out in ex.run(fn, claimed(), seed):
                    counts["retries"] += out.attempts - 1  # tries after a worker died under this point
                    wrote = st.record(name, h, todo[h], out.metrics, error=out.error, seconds=out.seconds, seed=seed,
                                      attempts=out.attempts, holder=holder)
                    advance(h, ("failed" if out.error else "done") if wrote else "others", out.metrics if wrote else None, out.error, out.seconds)
                if busy:  # points other runs hold: wait until they are stored or become ours; the rest stay in the next round
                    ours = _wait_for_others(st, name, busy, holder, opts, advance)
                    pending = {**ours, **busy}
        cancel = False
    except (KeyboardInterrupt, SweepInterrupted):
        counts["interrupted"] = 1
    finally:
        try:
            if ex is not None:
                ex.close(cancel=cancel)
        except (KeyboardInterrupt, SweepInterrupted):  # a second Ctrl-C while stopping: the store is consistent anyway
            counts["interrupted"] = 1
        finally:
            beat.stop.set()
            try:
                st.release(holder)  # points we claimed but did not finish are free for the next run at once
            except StoreError:
                pass
            if old is not None:
                signal.signal(signal.SIGTERM, old)


def _wait_for_others(st: ResultStore, name: str, busy: dict[str, dict[str, Any]], holder: Holder, opts: _Options, advance,
                     poll: float = 0.5) -> dict[str, dict[str, Any]]:
    """Wait until each point leased by another run is stored by it (counted as "others") or becomes ours
    (its holder died or its lease expired); return the points now leased to us."""
    while True:
        ours: dict[str, dict[str, Any]] = {}
        for h in list(busy):
            status = st.claim(name, h, holder, ttl=opts.lease_ttl, retry_before=opts.retry_before)
            if status == "done":
                busy.pop(h)
                advance(h, "others")
            elif status == "claimed":
                ours[h] = busy.pop(h)
        if ours or not busy:
            return ours
        time.sleep(poll)


def run_points(fn: Callable[..., dict], points: Sequence[dict[str, Any]], store: str | Path, *, name: str, what: str = "points",
               describe: Callable[[Any], str] | None = None, jobs: int = 1, executor: str | None = None, seed: int | None = 0,
               progress: bool = False) -> Any:
    """Run the missing points of sweep ``name`` (:func:`run_sweep`) and return the stored rows of exactly these points.

    One row per point (a pandas DataFrame with the store's columns, index reset). A Ctrl-C or SIGTERM that
    interrupted the sweep re-raises KeyboardInterrupt (the finished points are stored; a re-run resumes); a point
    that failed raises RuntimeError naming how many ``what`` failed, ``describe(row)`` of the first (when given)
    and the last line of its error. The experiments' shared way of asking "run these, then give me their results".
    """
    store = Path(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    counts = run_sweep(fn, points, store, name=name, jobs=jobs, executor=executor, seed=seed, progress=progress)
    if counts.get("interrupted"):
        raise KeyboardInterrupt  # finished points are stored; a re-run resumes
    want = {point_hash(name, p, seed) for p in points}
    with ResultStore(store, readonly=True) as st:
        df = st.load(name)
    df = df[df._hash.isin(want)]
    failed = df[df._error.notna()]
    if len(failed):
        first = failed.iloc[0]
        example = f", e.g. {describe(first)}" if describe else ""
        raise RuntimeError(f"{len(failed)} {what} failed{example}: {str(first._error).strip().splitlines()[-1]}")
    return df.reset_index(drop=True)
