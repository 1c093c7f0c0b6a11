"""Run a sweep durably: skip finished points, run the rest in-process or in a process pool,
record every result from the coordinating process, show progress, stop cleanly on Ctrl-C / SIGTERM.

``run_sweep(fn, points, store, name=...)``: ``fn(**params) -> dict`` of metrics (a module-level
function, so that worker processes can import it). A point that raises is stored with its
traceback and is retried only with ``retry_failed=True``.
"""
from __future__ import annotations

import concurrent.futures as cf
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .._validate import check_choice, check_int
from .grid import point_hash
from .store import ResultStore

__all__ = ["run_sweep"]


def _call(fn: Callable[..., dict], params: dict[str, Any]) -> tuple[dict | None, str | None, float]:
    t0 = time.perf_counter()
    try:
        out = fn(**params)
        return {k: (float(v) if isinstance(v, int | float) else v) for k, v in dict(out).items()}, None, time.perf_counter() - t0
    except Exception:  # recorded with the point; the sweep goes on
        return None, traceback.format_exc(), time.perf_counter() - t0


def _worker_init(jobs: int) -> None:
    """Share the cores between workers: torch threads = cores // jobs (else 2 workers x 2 threads oversubscribe 2 cores)."""
    import os

    try:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    except ImportError:  # torch is a dependency, but the engine itself does not need it
        pass


def _dask_client(executor: str, jobs: int):
    """A distributed.Client: a LocalCluster of ``jobs`` worker processes, or a scheduler address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # optional dependency
        raise ImportError("the Dask executor needs 'dask[distributed]': pip install 'lora-theory[sweeps]'") from e
    if executor == "dask-local":
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1")
        client = Client(cluster)
        client._lora_theory_cluster = cluster
        return client
    return Client(executor.removeprefix("dask://"))


class _Stop(BaseException):  # not an Exception: _call must not record it as a failed point
    pass


def run_sweep(fn: Callable[..., dict], points: Sequence[dict[str, Any]], store: ResultStore | str | Path, *, name: str,
              jobs: int = 1, executor: str = "process", retry_failed: bool = False, progress: bool = True) -> dict[str, int]:
    """Run the unfinished points of a sweep and store each result as it finishes.

    Args:
        fn: ``fn(**params) -> dict`` of metrics (picklable for the process executor).
        points: parameter dicts (e.g. from :func:`~lora_theory.sweeps.grid.grid`).
        store: a :class:`ResultStore` or a path to one.
        name: the sweep's name (part of every point's hash).
        jobs: worker processes for ``executor="process"``.
        executor: "process" (default), "inprocess" (debugging), "dask-local" (a Dask LocalCluster
            with ``jobs`` workers) or "dask://HOST:PORT" (a running Dask scheduler). Results always
            come back to this process, which alone writes the store.
        retry_failed: also re-run points stored with an error.

    Returns:
        {"total", "skipped", "done", "failed"} counts for this run.
    """
    if not (executor in ("process", "inprocess", "dask-local") or executor.startswith("dask://")):
        check_choice("executor", executor, ("process", "inprocess", "dask-local", "dask://HOST:PORT"))
    jobs = check_int("jobs", jobs, low=1)
    own = not isinstance(store, ResultStore)
    st = ResultStore(store) if own else store
    finished = st.done(name, include_failed=not retry_failed)
    todo = [(point_hash(name, p), p) for p in points]
    todo = [(h, p) for h, p in todo if h not in finished]
    counts = {"total": len(points), "skipped": len(points) - len(todo), "done": 0, "failed": 0}

    def on_term(signum, frame):  # SIGTERM behaves like Ctrl-C: stop cleanly, keep what is stored
        raise _Stop()

    old = signal.signal(signal.SIGTERM, on_term) if hasattr(signal, "SIGTERM") else None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("failed {task.fields[failed]}"),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress)
    started = time.perf_counter()
    pool = None
    try:
        with bar:
            task = bar.add_task(name, total=len(todo), failed=0, rate="")

            def store_one(h, p, res):
                metrics, err, secs = res
                st.record(name, h, p, metrics, error=err, seconds=secs)
                counts["failed" if err else "done"] += 1
                n = counts["failed"] + counts["done"]
                bar.update(task, advance=1, failed=counts["failed"], rate=f"{n / max(time.perf_counter() - started, 1e-9):.2f} pts/s")

            if executor == "inprocess":
                for h, p in todo:
                    store_one(h, p, _call(fn, p))
            elif executor.startswith("dask"):
                client = _dask_client(executor, jobs)
                pool = client
                futs = {client.submit(_call, fn, p, key=f"{name}-{h}", pure=False): (h, p) for h, p in todo}
                from distributed import as_completed as dask_as_completed

                for fut in dask_as_completed(list(futs)):
                    h, p = futs[fut]
                    store_one(h, p, fut.result())
            else:
                pool = cf.ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init, initargs=(jobs,))
                futs = {pool.submit(_call, fn, p): (h, p) for h, p in todo}
                for fut in cf.as_completed(futs):
                    h, p = futs[fut]
                    store_one(h, p, fut.result())
    except (KeyboardInterrupt, _Stop):
        counts["interrupted"] = 1
    finally:
        if pool is not None and hasattr(pool, "shutdown") and not hasattr(pool, "scheduler_info"):
            pool.shutdown(wait=False, cancel_futures=True)
        elif pool is not None:  # a Dask client: close it (and the LocalCluster we started)
            cluster = getattr(pool, "_lora_theory_cluster", None)
            pool.close()
            if cluster is not None:
                cluster.close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        if own:
            st.close()
    return counts
