"""The claim registry: every checkable statement, with an id, a check and its negative controls.

A claim is registered with :func:`claim` as a decorator on its check function. The check takes
``quick`` (a small, fast configuration when True) and returns a :class:`Measurement`: the
measured figures, the verdict and its margins (measured value, threshold, how far apart).

Verdicts: ``holds``, ``fails``, ``inconclusive`` (the reachable scale cannot decide; the summary
says what scale would), ``error`` (the check crashed; reported, never hidden).

Ids by kind (the report gives each kind its own section): paper claims under ``limits.``,
``lora_ga.``, ``lora_plus.``; the toolkit's own guarantees under ``toolkit.``; audits of
third-party code under ``audit.``.

Negative controls: a control is a named, deliberate corruption of the *code under test* (a wrong
exponent, a dropped term, a wrong scale), registered with :func:`control` for one claim and
applied only for the duration of one check (``run_check(id, control=name)``). A check is worth
as much as its power to fail: every control must be *caught* (the check says "fails" or
crashes under it). A control corrupts the code under test, never the check's own reference.
An audit whose verdict is "fails" (third-party code that does not do what the paper says) gets
*positive* controls instead (``expect="holds"``): a correct implementation substituted for the
audited one must make the audit say "holds", so that its "fails" is about the code audited.

Claim modules are imported lazily the first time the registry is read (``CLAIM_MODULES``).

Example:
    >>> from lora_theory.claims import get_claim
    >>> get_claim("limits.lemma3.1").paper
    'limits'
"""
from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ContextManager, Literal
from unittest import mock

import pandas as pd

from .._registry import LazyRegistry
from .._validate import InvalidArgumentError

__all__ = [
    "CLAIM_MODULES", "KINDS", "PAPERS", "Claim", "Control", "Margin", "Measurement", "all_claims", "claim", "control", "get_claim", "patch",
    "run_check", "run_checks", "run_controls", "stop_at_first_violation",
]

#: Modules that register claims; missing ones (a paper not implemented yet) are skipped.
CLAIM_MODULES = ("lora_theory.claims.limits", "lora_theory.claims.lora_ga", "lora_theory.claims.lora_plus", "lora_theory.claims.finetune",
                 "lora_theory.claims.toolkit", "lora_theory.claims.audit")
PAPERS = {
    "limits": "Hu et al. 2024, Computational Limits of LoRA (arXiv 2406.03136)",
    "lora_ga": "Wang et al. 2024, LoRA-GA (arXiv 2407.05000)",
    "lora_plus": "Hayou et al. 2024, LoRA+ (arXiv 2402.12354)",
}
#: id prefix -> kind of claim: what a paper states, what this toolkit guarantees, what an audit of third-party code finds
KINDS = {**{p: "paper" for p in PAPERS}, "toolkit": "toolkit", "audit": "audit"}

Verdict = Literal["holds", "fails", "inconclusive", "error"]
_VERDICTS = ("holds", "fails", "inconclusive", "error")


@dataclass(frozen=True)
class Margin:
    """One pass condition ``measured <sense> threshold`` and how far apart the two are.

    ``slack`` is the signed distance in units of the threshold: positive on the passing side
    (``(threshold - measured) / |threshold|`` for "<=", the reverse for ">="), so a pass that
    depends on machine load shows as a small slack.
    """

    measured: float
    threshold: float
    sense: Literal["<=", ">="] = "<="

    @property
    def ok(self) -> bool:
        return bool(self.measured <= self.threshold) if self.sense == "<=" else bool(self.measured >= self.threshold)

    @property
    def slack(self) -> float:
        d = self.threshold - self.measured if self.sense == "<=" else self.measured - self.threshold
        scale = abs(self.threshold) if self.threshold else 1.0
        return d / scale if math.isfinite(d) else (math.inf if d > 0 else -math.inf)

    def __str__(self) -> str:
        """``measured <sense> threshold (how far apart)``, in the words that mean something for the pair.

        - whole-number counts below 10^6 (violations 0 <= 0, 8 of 8 >= 8): "exact" when they meet, else the
          difference ("2 to spare", "2 short"): a percentage of a count threshold of 0 or 8 says nothing;
        - values an order of magnitude or more apart on the same side of zero (an error of 1e-15
          against a tolerance of 1e-10; a ratio of 1089 against a floor of 1): the factor between
          them ("6.7e+04x below", "1.09e+03x above"), where the slack would read "+100%" or "+108870%";
        - otherwise the slack in percent of the threshold (see :attr:`slack`), which is where a
          pass that depends on machine load shows.
        """
        head = f"{self.measured:.3g} {self.sense} {self.threshold:.3g}"
        m, t = float(self.measured), float(self.threshold)
        if math.isfinite(m) and math.isfinite(t) and m.is_integer() and t.is_integer() and max(abs(m), abs(t)) < 1e6:
            d = int(t - m) if self.sense == "<=" else int(m - t)
            return f"{head} (exact)" if d == 0 else f"{head} ({abs(d)} {'to spare' if d > 0 else 'short'})"
        if math.isfinite(m) and math.isfinite(t) and m * t > 0:
            ratio = max(abs(m), abs(t)) / min(abs(m), abs(t))
            if ratio >= 10:
                where = "below" if abs(m) < abs(t) else "above"
                return f"{head} ({ratio:.2g}x {where})"
        return f"{head} (slack {self.slack:+.0%})"


@dataclass
class Measurement:
    """What a check measured: the figures, the verdict, a one-line summary and the margins behind it.

    ``holds`` is True / False, or None for "inconclusive". ``margins`` maps a condition's name to
    its :class:`Margin`; they are reported next to the verdict.
    """

    holds: bool | None
    figures: dict[str, Any]
    summary: str
    margins: dict[str, Margin] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return "inconclusive" if self.holds is None else ("holds" if self.holds else "fails")


@dataclass(frozen=True)
class Control:
    """A control of one claim: ``apply()`` is a context manager that changes the code under test.

    ``expect`` is the verdict the change must produce: "fails" (a negative control: a corruption
    the check must catch) or "holds" (a positive control of an audit: a correct implementation
    substituted for the audited one must pass).
    """

    claim: str
    name: str
    description: str
    apply: Callable[[], ContextManager[Any]] = field(repr=False)
    expect: Literal["fails", "holds"] = "fails"

    def caught(self, verdict: str) -> bool:
        """Whether the check under this control gave the expected answer ("fails"/"error" for a negative control)."""
        return verdict in ("fails", "error") if self.expect == "fails" else verdict == "holds"


@dataclass(frozen=True)
class Claim:
    """One claim: ``id`` (``prefix.name``), its statement, where it comes from, and its check."""

    id: str
    statement: str
    reference: str
    check: Callable[[bool], Measurement] = field(repr=False)
    figure: str | None = None
    test: str | None = None
    proof: str | None = None
    experiment: bool = False  # its check runs a fine-tuning experiment (tens of CPU minutes): quick defaults skip it

    @property
    def paper(self) -> str:
        """The id prefix: a paper (``limits``, ``lora_ga``, ``lora_plus``), ``toolkit`` or ``audit``."""
        return self.id.split(".", 1)[0]

    @property
    def kind(self) -> str:
        """``paper``, ``toolkit`` or ``audit``."""
        return KINDS[self.paper]

    @property
    def controls(self) -> list[Control]:
        """The negative controls registered for this claim, sorted by name."""
        _REGISTRY.names()  # loads the claim modules, which register the controls
        return [c for k, c in sorted(_CONTROLS.items()) if k[0] == self.id]


#: every registered claim, filled lazily from CLAIM_MODULES
_REGISTRY: LazyRegistry[Claim] = LazyRegistry("claim", CLAIM_MODULES)
_CONTROLS: dict[tuple[str, str], Control] = {}


def claim(id: str, *, statement: str, reference: str, figure: str | None = None, test: str | None = None, proof: str | None = None,
          experiment: bool = False):
    """Register the decorated ``check(quick: bool) -> Measurement`` under ``id``.

    ``figure`` names the registered figure that shows the claim, ``test`` the pytest node and
    ``proof`` the symbolic check in proofs_checks/ (``"proofs_checks/file.py::function"``).
    ``experiment`` marks a check that runs a fine-tuning experiment (tens of CPU minutes even in
    quick mode): ``reproduce --quick`` and ``check`` without ``--claim`` skip it unless asked
    (``--experiments``) and say so.
    """
    prefix = id.split(".", 1)[0]
    if prefix not in KINDS or "." not in id:
        raise InvalidArgumentError(f"id: expected '<prefix>.<name>' with prefix in {sorted(KINDS)}, got {id!r}")

    def deco(fn: Callable[[bool], Measurement]) -> Callable[[bool], Measurement]:
        _REGISTRY.add(id, Claim(id, " ".join(statement.split()), reference, fn, figure, test, proof, experiment), same=lambda a, b: a.check is b.check)
        return fn

    return deco


def control(claim_id: str, name: str, description: str, *, expect: Literal["fails", "holds"] = "fails"):
    """Register the decorated context-manager factory as control ``name`` of ``claim_id``.

    The factory takes no argument and returns a context manager (write it as a generator with
    ``@contextlib.contextmanager``, or return :func:`patch`) that corrupts the code under test
    while it is open. Example::

        @control("limits.lemma3.2", "no_scale", "dL/dA without the alpha/r factor")
        def _():
            return patch("lora_theory.limits.exact", "lora_chain", wrong_chain)

    ``expect="holds"`` registers a positive control (audits only; see :class:`Control`).
    """
    if expect not in ("fails", "holds"):
        raise InvalidArgumentError(f"expect: expected 'fails' or 'holds', got {expect!r}")

    def deco(factory: Callable[[], ContextManager[Any]]) -> Callable[[], ContextManager[Any]]:
        key = (claim_id, name)
        old = _CONTROLS.get(key)
        if old is not None and old.apply is not factory and old.apply.__qualname__ != factory.__qualname__:
            raise InvalidArgumentError(f"name: control {name!r} of {claim_id!r} is registered twice")
        _CONTROLS[key] = Control(claim_id, name, " ".join(description.split()), factory, expect)
        return factory

    return deco


def patch(module: str, attribute: str, replacement: Any) -> ContextManager[Any]:
    """``unittest.mock.patch`` of ``module.attribute`` (a dotted module path): the usual body of a control."""
    return mock.patch(f"{module}.{attribute}", replacement)


def all_claims() -> list[Claim]:
    """Every registered claim, sorted by id."""
    return _REGISTRY.all()


def get_claim(id: str) -> Claim:
    """The claim registered under ``id``; an InvalidArgumentError lists the known ids otherwise."""
    return _REGISTRY.get(id)


_UNDER_NEGATIVE_CONTROL = [False]


def stop_at_first_violation() -> bool:
    """Whether the running check may stop at its first decisive violation: True only under a negative control.

    A check whose verdict is "fails" as soon as one case violates its condition (a count of
    violations that must be 0) may stop there when this is True: under a negative control only the
    verdict matters (caught or not), and the rest of the cases cannot turn "fails" into "holds". A
    check run for its claim (and under a positive control) always measures every case, so its
    margins are complete. The summary of a check that stopped early should say so.
    """
    return _UNDER_NEGATIVE_CONTROL[0]


def _get_control(c: Claim, name: str) -> Control:
    names = [k.name for k in c.controls]
    if name not in names:
        raise InvalidArgumentError(f"control: expected one of {names} for {c.id}, got {name!r}")
    return _CONTROLS[(c.id, name)]


def run_check(c: Claim | str, *, quick: bool = True, control: str | None = None) -> dict[str, Any]:
    """Run one check (under negative control ``control`` if given); returns one tidy row.

    Row: id, paper, kind, statement, reference, verdict, summary, figures, margins (name ->
    "measured <= threshold (slack)"), figure, test, proof, seconds, error (traceback or None),
    control (its name or None).
    """
    c = get_claim(c) if isinstance(c, str) else c
    ctl = _get_control(c, control) if control is not None else None
    t0 = time.perf_counter()
    _UNDER_NEGATIVE_CONTROL[0] = ctl is not None and ctl.expect == "fails"
    try:
        with ctl.apply() if ctl else contextlib.nullcontext():
            m = c.check(quick)
        if not isinstance(m, Measurement):
            raise TypeError(f"check of {c.id}: expected a Measurement, got {type(m).__name__}")
        verdict: Verdict = m.verdict
        summary, figures, error = m.summary, m.figures, None
        margins = {k: str(v) for k, v in m.margins.items()}
    except Exception as e:  # a crashing check is reported, not hidden
        verdict, summary, figures, margins, error = "error", f"{type(e).__name__}: {e}", {}, {}, traceback.format_exc()
    finally:
        _UNDER_NEGATIVE_CONTROL[0] = False
    return {
        "id": c.id, "paper": c.paper, "kind": c.kind, "statement": c.statement, "reference": c.reference, "verdict": verdict,
        "summary": summary, "figures": figures, "margins": margins, "figure": c.figure, "test": c.test, "proof": c.proof,
        "seconds": time.perf_counter() - t0, "error": error, "control": control,
    }


_COLUMNS = ["id", "paper", "kind", "statement", "reference", "verdict", "summary", "figures", "margins", "figure", "test", "proof", "seconds",
            "error", "control"]


def run_checks(ids: Iterable[str] | None = None, *, quick: bool = True, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run the checks of ``ids`` (default: all) and return one tidy row per claim."""
    claims = all_claims() if ids is None else [get_claim(i) for i in ids]
    rows = []
    for c in claims:
        if progress is not None:
            progress(c.id)
        rows.append(run_check(c, quick=quick))
    return pd.DataFrame(rows, columns=_COLUMNS)


def run_controls(ids: Iterable[str] | None = None, *, quick: bool = True, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run every control of ``ids`` (default: all claims); one row per (claim, control).

    Columns: those of :func:`run_check` plus ``description``, ``expect`` and ``caught``: for a
    negative control the check did not say "holds" under the corruption ("fails", or "error" when
    the corruption crashed it); for a positive control (``expect="holds"``) it said "holds".
    """
    claims = all_claims() if ids is None else [get_claim(i) for i in ids]
    rows = []
    for c in claims:
        for ctl in c.controls:
            if progress is not None:
                progress(f"{c.id} / {ctl.name}")
            row = run_check(c, quick=quick, control=ctl.name)
            rows.append({**row, "description": ctl.description, "expect": ctl.expect, "caught": ctl.caught(row["verdict"])})
    return pd.DataFrame(rows, columns=[*_COLUMNS, "description", "expect", "caught"])

