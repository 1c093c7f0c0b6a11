"""Run a sweep durably: skip finished points, run the rest on an executor, record every result from
the coordinating process as it arrives, show progress, stop cleanly on Ctrl-C / SIGTERM.

``run_sweep(fn, points, store, name=...)``: ``fn(**params) -> dict`` of metrics (a module-level
function, so that worker processes can import it). A point that raises is stored with its
traceback and is retried only with ``retry_failed=True``.
"""
from __future__ import annotations

import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .._validate import InvalidArgumentError, check_int
from .executors import make_executor
from .grid import check_point, point_hash
from .store import ResultStore

__all__ = ["SweepInterrupted", "run_sweep"]


class SweepInterrupted(BaseException):
    """Raised in the coordinator by SIGTERM (a BaseException, like KeyboardInterrupt: never recorded as a failed point)."""


def _on_sigterm(signum, frame):  # SIGTERM behaves like Ctrl-C: stop cleanly, keep what is stored
    raise SweepInterrupted()


def run_sweep(fn: Callable[..., dict], points: Sequence[dict[str, Any]], store: ResultStore | str | Path, *, name: str,
              jobs: int = 1, executor: str | None = None, seed: int | None = 0, retry_failed: bool = False,
              progress: bool = True) -> dict[str, int]:
    """Run the points of sweep ``name`` that ``store`` does not hold yet; commit each as it finishes.

    A point's identity is ``point_hash(name, params, seed)`` (with the toolkit version), so a
    re-run (the default behaviour is resume) skips every stored point, and a changed seed or
    toolkit version recomputes. Results are written only by this (the coordinating) process.

    Args:
        fn: ``fn(**params) -> dict`` of JSON-able metrics (numbers, strings, lists; numpy/torch
            scalars are converted). Must be picklable (module-level) for process and Dask executors.
        points: parameter dicts of JSON values (e.g. from :func:`~lora_theory.sweeps.grid.grid`).
        store: a :class:`ResultStore` or a path to one (created if missing).
        name: the sweep's name (part of every point's hash).
        jobs: workers for "process" and "dask-local".
        executor: "process" (a local process pool; the default when ``jobs > 1``), "inprocess"
            (the default when ``jobs == 1``; debugging), "dask-local" (a Dask LocalCluster of
            ``jobs`` workers on 127.0.0.1) or "dask://HOST:PORT" (a running Dask scheduler).
        seed: sweep seed; before each point the global RNGs (random, numpy, torch) are seeded from
            (seed, point hash), so stored metrics are identical across runs, executors and resumes.
            ``None`` leaves the RNGs alone.
        retry_failed: also re-run points stored with an error.
        progress: show a progress bar (points done, failed, rate, ETA).

    Returns:
        {"total" (distinct points), "skipped" (already stored), "done", "failed"} counts for this run, plus "interrupted": 1 when
        Ctrl-C or SIGTERM stopped it (everything finished before that is stored).

    Raises:
        InvalidArgumentError: bad arguments or points. StoreError: a foreign or corrupt store.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"name: expected a non-empty string, got {name!r}")
    if not callable(fn):
        raise InvalidArgumentError(f"fn: expected a callable fn(**params) -> dict, got {type(fn).__name__}")
    jobs = check_int("jobs", jobs, low=1)
    if seed is not None:
        seed = check_int("seed", seed, low=0)
    if isinstance(points, dict | str) or not isinstance(points, Sequence):
        raise InvalidArgumentError(f"points: expected a list of parameter dicts, got {type(points).__name__}")
    points = [check_point(p, i) for i, p in enumerate(points)]
    executor = ("inprocess" if jobs == 1 else "process") if executor is None else executor
    if executor != "inprocess":
        try:
            pickle.dumps(fn)
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # lambdas, closures, locally defined functions
            raise InvalidArgumentError(f"fn: expected a picklable (module-level) function for executor {executor!r}, got {fn!r} ({e})") from None

    own = not isinstance(store, ResultStore)
    st = ResultStore(store) if own else store
    try:
        finished = st.done(name, include_failed=not retry_failed)
        hashes = [point_hash(name, p, seed) for p in points]
        todo: dict[str, dict[str, Any]] = {}
        for h, p in zip(hashes, points, strict=True):
            if h not in finished:
                todo.setdefault(h, p)  # a point listed twice runs (and is stored) once
        total = len(set(hashes))
        counts = {"total": total, "skipped": total - len(todo), "done": 0, "failed": 0}
        if todo:
            _run(fn, todo, st, name, seed, jobs, executor, counts, progress)
    finally:
        if own:
            st.close()
    return counts


def _run(fn, todo, st, name, seed, jobs, executor, counts, progress) -> None:
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    old = signal.signal(signal.SIGTERM, _on_sigterm) if in_main and hasattr(signal, "SIGTERM") else None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("failed {task.fields[failed]}"),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not progress)
    started = time.perf_counter()
    ex = None
    cancel = True  # unless the loop completes: stop workers at once on Ctrl-C, SIGTERM or an error
    try:
        ex = make_executor(executor, jobs)
        with bar:
            task = bar.add_task(name, total=len(todo), failed=0, rate="")
            for h, out in ex.run(fn, todo.items(), seed):
                st.record(name, h, todo[h], out.metrics, error=out.error, seconds=out.seconds, seed=seed)
                counts["failed" if out.error else "done"] += 1
                n = counts["failed"] + counts["done"]
                bar.update(task, advance=1, failed=counts["failed"], rate=f"{n / max(time.perf_counter() - started, 1e-9):.2f} pts/s")
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
            if old is not None:
                signal.signal(signal.SIGTERM, old)
