"""A durable results store for sweeps: one SQLite file (WAL), one row per finished point.

Each point is committed in its own transaction with its parameters, metrics, timing, host and
error (a traceback, for points that raised). The primary key is the point's content hash, so a
re-run skips finished points and nothing is ever stored twice. Only the coordinating process
writes; readers may open the file concurrently (WAL lets them read while a sweep writes).

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``, so a committed point survives a
``kill -9`` of the writer and a power loss (NORMAL would only protect against the former; a point
costs milliseconds to seconds, so the extra fsync per point is cheap).
"""
from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .._validate import InvalidArgumentError

__all__ = ["ResultStore", "StoreError"]

_SCHEMA_VERSION = 1
_APP_ID = 0x4C6F5241  # "LoRA": marks files created by this store (PRAGMA application_id)


class StoreError(InvalidArgumentError):
    """The store file is corrupt, foreign or from an incompatible version (never overwritten)."""


class ResultStore:
    """``ResultStore(path)``: open or create a store; ``record``, ``done``, ``load``, ``export``."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if readonly and not exists:
            raise StoreError(f"path: expected an existing store, got {self.path} (missing or empty)")
        uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
        try:
            self.conn = sqlite3.connect(uri, uri=readonly, timeout=30.0, isolation_level=None)
            if exists:
                app = self.conn.execute("PRAGMA application_id").fetchone()[0]
                if app != _APP_ID:
                    raise StoreError(f"path: {self.path} is not a lora-theory results store (application_id {app:#x}); refusing to touch it")
                ver = self.conn.execute("PRAGMA user_version").fetchone()[0]
                if ver != _SCHEMA_VERSION:
                    raise StoreError(f"path: store schema version {ver}, expected {_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"path: {self.path} is not a readable SQLite store ({e}); refusing to overwrite it") from None
        if not readonly:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            if not exists:
                self.conn.execute(f"PRAGMA application_id={_APP_ID}")
                self.conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS points (hash TEXT PRIMARY KEY, sweep TEXT NOT NULL, params TEXT NOT NULL, "
                    "metrics TEXT, error TEXT, seconds REAL, host TEXT, finished REAL NOT NULL)"
                )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def record(self, sweep: str, point_hash: str, params: dict[str, Any], metrics: dict[str, Any] | None, *, error: str | None = None,
               seconds: float = 0.0) -> None:
        """Commit one finished point (replacing an earlier failed attempt of the same point)."""
        with self.conn:  # one transaction per point
            self.conn.execute(
                "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (point_hash, sweep, json.dumps(params, sort_keys=True), None if metrics is None else json.dumps(metrics), error, seconds,
                 socket.gethostname(), time.time()),
            )

    def done(self, sweep: str | None = None, *, include_failed: bool = True) -> set[str]:
        """Hashes of stored points (of one sweep), optionally without the failed ones."""
        q = "SELECT hash FROM points" + (" WHERE sweep = ?" if sweep else "") + ("" if include_failed else (" AND" if sweep else " WHERE") + " error IS NULL")
        return {r[0] for r in self.conn.execute(q, (sweep,) if sweep else ())}

    def load(self, sweep: str | None = None) -> pd.DataFrame:
        """A tidy DataFrame: one row per point, parameters and metrics as columns, plus bookkeeping."""
        q = "SELECT hash, sweep, params, metrics, error, seconds, host, finished FROM points" + (" WHERE sweep = ?" if sweep else "") + " ORDER BY finished"
        rows = []
        for h, sw, params, metrics, error, seconds, host, finished in self.conn.execute(q, (sweep,) if sweep else ()):
            rows.append({**json.loads(params), **(json.loads(metrics) if metrics else {}), "_hash": h, "_sweep": sw, "_error": error,
                         "_seconds": seconds, "_host": host, "_finished": finished})
        return pd.DataFrame(rows)

    def export(self, path: str | Path, sweep: str | None = None) -> Path:
        """Write the table as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow)."""
        path = Path(path)
        df = self.load(sweep)
        if path.suffix == ".csv":
            df.to_csv(path, index=False)
        elif path.suffix == ".parquet":
            df.to_parquet(path, index=False)
        else:
            raise InvalidArgumentError(f"path: expected a .csv or .parquet file name, got {path.name!r}")
        return path
