"""Symbolic (sympy) checks of the papers' identities, one module per paper; see each module's docstring.

Every check raises :class:`ProofCheckFailed` (never a bare ``assert``, which ``python -O`` removes)
when an identity does not hold, and returns a dict of what it checked otherwise.
"""
from __future__ import annotations

__all__ = ["ProofCheckFailed", "require"]


class ProofCheckFailed(AssertionError):
    """An identity a proof check verifies does not hold (the message names it and where)."""


def require(condition: object, message: str) -> None:
    """Raise :class:`ProofCheckFailed` with ``message`` unless ``condition`` is true (survives ``python -O``)."""
    if not condition:
        raise ProofCheckFailed(message)
