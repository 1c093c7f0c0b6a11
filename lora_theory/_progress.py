"""Progress of long loops (query-row blocks) for a caller's display: one hook, a no-op unless someone listens.

The row-blocked loops of the exact gradient (``limits.exact``) and of the low-rank driver
(``limits.lowrank``) call :func:`rows_done` once per block; ``lora-theory grad`` listens with
:func:`listen` and shows "row blocks done" on long runs. Without a listener the call is one global
lookup per block (blocks are >= about 2^18 scores, milliseconds each).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["listen", "rows_done"]

_listener: Callable[[str, int, int], None] | None = None


def rows_done(what: str, done: int, total: int) -> None:
    """Tell the listener (if any) that ``done`` of ``total`` query rows of the pass ``what`` are finished."""
    if _listener is not None:
        _listener(what, done, total)


@contextlib.contextmanager
def listen(fn: Callable[[str, int, int], None]) -> Iterator[None]:
    """Call ``fn(what, done_rows, total_rows)`` from the row-blocked loops while the block runs."""
    global _listener
    old, _listener = _listener, fn
    try:
        yield
    finally:
        _listener = old
