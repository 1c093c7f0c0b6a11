"""Durable, resumable sweeps: grids with content hashes, a SQLite results store, executors
(in-process, local process pool, Dask distributed) and the engine that ties them together."""
from .engine import SweepInterrupted, run_points, run_sweep
from .executors import make_executor
from .grid import SweepSpec, grid, load_toml, point_hash
from .store import Holder, ResultStore, StoreError

__all__ = ["Holder", "ResultStore", "StoreError", "SweepInterrupted", "SweepSpec", "grid", "load_toml", "make_executor", "point_hash", "run_points", "run_sweep"]
