"""The report of ``lora-theory reproduce``: every claim's check and every figure, in one folder.

Writes ``OUT/report.md`` (one section per kind of claim: the papers' claims, the toolkit's own
guarantees, audits of third-party code; one row per claim: id, statement, measured figure, verdict,
margins, "controls caught: k of n", links to its figure, test and proof check; then the negative
controls, then the figures inline), ``OUT/results.json`` (the same, machine readable) and
``OUT/figures/NAME.{png,csv}``.
"""
from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pandas as pd
import torch

from . import _json
from ._memory import reuse_freed_memory
from ._outputs import check_folder, check_output, record_output
from ._version import __version__
from .claims import KINDS, PAPERS, all_claims, get_claim, run_check
from .studies import all_figures, get_figure, render
from .sweeps import ResultStore, run_sweep

__all__ = ["EXIT_ERROR", "EXIT_FAILS", "EXIT_OK", "broken_promises", "exit_status", "findings", "reproduce", "write_report"]

#: exit statuses of every command (see :func:`exit_status`); 2 is bad usage or input (the CLI's)
EXIT_OK, EXIT_FAILS, EXIT_ERROR = 0, 1, 3


def exit_status(results: pd.DataFrame, figure_errors: dict[str, str] | None = None, *, controls: pd.DataFrame | None = None,
                strict: bool = True) -> int:
    """The exit status of a run of claim checks (``check`` and ``reproduce``).

    3 (:data:`EXIT_ERROR`) when something errored: a check crashed, its sweep point failed (worker
    died, timeout) or a figure could not be computed or drawn. Else 1 (:data:`EXIT_FAILS`) when a
    promise of the toolkit itself is broken: a ``toolkit.*`` claim that does not hold, or a
    negative control that was not caught (the check could not have failed). Else, with ``strict``,
    1 when any claim fails; without it, a paper or audit claim that fails is a *finding* (the
    report and the summary show it), not a failure of the run. Else 0. An "inconclusive" paper
    claim is not a failure: the check ran and its premise check could not decide (the report says why).

    ``reproduce`` calls this with ``strict=False`` (``--strict`` restores exit 1 for findings);
    ``check --claim ID`` with ``strict=True``: the claims a user asked about decide its status.
    """
    if (results.verdict == "error").any() or figure_errors:
        return EXIT_ERROR
    if len(broken_promises(results, controls)):
        return EXIT_FAILS
    return EXIT_FAILS if strict and (results.verdict == "fails").any() else EXIT_OK


def broken_promises(results: pd.DataFrame, controls: pd.DataFrame | None = None) -> list[str]:
    """The toolkit's own promises that a run found broken: ``toolkit.*`` claims whose verdict is not
    "holds", and ``claim/control`` names of negative (or positive) controls that were not caught."""
    ids = results.id if "id" in results else pd.Series([""] * len(results))
    kinds = results.kind if "kind" in results else ids.str.split(".").str[0].map(KINDS)
    out = [f"{i} ({v})" for i, k, v in zip(ids, kinds, results.verdict, strict=True) if k == "toolkit" and v != "holds"]
    if controls is not None and len(controls):
        out += [f"{r.id}/{r.control} (not caught)" for r in controls.itertuples() if not bool(r.caught)]
    return out


def findings(results: pd.DataFrame) -> list[str]:
    """Ids of paper and audit claims that fail: results about the papers or third-party code, shown in the report."""
    ids = results.id if "id" in results else pd.Series([""] * len(results))
    kinds = results.kind if "kind" in results else ids.str.split(".").str[0].map(KINDS)
    return [i for i, k, v in zip(ids, kinds, results.verdict, strict=True) if k != "toolkit" and v == "fails"]


def _md_escape(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


_KIND_TITLES = {"paper": "Claims of the papers", "toolkit": "The toolkit's own guarantees", "audit": "Audits of third-party code"}


def _controls_cell(cid: str, controls: pd.DataFrame | None) -> str:
    if controls is None or not len(controls):
        return "not run"
    mine = controls[controls.id == cid]
    if not len(mine):
        return "none"
    caught = int(mine.caught.sum())
    missed = ", ".join(f"`{n}`" for n in mine.control[~mine.caught.astype(bool)])
    return f"{caught} of {len(mine)}" + (f" (not caught: {missed})" if missed else "")


def _margins_cell(margins: object) -> str:
    if not isinstance(margins, dict) or not margins:
        return ""
    return "; ".join(f"{k}: {v}" for k, v in margins.items())


def _work_seconds(results: pd.DataFrame, controls: pd.DataFrame | None, figures: dict[str, dict]) -> tuple[float, str]:
    """(compute seconds summed over the stored points behind a report, what they are) for its header."""
    parts, total = [], 0.0
    for label, secs in (("claim checks", results.seconds if "seconds" in results else None),
                        ("controls", controls.seconds if controls is not None and "seconds" in controls else None),
                        ("figure tables", pd.Series([float(v["seconds"]) for v in figures.values() if "seconds" in v], dtype=float))):
        if secs is not None and len(secs):
            total += float(pd.to_numeric(secs, errors="coerce").fillna(0).sum())
            parts.append(f"{len(secs)} {label}")
    return total, ", ".join(parts)


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{int(s // 60)} min {s % 60:02.0f} s"


def write_report(results: pd.DataFrame, figures: dict[str, dict], out: Path, *, mode: str, seconds: float,
                 controls: pd.DataFrame | None = None, skipped: dict[str, list[str]] | None = None, strict: bool = False) -> Path:
    """Write report.md and results.json from the checks table, the controls table and the rendered figures.

    Args:
        results: one row per claim (:func:`lora_theory.claims.run_checks` columns).
        figures: {name: render info (with its compute "seconds" when known) or {"error": ...}}.
        out: the output folder.
        mode: for the header.
        seconds: wall seconds of this invocation; the header also gives the compute time of the work
            behind the report (the stored points' seconds summed, earlier invocations included).
        controls: one row per (claim, control) (:func:`lora_theory.claims.run_controls` columns:
            id, control, verdict, caught, ...), or None when the controls were not run.
        skipped: {"claims": ids, "figures": names} not run in this mode (the fine-tuning experiment).
        strict: the exit-status rule the run uses (see :func:`exit_status`), said in the summary.
    """
    out.mkdir(parents=True, exist_ok=True)
    counts = results.verdict.value_counts()
    work, work_what = _work_seconds(results, controls, figures)
    found, broken = findings(results), broken_promises(results, controls)
    code = exit_status(results, {k: v["error"] for k, v in figures.items() if "error" in v}, controls=controls, strict=strict)
    summary = f"**{counts.get('holds', 0)} of {len(results)} claims hold**"
    if found:
        summary += f"; findings (claims of the papers or audits that fail): {', '.join(found)}"
    others = results[~results.id.isin(found)]
    for v in ("fails", "inconclusive", "error"):  # "fails" here: a toolkit claim (a broken promise)
        if (others.verdict == v).any():
            summary += f"; {v}: {', '.join(others.id[others.verdict == v])}"
    if controls is not None and len(controls):
        missed = controls[~controls.caught.astype(bool)]
        summary += (f"; negative controls caught: {int(controls.caught.sum())} of {len(controls)}"
                    + (f" (not caught: {', '.join(f'{r.id}/{r.control}' for r in missed.itertuples())})" if len(missed) else ""))
    summary += "."
    if code == EXIT_ERROR:
        verdict_line = f"Exit status {code}: something errored (the rows marked error say what; a re-run runs them again)."
    elif broken:
        verdict_line = f"Exit status {code}: a promise of the toolkit itself is broken: {', '.join(broken)}."
    elif found and strict:
        verdict_line = f"Exit status {code} (`--strict`): some claims fail."
    else:
        verdict_line = (f"Exit status {code}: the toolkit's own guarantees hold"
                        + (" and every negative control was caught" if controls is not None and len(controls) else "")
                        + ("; the findings above are results about the papers or third-party code, not failures of the run "
                           "(`--strict` makes them exit 1)" if found else "") + ".")
    lines = [
        "# lora-theory report",
        "",
        f"lora-theory {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads; mode `{mode}`.",
        "",
        f"Time: the work behind this report {_fmt_seconds(work)} (each stored point's own seconds, summed over {work_what or 'no points'}; "
        f"points that ran in parallel and earlier invocations that this one resumed included); this invocation {_fmt_seconds(seconds)} wall.",
        "",
        summary,
        "",
        verdict_line,
    ]
    skipped = {k: v for k, v in (skipped or {}).items() if v}
    if skipped:
        lines += ["", "**Not run in this mode** (they fine-tune MiniLM: about 30 CPU-minutes on 2 cores for the quick budget, resumable): "
                  + "; ".join(f"{k}: {', '.join(f'`{x}`' for x in v)}" for k, v in skipped.items())
                  + ". Run them with `lora-theory reproduce --experiments` (or `python -m lora_theory.finetune --quick --jobs 2 "
                  "--part main --part ablation --part ratio`, then the same reproduce reads the stored runs)."]
    kinds = results.kind if "kind" in results else results.id.str.split(".").str[0].map(KINDS)
    for kind, title in _KIND_TITLES.items():
        part = results[kinds == kind]
        if not len(part):
            continue
        lines += ["", f"## {title}", "", "| id | statement | measured | verdict | margins | controls caught | figure | test, proof check |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in part.itertuples():
            name = row.figure if isinstance(row.figure, str) else ""
            fig = f"[{name}](figures/{name}.png)" if name in figures else name
            checks = " ".join(f"`{x}`" for x in (row.test, row.proof) if isinstance(x, str) and x)
            lines.append(f"| `{row.id}` | {_md_escape(row.statement)} | {_md_escape(row.summary)} | **{row.verdict}** | {_md_escape(_margins_cell(row.margins))} | "
                         f"{_controls_cell(row.id, controls)} | {fig} | {checks} |")
    if controls is not None and len(controls):
        lines += ["", "## Negative controls", "", "Each control corrupts the code under test for one check (a positive control of an audit "
                  "substitutes a correct implementation, and must hold); caught = the check gave the expected verdict.", "",
                  "| claim | control | corruption | verdict under control | caught |", "|---|---|---|---|---|"]
        for r in controls.itertuples():
            lines.append(f"| `{r.id}` | `{r.control}` | {_md_escape(r.description)} | {r.verdict} | {'yes' if r.caught else '**no**'} |")
    lines += ["", "Papers: " + "; ".join(f"`{k}`: {v}" for k, v in PAPERS.items()), "", "## Figures", ""]
    for name, info in figures.items():
        if "error" in info:
            lines += [f"### {name}", "", f"failed: `{_md_escape(info['error'])}`", ""]
        else:
            lines += [f"### {name}", "", info["description"], "", f"Claims: {', '.join(f'`{c}`' for c in info['claims'])}", "", f"![{name}](figures/{name}.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    payload = {
        "mode": mode,
        "seconds": seconds,  # wall seconds of this invocation
        "work_seconds": work,  # compute seconds summed over the stored points behind the report
        "exit_status": code,
        "strict": strict,
        "findings": found,
        "broken_promises": broken,
        "claims": results.drop(columns=["error"]).to_dict("records"),  # raw values: _json.dumps names each non-finite one
        "errors": {r.id: r.error for r in results.itertuples() if r.error},
        "skipped": skipped,
        "controls": [] if controls is None else json.loads(controls.drop(columns=[c for c in ("error", "figures") if c in controls]).to_json(orient="records")),
        "figures": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in figures.items()},
    }
    (out / "results.json").write_text(_json.dumps(payload))  # strict JSON: a non-finite figure is null, listed under "nonfinite"
    return report


def _stored_count(store: Path, sweep: str, points: list[dict]) -> int:
    """How many of ``points`` the store already holds (finished or failed): a resumed run's head start."""
    from .sweeps.grid import point_hash

    if not Path(store).exists():
        return 0
    with ResultStore(store, readonly=True) as st:
        done = st.done(sweep, include_failed=True)
    return sum(point_hash(sweep, p, 0) in done for p in points)


def _sweep(kind: str, fn, points: list[dict], store: Path, sweep: str, tracker, describe: Callable[[dict, dict | None, str | None], tuple[str, str]],
           **options) -> None:
    """run_sweep with the tracker told the total, the points already stored, and each point as it is stored."""
    if tracker is not None:
        tracker.plan(kind, len(points), _stored_count(store, sweep, points))

    def on_result(params: dict, metrics: dict | None, error: str | None, seconds: float) -> None:
        if tracker is not None:
            tracker.done(kind, *describe(params, metrics, error), seconds)

    if run_sweep(fn, points, store, name=sweep, progress=False, on_result=on_result, **options).get("interrupted"):
        raise KeyboardInterrupt  # Ctrl-C / SIGTERM: finished points are stored, a re-run resumes


def _preload() -> None:
    """Import the heavy modules that checks and studies import lazily (transformers, peft) once, in the coordinator:
    forked workers inherit them instead of each importing them again (seconds of CPU per worker and sweep)."""
    import importlib

    for name in ("lora_theory.limits.regime", "lora_theory.lora_ga.audit", "lora_theory.lora.pretrained"):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional dependency missing: the check that needs it reports it
            pass


def figure_point(figure: str, quick: bool) -> dict:
    """One figure's study as a sweep point: its tidy table, stored as JSON (redrawn without recomputing)."""

    return {"table": get_figure(figure).compute(quick).to_json(orient="split", double_precision=15)}


def stored_figure_tables(store: str | Path, mode: str | None = None) -> dict[str, pd.DataFrame]:
    """{figure name: table} from a reproduce store (``mode`` "quick" / "full"; default: whatever is there, full first)."""


    tables: dict[str, pd.DataFrame] = {}
    with ResultStore(store, readonly=True) as st:
        df = st.load()
    if not len(df) or "figure" not in df:
        return tables
    df = df[df._sweep.str.startswith("figures-") & df._error.isna()]
    if mode is not None:
        df = df[df._sweep == f"figures-{mode}"]
    for row in df.sort_values("_sweep", ascending=False).itertuples():  # "figures-quick" after "figures-full": full wins
        if row.figure not in tables:
            tables[row.figure] = pd.read_json(StringIO(row.table), orient="split")
    return tables


def _figure_specs(names: list[str] | None) -> list:
    for n in names or []:
        get_figure(n)  # an unknown name is an error, not silently skipped
    return [s for s in all_figures() if names is None or s.name in names]


def _render_figures(out: Path, store: Path, mode: str, quick: bool, names: list[str] | None, jobs: int, executor: str,
                    progress: Callable[[str], None] | None, sweep_options: dict, tracker=None) -> dict[str, dict]:

    specs = _figure_specs(names)
    if progress:
        progress(f"computing {len(specs)} figures ({mode})")
    _sweep("figures", figure_point, [{"figure": s.name, "quick": quick} for s in specs], store, f"figures-{mode}", tracker,
           lambda p, m, e: (p["figure"], "failed" if e else "done"), jobs=jobs, executor=executor, **sweep_options)
    tables = stored_figure_tables(store, mode)
    with ResultStore(store, readonly=True) as st:
        errors = st.load(f"figures-{mode}")
    rendered: dict[str, dict] = {}
    for spec in specs:
        try:
            if spec.name not in tables:
                err = errors[errors.figure == spec.name]._error
                raise RuntimeError(err.iloc[-1].strip().splitlines()[-1] if len(err) and isinstance(err.iloc[-1], str) else "no stored table")
            if progress:
                progress(f"figure {spec.name}")
            paths = render(spec.name, out / "figures", data=tables[spec.name])
            for path in paths.values():
                record_output(path)  # ours: a later run may overwrite it (see lora_theory._outputs)
            secs = errors._seconds[errors.figure == spec.name]
            rendered[spec.name] = {**paths, "description": spec.description, "claims": spec.claims,
                                   "seconds": float(secs.iloc[-1]) if len(secs) else 0.0}
        except Exception as e:  # a failing figure is reported in the report, the run goes on
            rendered[spec.name] = {"error": f"{type(e).__name__}: {e}", "description": spec.description, "claims": spec.claims}
    return rendered


def check_point(claim: str, quick: bool, control: str | None = None) -> dict:
    """One claim check (under negative control ``control`` if given) as a sweep point (module-level so worker processes can run it)."""
    row = run_check(claim, quick=quick, control=control)
    row["figures"] = json.loads(json.dumps(row["figures"], default=str))  # JSON-safe for the store
    return {k: row[k] for k in ("verdict", "summary", "figures", "margins", "seconds", "error")}


def _discard_errored(store: Path, sweep: str) -> None:
    """Forget the stored checks of ``sweep`` whose verdict is "error" (the check raised), so this run runs them again."""
    with ResultStore(store) as st:
        stored = st.load(sweep)
        if len(stored) and "verdict" in stored:
            st.discard(sweep, stored[(stored.verdict == "error") & stored._error.isna()]._hash)


def _run_controls(ids: list[str], store: Path, mode: str, quick: bool, jobs: int, executor: str, sweep_options: dict, tracker=None) -> pd.DataFrame:
    """Every control of ``ids`` through the sweep engine (stored, resumable, parallel); one row per (claim, control)."""
    specs = [(c, ctl) for c in map(get_claim, ids) for ctl in c.controls]
    if not specs:
        return pd.DataFrame(columns=["id", "control", "description", "expect", "verdict", "summary", "caught"])
    points = [{"claim": c.id, "quick": quick, "control": ctl.name} for c, ctl in specs]
    sweep = f"controls-{mode}"
    _discard_errored(store, sweep)
    ctls = {(c.id, ctl.name): ctl for c, ctl in specs}

    def describe(p: dict, m: dict | None, e: str | None) -> tuple[str, str]:
        verdict = "error" if e else (m or {}).get("verdict", "done")
        return f"{p['claim']}/{p['control']}", f"{verdict}, " + ("caught" if ctls[(p["claim"], p["control"])].caught(verdict) else "NOT caught")

    _sweep("controls", check_point, points, store, sweep, tracker, describe, jobs=jobs, executor=executor, **sweep_options)
    with ResultStore(store, readonly=True) as st:
        stored = st.load(f"controls-{mode}").drop_duplicates(["claim", "control"], keep="last").set_index(["claim", "control"])
    rows = []
    for c, ctl in specs:
        r = stored.loc[(c.id, ctl.name)]
        verdict = "error" if isinstance(r["_error"], str) else r["verdict"]
        summary = r["_error"].strip().splitlines()[-1] if isinstance(r["_error"], str) else r["summary"]
        rows.append({"id": c.id, "control": ctl.name, "description": ctl.description, "expect": ctl.expect, "verdict": verdict, "summary": summary,
                     "seconds": float(r["_seconds"]), "caught": ctl.caught(verdict)})
    return pd.DataFrame(rows)


def select(claims: list[str] | None, figures: list[str] | None, experiments: bool) -> tuple[list[str], list[str] | None, dict[str, list[str]]]:
    """(claim ids, figure names or None for all, skipped) for :func:`reproduce`.

    Named claims and figures are taken as given (unknown names raise); when none are named, every
    registered one is taken except, unless ``experiments``, those marked ``experiment``, which are
    returned in ``skipped`` ({"claims": [...], "figures": [...]}) for the report to name.
    """
    ids = [c.id for c in all_claims() if experiments or not c.experiment] if claims is None else [get_claim(i).id for i in claims]
    skipped = {"claims": [c.id for c in all_claims() if c.id not in ids] if claims is None else [],
               "figures": [s.name for s in all_figures() if s.experiment and not experiments] if figures is None else []}
    if figures is None and not experiments:
        figures = [s.name for s in all_figures() if not s.experiment]
    return ids, figures, skipped


def reproduce(out: str | Path = "results", *, quick: bool = True, claims: list[str] | None = None,
              figures: list[str] | None = None, progress: Callable[[str], None] | None = None,
              jobs: int = 1, executor: str = "inprocess", retry_failed: bool = False, max_retries: int = 2,
              point_timeout: float | None = None, force: bool = False, controls: bool = True,
              experiments: bool | None = None, strict: bool = False, tracker=None) -> tuple[pd.DataFrame, Path]:
    """Run every claim check and its negative controls, render every figure into ``out``; return (table, report path).

    ``experiments`` (default: ``not quick``): also run the claims and figures marked ``experiment``
    (the fine-tuning experiment, tens of CPU minutes even on its quick budget; its runs are stored in
    :func:`lora_theory.finetune.experiment.store_path` and resume). When they are skipped, the report
    lists them under "Not run in this mode" with the command that runs them; claims or figures named
    in ``claims`` / ``figures`` always run.

    Claim checks and figure studies run through the sweep engine into ``out/store.sqlite``: each
    finished check and each figure's table is committed as it finishes, so an interrupted run
    resumes without redoing them (``jobs`` > 1 with a process or Dask executor runs them in
    parallel), and ``lora-theory figures --from OUT/store.sqlite`` redraws without recomputing.
    Several ``reproduce`` runs on one ``out`` share the work (each check is leased before it runs).

    A check that errored (verdict "error": it raised) is run again by the next invocation; a point
    that failed in the engine (its worker died ``max_retries + 1`` times, or it ran past
    ``point_timeout`` seconds) and a figure whose study raised are kept as failed unless
    ``retry_failed``. Nothing is computed before every argument and output path is checked: ``out``
    must be a writable folder, and its report, results and figure files may be overwritten only if
    this toolkit wrote them (see :mod:`lora_theory._outputs`) or with ``force``.

    The table's ``attrs["figure_errors"]`` maps each figure that failed to its error and
    ``attrs["controls"]`` holds the controls table; pass them to :func:`exit_status` (with ``strict``)
    for the exit status, which the report also states.

    ``tracker`` (optional) is told the work as it goes: ``tracker.plan(kind, total, already_stored)``
    before each of "claims", "controls", "figures", and ``tracker.done(kind, name, status, seconds)``
    as each point is stored (the CLI's live display and plain progress lines).
    With ``controls`` every negative control of the checked claims runs the same way (sweep
    ``controls-MODE``); the report shows "controls caught: k of n" per claim and a controls table.
    """

    t0 = time.perf_counter()
    reuse_freed_memory()  # system time: page faults of tensors' memory returned to the OS and faulted in again (see _memory)
    mode = "quick" if quick else "full"
    ids, figures, skipped = select(claims, figures, (not quick) if experiments is None else experiments)  # unknown names: nothing created
    specs = _figure_specs(figures)
    out = check_folder(out, what="out")
    for path in [out / "report.md", out / "results.json", *(out / "figures" / f"{s.name}.{ext}" for s in specs for ext in ("csv", "png"))]:
        check_output(path, force=force, what="out")
    if point_timeout is not None and executor == "inprocess":
        executor = "process"  # only a worker process can be killed when a point hangs
    sweep_options = {"retry_failed": retry_failed, "max_retries": max_retries, "point_timeout": point_timeout}
    if executor == "process":
        _preload()
    store = out / "store.sqlite"
    sweep = f"claims-{mode}"
    _discard_errored(store, sweep)  # also refuses a foreign or read-only store, before any work
    if progress:
        progress(f"checking {len(ids)} claims ({mode})")
    if tracker is not None:  # every total up front, so the display's estimate covers the whole job
        tracker.plan("claims", len(ids), _stored_count(store, sweep, [{"claim": i, "quick": quick} for i in ids]))
        if controls:
            ctl_points = [{"claim": c.id, "quick": quick, "control": ctl.name} for c in map(get_claim, ids) for ctl in c.controls]
            tracker.plan("controls", len(ctl_points), _stored_count(store, f"controls-{mode}", ctl_points))
        tracker.plan("figures", len(specs), _stored_count(store, f"figures-{mode}", [{"figure": s.name, "quick": quick} for s in specs]))
    _sweep("claims", check_point, [{"claim": i, "quick": quick} for i in ids], store, sweep, tracker,
           lambda p, m, e: (p["claim"], "error" if e else (m or {}).get("verdict", "done")), jobs=jobs, executor=executor, **sweep_options)
    with ResultStore(store, readonly=True) as st:
        stored = st.load(sweep)
    stored = stored[stored.claim.isin(ids)].drop_duplicates("claim", keep="last").set_index("claim")
    rows = []
    for i in ids:
        c = get_claim(i)
        r = stored.loc[i]
        failed_point = isinstance(r["_error"], str)
        rows.append({"id": c.id, "paper": c.paper, "kind": c.kind, "statement": c.statement, "reference": c.reference,
                     "verdict": "error" if failed_point else r["verdict"], "summary": r["_error"].strip().splitlines()[-1] if failed_point else r["summary"],
                     "figures": {} if failed_point else r["figures"], "margins": {} if failed_point else (r.get("margins") or {}), "figure": c.figure, "test": c.test, "proof": c.proof,
                     "seconds": float(r["_seconds"]), "error": r["_error"] if failed_point else r.get("error")})
    results = pd.DataFrame(rows)
    ctl_table = None
    if controls:
        if progress:
            progress(f"running the negative controls of {len(ids)} claims ({mode})")
        ctl_table = _run_controls(ids, store, mode, quick, jobs, executor, sweep_options, tracker)
    rendered = _render_figures(out, store, mode, quick, figures, jobs, executor, progress, sweep_options, tracker)
    report = write_report(results, rendered, out, mode=mode, seconds=time.perf_counter() - t0, controls=ctl_table, skipped=skipped, strict=strict)
    record_output(report)
    record_output(out / "results.json")
    results.attrs["figure_errors"] = {k: v["error"] for k, v in rendered.items() if "error" in v}
    results.attrs["controls"] = ctl_table
    return results, report
