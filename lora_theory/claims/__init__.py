"""The claim registry: every checkable statement of the three papers, with an id and a check.

A claim is registered with :func:`claim` as a decorator on its check function. The check
takes ``quick`` (a small, fast configuration when True) and returns a :class:`Measurement`:
the measured figures and whether the claim held. :func:`run_checks` runs any subset and
returns a tidy DataFrame, one row per claim.

Claim modules (one per paper) are imported lazily the first time the registry is read:
``lora_theory.claims.limits`` (Hu et al. 2024), ``lora_theory.claims.lora_ga`` (Wang et al.
2024) and ``lora_theory.claims.lora_plus`` (Hayou et al. 2024), where present.

Example:
    >>> from lora_theory.claims import get_claim
    >>> get_claim("limits.lemma3.1").paper
    'limits'
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from .._registry import LazyRegistry
from .._validate import InvalidArgumentError

__all__ = ["CLAIM_MODULES", "Claim", "Measurement", "all_claims", "claim", "get_claim", "run_check", "run_checks"]

#: Modules that register claims; missing ones (a paper not implemented yet) are skipped.
CLAIM_MODULES = ("lora_theory.claims.limits", "lora_theory.claims.lora_ga", "lora_theory.claims.lora_plus")
PAPERS = {
    "limits": "Hu et al. 2024, Computational Limits of LoRA (arXiv 2406.03136)",
    "lora_ga": "Wang et al. 2024, LoRA-GA (arXiv 2407.05000)",
    "lora_plus": "Hayou et al. 2024, LoRA+ (arXiv 2402.12354)",
}

Verdict = Literal["holds", "fails", "error"]


@dataclass
class Measurement:
    """What a check measured: the figures, whether the claim held, and a one-line summary."""

    holds: bool
    figures: dict[str, Any]
    summary: str


@dataclass(frozen=True)
class Claim:
    """One claim: ``id`` (``paper.name``), its statement, where it comes from, and its check."""

    id: str
    statement: str
    reference: str
    check: Callable[[bool], Measurement] = field(repr=False)
    figure: str | None = None
    test: str | None = None
    proof: str | None = None

    @property
    def paper(self) -> str:
        return self.id.split(".", 1)[0]


#: every registered claim, filled lazily from CLAIM_MODULES
_REGISTRY: LazyRegistry[Claim] = LazyRegistry("claim", CLAIM_MODULES)


def claim(id: str, *, statement: str, reference: str, figure: str | None = None, test: str | None = None, proof: str | None = None):
    """Register the decorated ``check(quick: bool) -> Measurement`` under ``id``.

    ``figure`` names the registered figure that shows the claim, ``test`` the pytest node and
    ``proof`` the symbolic check in proofs_checks/ (``"proofs_checks/file.py::function"``).
    """
    paper = id.split(".", 1)[0]
    if paper not in PAPERS or "." not in id:
        raise InvalidArgumentError(f"id: expected '<paper>.<name>' with paper in {sorted(PAPERS)}, got {id!r}")

    def deco(fn: Callable[[bool], Measurement]) -> Callable[[bool], Measurement]:
        _REGISTRY.add(id, Claim(id, " ".join(statement.split()), reference, fn, figure, test, proof), same=lambda a, b: a.check is b.check)
        return fn

    return deco


def all_claims() -> list[Claim]:
    """Every registered claim, sorted by id."""
    return _REGISTRY.all()


def get_claim(id: str) -> Claim:
    """The claim registered under ``id``; an InvalidArgumentError lists the known ids otherwise."""
    return _REGISTRY.get(id)


def run_check(c: Claim | str, *, quick: bool = True) -> dict[str, Any]:
    """Run one check; returns a row: id, paper, statement, verdict, summary, figures, seconds."""
    c = get_claim(c) if isinstance(c, str) else c
    t0 = time.perf_counter()
    try:
        m = c.check(quick)
        verdict: Verdict = "holds" if m.holds else "fails"
        summary, figures, error = m.summary, m.figures, None
    except Exception as e:  # a crashing check is reported, not hidden
        verdict, summary, figures, error = "error", f"{type(e).__name__}: {e}", {}, traceback.format_exc()
    return {
        "id": c.id,
        "paper": c.paper,
        "statement": c.statement,
        "reference": c.reference,
        "verdict": verdict,
        "summary": summary,
        "figures": figures,
        "figure": c.figure,
        "test": c.test,
        "proof": c.proof,
        "seconds": time.perf_counter() - t0,
        "error": error,
    }


def run_checks(ids: Iterable[str] | None = None, *, quick: bool = True, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run the checks of ``ids`` (default: all) and return one tidy row per claim."""
    claims = all_claims() if ids is None else [get_claim(i) for i in ids]
    rows = []
    for c in claims:
        if progress is not None:
            progress(c.id)
        rows.append(run_check(c, quick=quick))
    return pd.DataFrame(rows, columns=["id", "paper", "statement", "reference", "verdict", "summary", "figures", "figure", "test", "proof", "seconds", "error"])
