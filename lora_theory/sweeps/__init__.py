"""Durable, resumable sweeps: a SQLite results store, grids with content hashes, and an engine."""
from .engine import run_sweep
from .grid import grid, load_toml, point_hash
from .store import ResultStore, StoreError

__all__ = ["ResultStore", "StoreError", "grid", "load_toml", "point_hash", "run_sweep"]
