"""Output files: the toolkit never writes into a file it did not create, unless asked to (``force``).

The rule, the same for every file the toolkit writes (exports, reports, figures, tables):

- a path that does not exist may be written;
- an existing file may be overwritten only if this toolkit wrote it and nobody changed it since:
  the manifest of its folder, ``.lora-theory-outputs.json``, lists the file's name with the
  sha256 of what was written, and the file on disk still has that hash;
- anything else (a user's file, one of ours edited since, a symlink, a folder) is refused with
  :class:`OutputExistsError`, which names the path and says to pass ``--force`` (``force=True``).

Result stores are recognised by their SQLite ``application_id`` instead
(:class:`lora_theory.sweeps.ResultStore` refuses any other file). Writes go to a temporary file in
the same folder, then ``os.replace``, so a reader never sees half a file and a crash leaves the old
file intact.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ._validate import InvalidArgumentError

__all__ = ["MANIFEST", "OutputExistsError", "check_folder", "check_output", "is_ours", "record_output", "write_output"]

MANIFEST = ".lora-theory-outputs.json"
_KEY = "lora_theory_outputs"


class OutputExistsError(InvalidArgumentError):
    """An output path holds a file the toolkit did not write (or that changed since); pass force=True / --force."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):  # missing or unreadable: nothing in this folder is known to be ours
        return {}
    files = data.get(_KEY) if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise manifest updates of one folder between processes (flock on the folder itself)."""
    try:
        import fcntl  # optional: POSIX only
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def is_ours(path: str | Path) -> bool:
    """Whether ``path`` is a regular file this toolkit wrote and nobody changed since."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    want = _manifest(path.parent).get(path.name)
    return want is not None and want == _sha256(path)


def check_output(path: str | Path, *, force: bool = False, what: str = "output") -> Path:
    """Return ``path`` if the toolkit may write it (see the module docstring); raise otherwise.

    Args:
        path: the file to be written.
        force: allow overwriting any existing regular file (``--force``).
        what: the argument's name for the message (e.g. ``"--out"``).

    Raises:
        OutputExistsError: the path exists and is not ours (or is a folder or a symlink).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return path
    if path.is_dir() and not path.is_symlink():
        raise OutputExistsError(f"{what}: expected a file path, got the folder {path}")
    if force or is_ours(path):
        return path
    raise OutputExistsError(f"{what}: expected a new file or one lora-theory wrote (unchanged since), got {path}, which lora-theory "
                            "did not write or which changed since; pass --force to overwrite it")


def check_folder(folder: str | Path, *, what: str = "--out") -> Path:
    """Create ``folder`` (and parents) if needed and require that files can be written in it.

    Raises:
        InvalidArgumentError: it is a file, or cannot be created or written (names ``what``).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"{what}: expected a folder, got the file {folder}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidArgumentError(f"{what}: expected a folder that can be created, got {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{what}: expected a writable folder, got {folder} (permission denied)")
    return folder


def record_output(path: str | Path) -> None:
    """Note in the folder's manifest that the toolkit just wrote ``path`` (name -> sha256 of its content)."""
    path = Path(path)
    folder = path.parent
    with _locked(folder):
        files = _manifest(folder)
        files[path.name] = _sha256(path)
        tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({_KEY: files}, indent=1, sort_keys=True))
        os.replace(tmp, folder / MANIFEST)


def write_output(path: str | Path, write: Callable[[Path], object], *, force: bool = False, what: str = "output") -> Path:
    """Check ``path`` (:func:`check_output`), write it through ``write(tmp_path)`` atomically, record it; return it."""
    path = check_output(path, force=force, what=what)
    folder = check_folder(path.parent if str(path.parent) else Path("."), what=what)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record_output(path)
    return path
