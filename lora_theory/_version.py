"""The installed version of lora-theory (``0.0.0+unknown`` in a source tree that was not installed)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lora-theory")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
