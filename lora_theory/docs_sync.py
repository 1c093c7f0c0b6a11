"""One source for every stated number: the measured values in README.md and paper_notes/*.md are
generated from committed results by code, never typed by hand.

A generated span in the markdown is delimited by two HTML comments (invisible when rendered)::

    <!-- generated:NAME -->TEXT<!-- /generated:NAME -->          (inline: TEXT is one line)

    <!-- generated:NAME -->
    TEXT                                                         (block: TEXT is whole lines)
    <!-- /generated:NAME -->

NAME is a registered section, optionally with an argument after a slash
(``claim_measured/limits.lemma3.1``). The registry :data:`SECTIONS` maps each section to a
function ``(stored, arg) -> markdown``; it reads only committed files through :class:`Stored`
(``stored/quick/results.json``, the quick ``lora-theory reproduce`` report; ``figures/*.csv``;
``benchmarks/*.json``) and formats their numbers. Adding a section is one decorated function::

    @section("init_ratio")
    def _init_ratio(stored: Stored, arg: str | None) -> str:
        df = stored.csv("figures/finetune_init_memory.csv").set_index("what")
        return f"{df.seconds['lora_ga_init'] / df.seconds['lora_step']:.1f}x"

``python -m lora_theory.docs_sync --check`` (``lora-theory notes --check``) exits 1 and prints the
diff when a committed span differs from what the committed results produce (the test
``tests/test_docs_sync.py`` runs it); ``--write`` rewrites the spans in place. Refreshing a number
therefore means refreshing its stored result (re-run the study / reproduce, commit its CSV / JSON),
then ``--write``.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

__all__ = ["DOCS", "SECTIONS", "SectionError", "Span", "Stored", "check", "main", "render", "section", "spans", "sync"]

#: the repository root (README.md, paper_notes/, figures/, stored/ live here in a checkout)
ROOT = Path(__file__).resolve().parents[1]
#: the documents whose generated spans are kept in sync (globs relative to the root)
DOCS = ("README.md", "paper_notes/*.md", "benchmarks/README.md")
#: the stored quick reproduce report the claims table and the claims' measured values come from
QUICK_RESULTS = "stored/quick/results.json"
#: how that report was made (command, commit, date, CPU time, machine load), written beside it
QUICK_RUN = "stored/quick/RUN.json"

_SPAN = re.compile(r"<!-- generated:(?P<name>[^\s>]+) -->(?P<body>.*?)<!-- /generated:(?P=name) -->", re.DOTALL)
_OPEN = re.compile(r"<!-- generated:(?P<name>[^\s>]+) -->")


class SectionError(ValueError):
    """A marker that cannot be rendered: unknown section, unclosed or nested marker, missing stored file."""


class Stored:
    """Read-only, cached access to the committed results under ``root``."""

    def __init__(self, root: str | Path = ROOT) -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        p = self.root / rel
        if not p.is_file():
            raise SectionError(f"stored result {rel!r} not found under {self.root} (commit it, or remove the section that reads it)")
        return p

    @functools.lru_cache(maxsize=None)  # noqa: B019 - one Stored per sync run; the cache dies with it
    def csv(self, rel: str) -> pd.DataFrame:
        return pd.read_csv(self.path(rel))

    @functools.lru_cache(maxsize=None)  # noqa: B019
    def json(self, rel: str):
        return json.loads(self.path(rel).read_text())

    def claims(self, rel: str = QUICK_RESULTS) -> dict[str, dict]:
        """{claim id: the stored check row (verdict, summary, figures, margins, ...)} of a reproduce report."""
        return {c["id"]: c for c in self.json(rel)["claims"]}

    def claim(self, cid: str, rel: str = QUICK_RESULTS) -> dict:
        rows = self.claims(rel)
        if cid not in rows:
            raise SectionError(f"claim {cid!r} is not in {rel} (stored claims: {', '.join(sorted(rows))})")
        return rows[cid]

    def controls(self, cid: str, rel: str = QUICK_RESULTS) -> list[dict]:
        return [c for c in self.json(rel)["controls"] if c["id"] == cid]


#: section name -> generator (stored, argument or None) -> markdown text
SECTIONS: dict[str, Callable[[Stored, str | None], str]] = {}


def section(name: str) -> Callable:
    """Register ``fn(stored, arg) -> str`` as the generator of ``<!-- generated:name[/arg] -->`` spans."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        raise ValueError(f"section name must be letters, digits, '_' or '.', got {name!r}")

    def deco(fn: Callable[[Stored, str | None], str]) -> Callable[[Stored, str | None], str]:
        if name in SECTIONS:
            raise ValueError(f"section {name!r} registered twice")
        SECTIONS[name] = fn
        return fn
    return deco


def render(name: str, stored: Stored | None = None) -> str:
    """The text of the span ``name`` (``section`` or ``section/arg``) from the stored results."""
    stored = stored or Stored()
    sec, _, arg = name.partition("/")
    if sec not in SECTIONS:
        raise SectionError(f"unknown generated section {sec!r} (registered: {', '.join(sorted(SECTIONS))})")
    return SECTIONS[sec](stored, arg or None)


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    name: str
    block: bool
    old: str
    new: str


def spans(text: str, file: str = "<text>", stored: Stored | None = None) -> tuple[str, list[Span]]:
    """(text with every generated span re-rendered, the spans). Raises :class:`SectionError` on a bad marker."""
    stored = stored or Stored()
    found: list[Span] = []
    closed_ends = []

    def repl(m: re.Match) -> str:
        body = m.group("body")
        line = text.count("\n", 0, m.start()) + 1
        name = m.group("name")
        if _OPEN.search(body):
            raise SectionError(f"{file}:{line}: generated span {name!r} contains another marker (nested or unclosed)")
        block = body.startswith("\n")
        try:
            new = render(name, stored).strip("\n")
        except SectionError as e:
            raise SectionError(f"{file}:{line}: {e}") from None
        if not block and "\n" in new:
            raise SectionError(f"{file}:{line}: inline span {name!r} rendered several lines; put its markers on lines of their own")
        old = body[1:-1] if block and body.endswith("\n") else body
        found.append(Span(file, line, name, block, old, new))
        closed_ends.append((m.start(), m.end()))
        return f"<!-- generated:{name} -->" + (f"\n{new}\n" if block else new) + f"<!-- /generated:{name} -->"

    out = _SPAN.sub(repl, text)
    for m in _OPEN.finditer(text):  # an opening marker outside every matched span has no closing one
        if not any(a <= m.start() < b for a, b in closed_ends):
            raise SectionError(f"{file}:{text.count(chr(10), 0, m.start()) + 1}: generated span {m.group('name')!r} is not closed")
    return out, found


def _docs(root: Path) -> list[Path]:
    return sorted({p for g in DOCS for p in root.glob(g) if p.is_file()})


def sync(root: str | Path = ROOT, *, write: bool = False) -> list[Span]:
    """Re-render every generated span of :data:`DOCS` under ``root``; return the spans whose text changed.

    With ``write`` the changed files are rewritten in place. Raises :class:`SectionError` on a bad
    marker or a missing stored result, before writing anything.
    """
    root = Path(root)
    stored = Stored(root)
    changed, new_texts = [], {}
    for p in _docs(root):
        text = p.read_text()
        out, found = spans(text, str(p.relative_to(root)), stored)
        changed += [s for s in found if s.old != s.new]
        if out != text:
            new_texts[p] = out
    if write:
        for p, out in new_texts.items():
            p.write_text(out)
    return changed


def check(root: str | Path = ROOT) -> list[Span]:
    """The spans whose committed text differs from what the committed results produce (empty: in sync)."""
    return sync(root, write=False)


def _diff(s: Span) -> str:
    return "".join(difflib.unified_diff((s.old + "\n").splitlines(True), (s.new + "\n").splitlines(True),
                                        f"{s.file}:{s.line} {s.name} (committed)", f"{s.name} (from the stored results)"))


def store_reproduce(src: str | Path, root: str | Path = ROOT, *, command: str, machine: str, cpu_seconds: float | None = None,
                    commit: str | None = None) -> Path:
    """Copy ``SRC/results.json`` of a ``lora-theory reproduce --out SRC`` run to :data:`QUICK_RESULTS` and write :data:`QUICK_RUN`.

    RUN.json records what the generated text says about the run: the command, the commit of the
    checkout it ran on, the date of its results.json, its wall seconds (from the report) and, when
    given, the CPU seconds and a line on the machine (cores, load).
    """
    import datetime
    import subprocess

    src, root = Path(src), Path(root)
    res = src / "results.json"
    payload = json.loads(res.read_text())
    if payload.get("mode") != "quick":
        raise SectionError(f"{res} is a {payload.get('mode')!r} reproduce; the docs are generated from a quick one")
    commit = subprocess.run(["git", "rev-parse", commit or "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    dest = root / QUICK_RESULTS
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    run = {"command": command, "commit": commit, "machine": machine, "wall_seconds": payload["seconds"], "cpu_seconds": cpu_seconds,
           "date": datetime.datetime.fromtimestamp(res.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    (root / QUICK_RUN).write_text(json.dumps(run, indent=1) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lora_theory.docs_sync", description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 and print the diff if a generated span is stale (default)")
    g.add_argument("--write", action="store_true", help="rewrite the stale spans in place")
    g.add_argument("--list", action="store_true", help="list the registered sections and the spans in the documents")
    g.add_argument("--store-reproduce", type=Path, metavar="DIR", help="store DIR/results.json of a quick reproduce as the source, then --write")
    ap.add_argument("--command", default="lora-theory reproduce --quick", help="with --store-reproduce: the command that made DIR")
    ap.add_argument("--machine", default="", help="with --store-reproduce: the machine (cores, load) in words")
    ap.add_argument("--cpu-seconds", type=float, default=None, help="with --store-reproduce: the run's CPU seconds (user + sys)")
    ap.add_argument("--commit", default=None, help="with --store-reproduce: the commit the run's code came from (default: HEAD)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: the one this module is in)")
    a = ap.parse_args(argv)
    try:
        if a.store_reproduce:
            print(f"stored {store_reproduce(a.store_reproduce, a.root, command=a.command, machine=a.machine, cpu_seconds=a.cpu_seconds, commit=a.commit)}")
            a.write = True
        if a.list:
            print("sections:", ", ".join(sorted(SECTIONS)))
            for p in _docs(a.root):
                for s in spans(p.read_text(), str(p.relative_to(a.root)), Stored(a.root))[1]:
                    print(f"{s.file}:{s.line}: {s.name}")
            return 0
        changed = sync(a.root, write=a.write)
    except SectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.write:
        print(f"rewrote {len(changed)} generated span(s)" + "".join(f"\n  {s.file}:{s.line} {s.name}" for s in changed))
        return 0
    for s in changed:
        print(_diff(s))
    print(f"{len(changed)} generated span(s) differ from the stored results" + (" (run `lora-theory notes --write`)" if changed else ""))
    return 1 if changed else 0


# ----------------------------------------------------------------------------------------------
# formatting helpers


def fmt(x: float, spec: str = ".2g") -> str:
    """A number as the notes write it: ``nan`` for a missing one, ``inf`` spelled out."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, spec)


def sci(x: float, digits: int = 1) -> str:
    """Scientific notation as the notes write it: 1.5e9, 2.6e-8 (no '+', no leading zeros in the exponent)."""
    m, e = f"{x:.{digits}e}".split("e")
    return f"{m}e{int(e)}"


def md_cell(s: object) -> str:
    """Text safe inside a markdown table cell (the report's escaping: pipes and newlines)."""
    return str(s).replace("|", "\\|").replace("\n", " ")


def _shorten(s: str, width: int) -> str:
    if len(s) <= width:
        return s
    cut = s.rfind(" ", 0, width)
    return s[:cut if cut > 0 else width].rstrip(",;: ") + " ..."


def _run_line(stored: Stored) -> str:
    run = stored.json(QUICK_RUN)
    res = stored.json(QUICK_RESULTS)
    claims = res["claims"]
    holds = sum(c["verdict"] == "holds" for c in claims)
    ctl = res["controls"]
    caught = sum(bool(c["caught"]) for c in ctl)
    missed = [f"`{c['id']}/{c['control']}`" for c in ctl if not c["caught"]]
    other = {v: [c["id"] for c in claims if c["verdict"] == v] for v in ("fails", "inconclusive", "error")}
    return (f"From `{run['command']}` at commit `{run['commit'][:10]}` ({run['date']}; {run['machine'] or 'machine not recorded'}: "
            f"{run['wall_seconds'] / 60:.0f} min wall" + (f", {run['cpu_seconds'] / 60:.0f} min CPU" if run.get("cpu_seconds") else "") + "), stored in "
            f"[`{QUICK_RESULTS}`]({QUICK_RESULTS}): **{holds} of {len(claims)} claims hold**"
            + "".join(f"; {v}: {', '.join(f'`{i}`' for i in ids)}" for v, ids in other.items() if ids)
            + f"; negative controls caught: {caught} of {len(ctl)}" + (f" (not caught: {', '.join(missed)})" if missed else "") + ".")


@section("claims_run")
def _claims_run(stored: Stored, arg: str | None) -> str:
    """One line: which stored reproduce run the claims table shows, and its totals."""
    return _run_line(stored)


@section("quick_cost")
def _quick_cost(stored: Stored, arg: str | None) -> str:
    """The stored quick run's cost: CPU seconds (user + system, children included) and wall seconds."""
    run = stored.json(QUICK_RUN)
    cpu = run.get("cpu_seconds")
    return (f"{cpu:.0f} CPU-seconds, " if cpu else "") + f"{run['wall_seconds']:.0f} s wall ({run['machine'] or 'machine not recorded'})"


@section("finetune")
def _finetune(stored: Stored, arg: str | None) -> str:
    """The fine-tuning tables of paper_notes/finetune.md (``finetune/NAME``), rendered from ``figures/finetune_*.csv``."""
    from .studies.finetune import notes_tables  # pandas only; the studies module registers figures lazily

    tables = notes_tables(stored.root / "figures")
    if arg not in tables:
        raise SectionError(f"finetune/{arg}: no such table (known: {', '.join(sorted(tables))})")
    return tables[arg]


@section("finetune_controls")
def _finetune_controls(stored: Stored, arg: str | None) -> str:
    """``finetune_controls/BUDGET``: the fine-tuning claims' negative controls stored in ``stored/finetune/controls_BUDGET.json``."""
    from .studies.finetune import controls_table

    name = (arg or "mlm-tiny").replace("-", "_")
    return controls_table(stored.json(f"stored/finetune/controls_{name}.json"))


@section("claims_table")
def _claims_table(stored: Stored, arg: str | None) -> str:
    """The README's claims table: one row per claim of the stored quick reproduce, then the claims it skipped."""
    res = stored.json(QUICK_RESULTS)
    width = int(arg) if arg else 260
    lines = ["| id | verdict | controls caught | measured |", "|---|---|---|---|"]
    ctl = res["controls"]
    for c in sorted(res["claims"], key=lambda c: c["id"]):
        mine = [x for x in ctl if x["id"] == c["id"]]
        caught = f"{sum(bool(x['caught']) for x in mine)} of {len(mine)}" if mine else "none registered"
        lines.append(f"| `{c['id']}` | {c['verdict']} | {caught} | {md_cell(_shorten(c['summary'], width))} |")
    ft = stored.csv("figures/finetune_steps.csv") if (stored.root / "figures/finetune_steps.csv").is_file() else None
    for cid in sorted((res.get("skipped") or {}).get("claims", [])):
        rows = ft[(ft.claim == cid) & (ft.block != "premise")] if ft is not None else ()
        if not len(rows):
            lines.append(f"| `{cid}` | not run in the quick reproduce (`--experiments`) | | the fine-tuning experiment: see "
                         f"[paper_notes/finetune.md](paper_notes/finetune.md) |")
            continue
        parts = "; ".join(_ft_part(r) for r in rows.itertuples())
        r0 = rows.iloc[0]
        lines.append(f"| `{cid}` | {r0.claim_verdict} (fine-tuning experiment, budget `{r0.budget}`) | slow tests (`mlm-tiny`) | "
                     f"{md_cell(parts)}; [paper_notes/finetune.md](paper_notes/finetune.md) |")
    return "\n".join(lines)


def _ft_part(r) -> str:
    """One part of a stored fine-tuning verdict: effect [interval] vs threshold, seeds, false-holds rate (figures/finetune_steps.csv)."""
    if not isinstance(r.part, str) or not r.part:
        return "no finished runs"
    return (f"{r.part}: {r.estimate:.3g} [{r.low:.3g}, {r.high:.3g}] ({r.sense} {r.threshold:g}: {r.part_verdict}), "
            f"{int(r.n_seeds)} seeds, false holds {r.false_holds:.1%}")


@section("claim_measured")
def _claim_measured(stored: Stored, arg: str | None) -> str:
    """``claim_measured/ID``: the stored check's one-line summary of claim ID (what it measured), table-safe."""
    if not arg:
        raise SectionError("claim_measured needs a claim id: claim_measured/ID")
    return md_cell(stored.claim(arg)["summary"])


@section("claim_verdict")
def _claim_verdict(stored: Stored, arg: str | None) -> str:
    """``claim_verdict/ID``: the stored verdict of claim ID (quick reproduce)."""
    if not arg:
        raise SectionError("claim_verdict needs a claim id: claim_verdict/ID")
    return stored.claim(arg)["verdict"]


@section("controls_cell")
def _controls_cell(stored: Stored, arg: str | None) -> str:
    """``controls_cell/ID``: each stored negative control of claim ID, whether its check caught it, and what the check measured under it."""
    rows = stored.controls(arg or "")
    if not rows:
        raise SectionError(f"no stored controls of claim {arg!r} in {QUICK_RESULTS}")
    return md_cell("; ".join(f"`{c['control']}` ({'caught' if c['caught'] else 'NOT caught'}, {c['verdict']}: {_shorten(c['summary'], 90)})"
                             for c in sorted(rows, key=lambda c: c["control"])))


def _real_heads(stored: Stored) -> pd.DataFrame:
    df = stored.csv("figures/regime_real_heads.csv")
    return df[df.kind == "head"].astype({"L": int, "layer": int, "head": int})


@section("real_heads_table")
def _real_heads_table(stored: Stored, arg: str | None) -> str:
    """Per L: the score range R of every MiniLM head against the paper's lines (committed regime_real_heads figure)."""
    h = _real_heads(stored)
    lines = ["| L | R min / median / max | R / sqrt(ln L): q10 / median / q90 / max | R <= sqrt(ln L) | R <= ln L | max entry <= sqrt(ln L) "
             "| degree at eps=1e-3: min / median / max | k = C(g+32, 32), min |", "|---|---|---|---|---|---|---|---|"]
    for L, g in h.groupby("L"):
        r = g.R_over_sqrt_ln_L
        lines.append(f"| {L} | {g.R.min():.2f} / {g.R.median():.2f} / {g.R.max():.1f} | {r.quantile(.1):.2f} / {r.median():.2f} / "
                     f"{r.quantile(.9):.2f} / {r.max():.1f} | {(r <= 1).mean():.0%} | {(g.R_over_ln_L <= 1).mean():.0%} | "
                     f"{(g.Gamma_over_sqrt_ln_L <= 1).mean():.0%} | {g.degree.min()} / {g.degree.median():g} / {g.degree.max()} | {sci(float(g.k.min()))} |")
    return "\n".join(lines).replace(" %", "%").replace("%", " %")


@section("real_heads_at_L")
def _real_heads_at_L(stored: Stored, arg: str | None) -> str:
    """``real_heads_at_L/512``: quartiles of R / sqrt(ln L), per-layer medians and the most extreme head (committed figure)."""
    h = _real_heads(stored)
    L = int(arg) if arg else int(h.L.max())
    g = h[h.L == L]
    if not len(g):
        raise SectionError(f"real_heads_at_L: no heads at L = {L} in figures/regime_real_heads.csv")
    q = g.R_over_sqrt_ln_L.quantile([.25, .5, .75])
    per = g.groupby("layer").agg(R=("R", "median"), x=("R_over_sqrt_ln_L", "median"))
    top = h.loc[h.groupby("L").R.idxmax()]
    first, last = top.iloc[0], top.iloc[-1]
    extreme = (f"the one extreme head is layer {first.layer}, head {first['head']} at every L (R = {first.R:.0f} at L = {first.L}, "
               f"{last.R:.0f} at L = {last.L}, degree {last.degree})" if len(top[["layer", "head"]].drop_duplicates()) == 1
               else "the most extreme head changes with L")
    return (f"At L = {L} the {len(g)} heads have R / sqrt(ln L) quartiles {q.iloc[0]:.2f} / {q.iloc[1]:.2f} / {q.iloc[2]:.2f} "
            f"(min {g.R_over_sqrt_ln_L.min():.2f}, max {g.R_over_sqrt_ln_L.max():.1f}). Per layer (median R, median R / sqrt(ln L)): "
            + ", ".join(f"{'layer ' if i == 0 else ''}{i} {r.R:.1f} ({r.x:.1f})" for i, r in per.iterrows()) + f"; {extreme}.")


@section("real_heads_median_R")
def _real_heads_median_R(stored: Stored, arg: str | None) -> str:
    """The median R at the smallest and the largest L (committed regime_real_heads figure)."""
    m = _real_heads(stored).groupby("L").R.median()
    return f"median {m.iloc[0]:.1f} at L = {m.index[0]} to {m.iloc[-1]:.1f} at L = {m.index[-1]}"


@section("real_heads_least_extreme")
def _real_heads_least_extreme(stored: Stored, arg: str | None) -> str:
    """The smallest R / sqrt(ln L) of any head at any L (committed regime_real_heads figure)."""
    return f"{_real_heads(stored).R_over_sqrt_ln_L.min():.1f}"


@section("degree_examples")
def _degree_examples(stored: Stored, arg: str | None) -> str:
    """Degrees exp_polynomial needs at R = 0.5, 2, 8, Chebyshev and Taylor, at the largest and a small stored eps (committed degree_vs_range)."""
    df = stored.csv("figures/degree_vs_range.csv")
    Rs = (0.5, 2.0, 8.0)
    hi, lo = float(df.eps.max()), (1e-6 if (df.eps == 1e-6).any() else float(df.eps.min()))

    def deg(method: str, eps: float) -> list[int]:
        g = df[(df.method == method) & (df.eps == eps)].set_index("R").degree
        return [int(g[R]) for R in Rs]

    c_hi, c_lo, t_hi = deg("chebyshev", hi), deg("chebyshev", lo), deg("taylor", hi)
    return (f"Chebyshev interpolation needs degree {c_hi[0]} at R = 0.5, {c_hi[1]} at R = 2 and {c_hi[2]} at R = 8 for eps = {sci(hi, 0)}, "
            f"and {', '.join(map(str, c_lo))} for eps = {sci(lo, 0)} (Taylor needs more: {', '.join(map(str, t_hi))} at eps = {sci(hi, 0)})")


@section("mutation_scores")
def _mutation_scores(stored: Stored, arg: str | None) -> str:
    """``mutation_scores/FILE``: the table of benchmarks/FILE.json, the ``--json`` of ``benchmarks/mutation.py`` (one record per module).

    A sampled run (``--sample N``) shows the killed share of its N mutants with a 95% Wilson interval
    (scipy.stats.binomtest) for the whole module's score.
    """
    from scipy.stats import binomtest

    rel = f"benchmarks/{arg or 'mutation_limits'}.json"
    rows = [r for r in stored.json(rel) if "error" not in r]
    lines = ["| module | mutants run (of all) | killed | survived | no tests | timeout | score [95% interval] | tests run per mutant | wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    tot = {"mutants": 0, "killed": 0, "survived": 0, "no tests": 0, "timeout": 0, "skipped": 0}
    for r in rows:
        c = r["counts"]
        for k in ("killed", "survived", "no tests", "timeout", "skipped"):
            tot[k] += c.get(k, 0)
        tot["mutants"] += r["mutants"]
        n = r["mutants"] - c.get("skipped", 0)
        k = c.get("killed", 0) + c.get("timeout", 0)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        score = f"{k / n:.0%} [{ci.low:.0%}, {ci.high:.0%}]" if r.get("sampled") else f"{k / n:.1%}"
        tests = ", ".join(f"`{t.removeprefix('tests/limits/')}`" for t in r["tests"])
        lines.append(f"| `{r['source'].removeprefix('lora_theory/')}` | {r['mutants']} ({r.get('population', r['mutants'])}) | {c.get('killed', 0)} | "
                     f"{c.get('survived', 0)} | {c.get('no tests', 0)} | {c.get('timeout', 0)} | {score} | {tests} | {r['seconds'] / 60:.0f} min |")
    n = tot["mutants"] - tot["skipped"]
    k = tot["killed"] + tot["timeout"]
    ci = binomtest(k, n).proportion_ci(method="wilson")
    lines.append(f"| total | {tot['mutants']} | {tot['killed']} | {tot['survived']} | {tot['no tests']} | {tot['timeout']} | "
                 f"{k / n:.0%} [{ci.low:.0%}, {ci.high:.0%}] | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
