"""The report of ``lora-theory reproduce``: every claim's check and every figure, in one folder.

Writes ``OUT/report.md`` (one row per claim: id, paper, statement, measured figure, verdict,
links to its figure and test; then the figures inline), ``OUT/results.json`` (the same, machine
readable) and ``OUT/figures/NAME.{png,csv}``.
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

from ._version import __version__
from .claims import PAPERS, all_claims, get_claim, run_check
from .studies import all_figures, get_figure, render
from .sweeps import ResultStore, run_sweep

__all__ = ["reproduce", "write_report"]


def _md_escape(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def write_report(results: pd.DataFrame, figures: dict[str, dict], out: Path, *, mode: str, seconds: float) -> Path:
    """Write report.md and results.json from the checks table and the rendered figures."""


    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# lora-theory report",
        "",
        f"lora-theory {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads; mode `{mode}`; {seconds:.0f} s.",
        "",
        f"**{(results.verdict == 'holds').sum()} of {len(results)} claims hold**"
        + (f"; fails: {', '.join(results.id[results.verdict == 'fails'])}" if (results.verdict == "fails").any() else "")
        + (f"; errors: {', '.join(results.id[results.verdict == 'error'])}" if (results.verdict == "error").any() else ""),
        "",
        "| id | paper | statement | measured | verdict | figure | test, proof check |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results.itertuples():
        name = row.figure if isinstance(row.figure, str) else ""
        fig = f"[{name}](figures/{name}.png)" if name in figures else name
        checks = " ".join(f"`{x}`" for x in (row.test, row.proof) if isinstance(x, str) and x)
        lines.append(f"| `{row.id}` | {row.paper} | {_md_escape(row.statement)} | {_md_escape(row.summary)} | **{row.verdict}** | {fig} | {checks} |")
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
        "seconds": seconds,
        "claims": json.loads(results.drop(columns=["error"]).to_json(orient="records")),
        "errors": {r.id: r.error for r in results.itertuples() if r.error},
        "figures": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in figures.items()},
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    return report


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


def _render_figures(out: Path, store: Path, mode: str, quick: bool, names: list[str] | None, jobs: int, executor: str,
                    progress: Callable[[str], None] | None) -> dict[str, dict]:

    specs = [s for s in all_figures() if names is None or s.name in names]
    for n in names or []:
        get_figure(n)  # an unknown name is an error, not silently skipped
    if progress:
        progress(f"computing {len(specs)} figures ({mode})")
    if run_sweep(figure_point, [{"figure": s.name, "quick": quick} for s in specs], store, name=f"figures-{mode}", jobs=jobs, executor=executor,
                 progress=False).get("interrupted"):
        raise KeyboardInterrupt  # Ctrl-C / SIGTERM: finished tables are stored, a re-run resumes
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
            rendered[spec.name] = {**paths, "description": spec.description, "claims": spec.claims}
        except Exception as e:  # a failing figure is reported in the report, the run goes on
            rendered[spec.name] = {"error": f"{type(e).__name__}: {e}", "description": spec.description, "claims": spec.claims}
    return rendered


def check_point(claim: str, quick: bool) -> dict:
    """One claim check as a sweep point (module-level so worker processes can run it)."""
    row = run_check(claim, quick=quick)
    row["figures"] = json.loads(json.dumps(row["figures"], default=str))  # JSON-safe for the store
    return {k: row[k] for k in ("verdict", "summary", "figures", "margins", "seconds", "error")}


def reproduce(out: str | Path = "results", *, quick: bool = True, claims: list[str] | None = None,
              figures: list[str] | None = None, progress: Callable[[str], None] | None = None,
              jobs: int = 1, executor: str = "inprocess") -> tuple[pd.DataFrame, Path]:
    """Run every claim check and render every figure into ``out``; return (table, report path).

    Claim checks and figure studies run through the sweep engine into ``out/store.sqlite``: each
    finished check and each figure's table is committed as it finishes, so an interrupted run
    resumes without redoing them (``jobs`` > 1 with a process or Dask executor runs them in
    parallel), and ``lora-theory figures --from OUT/store.sqlite`` redraws without recomputing.
    """

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if quick else "full"
    ids = [c.id for c in all_claims()] if claims is None else [get_claim(i).id for i in claims]
    if progress:
        progress(f"checking {len(ids)} claims ({mode})")
    store = out / "store.sqlite"
    if run_sweep(check_point, [{"claim": i, "quick": quick} for i in ids], store, name=f"claims-{mode}", jobs=jobs, executor=executor,
                 progress=False).get("interrupted"):
        raise KeyboardInterrupt  # Ctrl-C / SIGTERM: finished checks are stored, a re-run resumes
    with ResultStore(store, readonly=True) as st:
        stored = st.load(f"claims-{mode}")
    stored = stored[stored.claim.isin(ids)].drop_duplicates("claim", keep="last").set_index("claim")
    rows = []
    for i in ids:
        c = get_claim(i)
        r = stored.loc[i]
        failed_point = isinstance(r["_error"], str)
        rows.append({"id": c.id, "paper": c.paper, "kind": c.kind, "statement": c.statement, "reference": c.reference,
                     "verdict": "error" if failed_point else r["verdict"], "summary": r["_error"].splitlines()[-1] if failed_point else r["summary"],
                     "figures": {} if failed_point else r["figures"], "margins": {} if failed_point else (r.get("margins") or {}), "figure": c.figure, "test": c.test, "proof": c.proof,
                     "seconds": float(r["_seconds"]), "error": r["_error"] if failed_point else r.get("error")})
    results = pd.DataFrame(rows)
    rendered = _render_figures(out, store, mode, quick, figures, jobs, executor, progress)
    report = write_report(results, rendered, out, mode=mode, seconds=time.perf_counter() - t0)
    return results, report
