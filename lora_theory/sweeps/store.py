"""A durable results store for sweeps: one SQLite file (WAL), one row per finished point, and leases.

Each point is committed in its own transaction with its parameters, metrics, timing, host, seed,
toolkit version, attempts and error (a traceback, or the cause: "timeout", "worker died"). The
primary key is the point's content hash, so a re-run skips finished points and nothing is ever
stored twice. Only coordinating processes write (workers never touch the file); readers may open
it concurrently (WAL lets them read a consistent snapshot while a sweep writes).

Several coordinators may share one store (two ``sweep run`` or ``reproduce`` on the same file):
before computing a point, a coordinator claims it with a **lease** (a row of table ``leases``:
holder id, pid, host, node, expiry), renews its leases while it lives (see
:class:`~lora_theory.sweeps.engine` heartbeat) and drops a lease in the same transaction that
records the point. A lease is taken over only when its holder is gone: its pid no longer exists on
this node (same host, boot and pid namespace), or the lease expired (a holder on another node that
stopped renewing). So no point is computed twice while its holder lives.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``: a committed point survives a
``kill -9`` of the writer (NORMAL would too) and also a power loss or OS crash (NORMAL may lose
the last commits there). A point costs milliseconds to hours, so one fsync per point is cheap:
benchmarks/bench_sweeps.py measured 0.3 ms per point on an idle disk and about 4 ms on a disk
shared with other jobs; ``ResultStore(path, synchronous="NORMAL")`` trades the power-loss
guarantee for no fsync per point. Lease transactions are never fsynced (a lease lost in a power
loss only means its point is claimed again).

A file that is not a store of this toolkit (another SQLite database, a corrupt file, a newer
schema) raises :class:`StoreError` and is never modified. Schema versions: v1 (no seed/version
columns) and v2 (no attempts column, no leases table) are upgraded in place to v3 by the first
writable open, in one exclusive transaction (two processes opening an old store at once upgrade it
once); a read-only open reads v2 and v3 as they are.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Self

import pandas as pd

from .. import _version
from .._outputs import write_output
from .._validate import InvalidArgumentError, check_choice

__all__ = ["Holder", "ResultStore", "StoreError"]

_SCHEMA_VERSION = 3
_APP_ID = 0x4C6F5241  # "LoRA": marks files created by this store (PRAGMA application_id)
_COLUMNS = ("hash", "sweep", "params", "metrics", "error", "seconds", "host", "finished", "seed", "version", "attempts")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS points (hash TEXT PRIMARY KEY, sweep TEXT NOT NULL, params TEXT NOT NULL, metrics TEXT, error TEXT, "
    "seconds REAL, host TEXT, finished REAL NOT NULL, seed INTEGER, version TEXT, attempts INTEGER)"
)
_LEASES = (
    "CREATE TABLE IF NOT EXISTS leases (hash TEXT PRIMARY KEY, sweep TEXT NOT NULL, holder TEXT NOT NULL, pid INTEGER NOT NULL, "
    "host TEXT NOT NULL, node TEXT NOT NULL, acquired REAL NOT NULL, expires REAL NOT NULL)"
)


class StoreError(InvalidArgumentError):
    """The store file is corrupt, foreign, read-only or from an incompatible version (never overwritten)."""


def _node() -> str:
    """This machine and pid namespace: pids are comparable only between holders on the same node."""
    parts = [socket.gethostname()]
    for f in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(f) as fh:
                parts.append(fh.read().strip())
        except OSError:  # not Linux: hostname alone
            pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))  # containers sharing a hostname have their own pid namespaces
    except OSError:
        pass
    return "/".join(parts)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this node (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has exited; its parent has not reaped it yet
    except OSError:  # no /proc (not Linux): kill(0) said it exists
        return True


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lease: a unique id per run, this process's pid, host and node."""

    id: str
    pid: int
    host: str
    node: str

    @classmethod
    def this_process(cls) -> Holder:
        """A fresh holder for one run of this process."""
        return cls(uuid.uuid4().hex, os.getpid(), socket.gethostname(), _node())


ClaimStatus = Literal["claimed", "done", "busy"]


class ResultStore:
    """``ResultStore(path, readonly=False)``: open (or create) a store; ``record``, ``done``, ``load``, ``export``, leases.

    Args:
        path: the SQLite file; created (with its schema) if missing or empty, unless ``readonly``.
        readonly: open for reading only (safe while a sweep is writing the same file).
        check: on a writable open of an existing file, run ``PRAGMA quick_check`` (O(file size))
            so a damaged file is refused before a sweep appends to it.
        synchronous: "FULL" (default: each commit is fsynced, so it survives a power loss) or
            "NORMAL" (no fsync per commit: survives ``kill -9`` of the writer but a power loss
            may drop the last commits; for trivial points on slow disks).

    Raises:
        StoreError: the file is not a lora-theory store, is corrupt, has another schema version, or
            (writable open) the file or its folder is not writable.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, check: bool = True, synchronous: str = "FULL") -> None:
        if not isinstance(path, str | Path) or str(path) == "":
            raise InvalidArgumentError(f"path: expected a file path (str or Path), got {path!r}")
        self.path = Path(path)
        self.readonly = readonly
        self.synchronous = check_choice("synchronous", synchronous, ("FULL", "NORMAL"))
        if self.path.is_dir():
            raise StoreError(f"path: expected a store file, got the directory {self.path}")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if readonly and not exists:
            raise StoreError(f"path: expected an existing store, got {self.path} (missing or empty)")
        if not readonly:
            self._check_writable(exists)
        uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
        try:
            self.conn = sqlite3.connect(uri, uri=readonly, timeout=30.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"path: cannot open {self.path} as a store ({e})") from None
        try:
            if exists:
                self._check_existing(check and not readonly)
            else:
                self._create()
        except sqlite3.DatabaseError as e:
            self.conn.close()
            if _readonly_error(e):
                raise StoreError(f"path: expected a writable store, got {self.path}, which cannot be written ({e}); "
                                 "fix its permissions or open it readonly") from None
            raise StoreError(f"path: {self.path} is not a readable SQLite store ({e}); refusing to touch it") from None
        except StoreError:
            self.conn.close()
            raise
        self.columns = tuple(c for c in _COLUMNS if c in self._table_columns())

    def _check_writable(self, exists: bool) -> None:
        """A writable store needs a writable file and folder (WAL creates -wal and -shm files beside it)."""
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.exists():
            raise StoreError(f"path: expected a store in an existing folder, got {self.path} (no folder {folder})")
        if exists and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreError(f"path: expected a writable store, got the read-only file {self.path}; fix its permissions "
                             "(or use a read-only command such as `sweep status`)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"path: expected a store in a writable folder, got {self.path} (cannot write to {folder}; "
                             "SQLite writes its journal beside the store)")

    def _check_existing(self, quick_check: bool) -> None:
        app = self.conn.execute("PRAGMA application_id").fetchone()[0]
        if app != _APP_ID:
            raise StoreError(f"path: {self.path} is not a lora-theory results store (application_id {app:#x}, expected "
                             f"{_APP_ID:#x}); refusing to touch it")
        ver = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if ver in (1, 2) and not self.readonly:
            ver = self._upgrade()
        ok = (2, _SCHEMA_VERSION) if self.readonly else (_SCHEMA_VERSION,)
        if ver not in ok:
            raise StoreError(f"path: {self.path} has store schema version {ver}, expected {_SCHEMA_VERSION}"
                             + (" (open it once writable to upgrade)" if ver == 1 else "") + "; refusing to touch it")
        if quick_check:
            res = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
            if res != ["ok"]:
                raise StoreError(f"path: {self.path} is damaged (quick_check: {'; '.join(res[:3])}); refusing to append to it")
        if not self.readonly:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={self.synchronous}")  # see the module docstring
        need = set(_COLUMNS) - ({"attempts"} if ver == 2 else set())
        cols = self._table_columns()
        if not need <= cols:
            raise StoreError(f"path: {self.path} lacks columns {sorted(need - cols)} of table 'points'; refusing to touch it")

    def _table_columns(self) -> set[str]:
        return {r[1] for r in self.conn.execute("PRAGMA table_info(points)")}

    def _upgrade(self) -> int:
        """v1/v2 -> v3 in one exclusive transaction; re-reads the version under the lock (another process may have upgraded)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            ver = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if ver == 1:  # v1 lacked the seed/version columns: add them (NULL for old rows)
                self.conn.execute("ALTER TABLE points ADD COLUMN seed INTEGER")
                self.conn.execute("ALTER TABLE points ADD COLUMN version TEXT")
            if ver in (1, 2):  # v2 lacked attempts and the leases table
                self.conn.execute("ALTER TABLE points ADD COLUMN attempts INTEGER")
                self.conn.execute(_LEASES)
                self.conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                ver = _SCHEMA_VERSION
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return ver

    def _create(self) -> None:
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={self.synchronous}")  # see the module docstring
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            if self.conn.execute("PRAGMA application_id").fetchone()[0] == _APP_ID:  # another process created it meanwhile
                return
            self.conn.execute(f"PRAGMA application_id={_APP_ID}")
            self.conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            self.conn.execute(_SCHEMA)
            self.conn.execute(_LEASES)
            self.conn.execute("CREATE INDEX IF NOT EXISTS points_sweep ON points (sweep)")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise StoreError(f"path: {self.path} was opened readonly; cannot {what}")

    def _write(self, sql_args: Iterable[tuple[str, tuple]], *, durable: bool = True) -> list[sqlite3.Cursor]:
        """Run statements in one IMMEDIATE transaction; ``durable=False`` skips the fsync (leases)."""
        try:
            if not durable and self.synchronous == "FULL":
                self.conn.execute("PRAGMA synchronous=NORMAL")  # a lost lease is harmless: its point is claimed again
            try:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return [self.conn.execute(q, a) for q, a in sql_args]
            finally:
                if not durable and self.synchronous == "FULL":
                    self.conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as e:
            if _readonly_error(e):
                raise StoreError(f"path: expected a writable store, got {self.path}, which cannot be written ({e})") from None
            raise StoreError(f"path: could not commit to {self.path} ({e})") from None

    def record(self, sweep: str, point_hash: str, params: dict[str, Any], metrics: dict[str, Any] | None, *, error: str | None = None,
               seconds: float = 0.0, seed: int | None = None, attempts: int | None = None, holder: Holder | None = None) -> bool:
        """Commit one finished point in its own transaction (replacing an earlier failed attempt of the same point).

        With ``holder``, the holder's lease on the point is dropped in the same transaction, and a
        point that another holder has meanwhile stored *without* an error is left as it is (returns
        False): a result is never overwritten by a second computation.

        Returns:
            True when the row was written.
        """
        self._writable("record a point")
        if (metrics is None) == (error is None):
            raise InvalidArgumentError(f"metrics/error: expected exactly one of them, got metrics={metrics!r:.60}, error={error!r:.60}")
        row = (point_hash, sweep, json.dumps(params, sort_keys=True), None if metrics is None else json.dumps(metrics), error, float(seconds),
               socket.gethostname(), time.time(), seed, _version.__version__, attempts)
        cols = ", ".join(_COLUMNS)
        insert = f"INSERT OR REPLACE INTO points ({cols}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        if holder is None:
            self._write([(insert, row)])
            return True
        # only if no successful row exists: the conditional insert and the lease drop commit together
        guarded = f"INSERT OR REPLACE INTO points ({cols}) SELECT {', '.join('?' * len(_COLUMNS))} WHERE NOT EXISTS " \
                  "(SELECT 1 FROM points WHERE hash = ? AND error IS NULL)"
        cur, _ = self._write([(guarded, (*row, point_hash)), ("DELETE FROM leases WHERE hash = ? AND holder = ?", (point_hash, holder.id))])
        return cur.rowcount == 1

    def claim(self, sweep: str, point_hash: str, holder: Holder, *, ttl: float, retry_before: float | None = None) -> ClaimStatus:
        """Lease one point for ``holder`` before computing it.

        Returns:
            "claimed" (the lease is ours for ``ttl`` seconds; renew it with :meth:`renew`), "done"
            (the point is stored: finished, or failed and not retryable) or "busy" (another live
            holder has it). A failed point is retryable when ``retry_before`` is given and it
            failed before that time (a failure recorded during this run is final for it).
        """
        self._writable("claim a point")
        now = time.time()
        try:
            self.conn.execute("PRAGMA synchronous=NORMAL")  # a lost lease is harmless: its point is claimed again
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                row = self.conn.execute("SELECT error IS NOT NULL, finished FROM points WHERE hash = ?", (point_hash,)).fetchone()
                if row is not None and not (row[0] and retry_before is not None and row[1] < retry_before):
                    return "done"
                lease = self.conn.execute("SELECT holder, pid, node, expires FROM leases WHERE hash = ?", (point_hash,)).fetchone()
                if lease is not None and lease[0] != holder.id and lease[3] > now and not self._gone(lease[1], lease[2], holder):
                    return "busy"
                self.conn.execute("INSERT OR REPLACE INTO leases (hash, sweep, holder, pid, host, node, acquired, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (point_hash, sweep, holder.id, holder.pid, holder.host, holder.node, now, now + ttl))
                return "claimed"
        except sqlite3.DatabaseError as e:
            raise StoreError(f"path: could not claim a point in {self.path} ({e})") from None
        finally:
            self.conn.execute(f"PRAGMA synchronous={self.synchronous}")

    @staticmethod
    def _gone(pid: int, node: str, me: Holder) -> bool:
        """A holder on this node whose process no longer exists (pids on other nodes mean nothing here)."""
        return node == me.node and pid != me.pid and not pid_alive(pid)

    def renew(self, holder: Holder, ttl: float) -> int:
        """Extend every lease of ``holder`` to now + ttl; returns how many it still holds."""
        self._writable("renew leases")
        (cur,) = self._write([("UPDATE leases SET expires = ? WHERE holder = ?", (time.time() + ttl, holder.id))], durable=False)
        return cur.rowcount

    def release(self, holder: Holder, hashes: Iterable[str] | None = None) -> None:
        """Drop the leases of ``holder`` (all of them, or those of ``hashes``)."""
        self._writable("release leases")
        if hashes is None:
            self._write([("DELETE FROM leases WHERE holder = ?", (holder.id,))], durable=False)
        else:
            self._write([("DELETE FROM leases WHERE holder = ? AND hash = ?", (holder.id, h)) for h in hashes], durable=False)

    def leases(self, sweep: str | None = None) -> pd.DataFrame:
        """The current leases (points being computed): hash, sweep, holder, pid, host, acquired, expires."""
        if "leases" not in {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")}:
            return pd.DataFrame(columns=["hash", "sweep", "holder", "pid", "host", "acquired", "expires"])  # a v2 store opened readonly
        q = "SELECT hash, sweep, holder, pid, host, acquired, expires FROM leases" + (" WHERE sweep = ?" if sweep is not None else "")
        return pd.DataFrame(self._query(q, (sweep,) if sweep is not None else ()), columns=["hash", "sweep", "holder", "pid", "host", "acquired", "expires"])

    def discard(self, sweep: str, hashes: Iterable[str]) -> int:
        """Delete stored points (so that the next run recomputes them); returns how many were deleted."""
        self._writable("discard points")
        curs = self._write([("DELETE FROM points WHERE sweep = ? AND hash = ?", (sweep, h)) for h in hashes])
        return sum(c.rowcount for c in curs)

    def done(self, sweep: str | None = None, *, include_failed: bool = True) -> set[str]:
        """Hashes of stored points (of one sweep), optionally without the failed ones."""
        where = [w for w in ("sweep = ?" if sweep is not None else "", "" if include_failed else "error IS NULL") if w]
        q = "SELECT hash FROM points" + (" WHERE " + " AND ".join(where) if where else "")
        return {r[0] for r in self._query(q, (sweep,) if sweep is not None else ())}

    def sweeps(self) -> pd.DataFrame:
        """One row per sweep: points, failed, first and last finish time, total compute seconds, running (leased) points."""
        rows = self._query("SELECT sweep, COUNT(*), SUM(error IS NOT NULL), MIN(finished), MAX(finished), SUM(seconds) FROM points GROUP BY sweep ORDER BY sweep")
        df = pd.DataFrame(rows, columns=["sweep", "points", "failed", "first", "last", "seconds"])
        running = self.leases().groupby("sweep").size()
        df["running"] = df.sweep.map(running).fillna(0).astype(int)
        return df

    def load(self, sweep: str | None = None) -> pd.DataFrame:
        """A tidy DataFrame: one row per point (in finishing order), parameters and metrics as columns,
        plus ``_hash, _sweep, _error, _seconds, _host, _finished, _seed, _version, _attempts``."""
        cols = [c if c in self.columns else f"NULL AS {c}" for c in _COLUMNS]
        q = f"SELECT {', '.join(cols)} FROM points" + (" WHERE sweep = ?" if sweep is not None else "") + " ORDER BY finished, hash"
        rows = []
        for h, sw, params, metrics, error, seconds, host, finished, seed, version, attempts in self._query(q, (sweep,) if sweep is not None else ()):
            try:
                row = {**json.loads(params), **(json.loads(metrics) if metrics else {})}
            except (TypeError, ValueError) as e:  # a damaged row: the store's error (exit 2 in the CLI), never a raw JSONDecodeError
                raise StoreError(f"path: the store {self.path} holds a damaged row (sweep {sw!r}, point {h}): its parameters or metrics "
                                 f"are not JSON ({e}); `sweep export` cannot read it, remove the row or use another store") from None
            rows.append({**row, "_hash": h, "_sweep": sw, "_error": error,
                         "_seconds": seconds, "_host": host, "_finished": finished, "_seed": seed, "_version": version, "_attempts": attempts})
        return pd.DataFrame(rows)

    def sweep_names(self) -> list[str]:
        """The names of the sweeps with stored points."""
        return [r[0] for r in self._query("SELECT DISTINCT sweep FROM points ORDER BY sweep")]

    def export(self, path: str | Path, sweep: str | None = None, *, force: bool = False) -> Path:
        """Write :meth:`load`'s table as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow); returns the path.

        An existing file is overwritten only if this toolkit wrote it and it is unchanged since
        (:mod:`lora_theory._outputs`), or with ``force=True``. An unknown ``sweep`` or an empty store is
        an error, and creates nothing.
        """
        path = Path(path)
        if path.suffix not in (".csv", ".parquet"):
            raise InvalidArgumentError(f"path: expected a .csv or .parquet file name, got {path.name!r}")
        names = self.sweep_names()
        if sweep is not None and sweep not in names:
            raise InvalidArgumentError(f"sweep: expected one of the store's sweeps {names}, got {sweep!r}")
        if not names:
            raise InvalidArgumentError(f"store: expected stored points to export, got none in {self.path}")
        if path.suffix == ".parquet":
            import pyarrow  # noqa: F401  # optional: fail before creating anything

        df = self.load(sweep)
        if path.suffix == ".csv":
            return write_output(path, lambda tmp: df.to_csv(tmp, index=False), force=force, what="export")
        return write_output(path, lambda tmp: df.apply(_one_type).to_parquet(tmp, index=False), force=force, what="export")

    def _query(self, q: str, args: tuple = ()) -> list[tuple]:
        try:
            return self.conn.execute(q, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"path: could not read {self.path} ({e})") from None


def _readonly_error(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return code in (8, 264, 520, 776, 1032, 1288) or "readonly" in str(e) or "read-only" in str(e)  # SQLITE_READONLY and its extended codes


def _one_type(col: pd.Series) -> pd.Series:
    """Parquet needs one type per column: a column mixing types (lists, or numbers and strings across
    sweeps) is written as JSON text; missing values stay missing."""
    if col.dtype != object:
        return col
    kinds = {type(v) for v in col if not _missing(v)}
    if len(kinds) <= 1 and not kinds & {list, dict}:
        return col
    return col.map(lambda v: v if _missing(v) else json.dumps(v))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))

