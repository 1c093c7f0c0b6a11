"""The ``lora-theory`` command line (typer). ``lora-theory --help`` lists the commands."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LoRA theory as executable, measured checks.")
console = Console()

_VERDICT_STYLE = {"holds": "green", "fails": "red", "error": "magenta", "inconclusive": "yellow"}


def _dtype(name: str):
    import torch

    table = {"float64": torch.float64, "float32": torch.float32}
    if name not in table:
        raise typer.BadParameter(f"expected one of {', '.join(table)}, got {name!r}", param_hint="--dtype")
    return table[name]


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Versions, device and threads."""
    import numpy
    import torch

    from ._version import __version__

    facts = {
        "lora_theory": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    t = Table(show_header=False)
    for k, v in facts.items():
        t.add_row(k, str(v))
    console.print(t)


@app.command()
def grad(
    L: int = typer.Option(256, "--L", help="Sequence length."),
    d: int = typer.Option(8, "--d", help="Dimension."),
    r: int = typer.Option(2, "--r", help="LoRA rank."),
    adapt: str = typer.Option("qv", "--adapt", help="'qv' (partial) or 'qkv' (full)."),
    attention: str = typer.Option("self", "--attention", help="'self' or 'cross'."),
    bound: Optional[float] = typer.Option(None, "--bound", help="Gamma: rescale the Thm 3.1 / A.1 norms to this."),
    beta: float = typer.Option(1.0, "--beta"),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = typer.Option("float64", "--dtype", help="float64 or float32."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, ... (default cpu)."),
    block_size: Optional[int] = typer.Option(None, "--block-size"),
    no_autograd: bool = typer.Option(False, "--no-autograd", help="Skip the dense autograd reference (for large L)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Exact LoRA-attention gradients of one instance: norms, R, max error vs autograd, times."""
    import torch

    from . import autograd_gradients, exact_gradients, make_instance, max_rel_error, norm_bounds
    from ._validate import InvalidArgumentError

    try:
        inst = make_instance(L, d, r, adapt=adapt, attention=attention, bound=bound, beta=beta, seed=seed, dtype=_dtype(dtype), device=device)
        sync = torch.cuda.synchronize if inst.device.type == "cuda" else (lambda: None)
        out: dict = {"instance": repr(inst), "norms": norm_bounds(inst)}
        t0 = time.perf_counter()
        g = exact_gradients(inst, block_size=block_size)
        sync()
        out["exact_seconds"] = time.perf_counter() - t0
        if not no_autograd:
            t0 = time.perf_counter()
            ref = autograd_gradients(inst)
            sync()
            out["autograd_seconds"] = time.perf_counter() - t0
            out["max_rel_err"] = {k: max_rel_error(g[k], ref[k]) for k in g}
        out["grad_norms"] = {k: float(v.norm()) for k, v in g.items()}
    except InvalidArgumentError as e:
        raise typer.BadParameter(str(e)) from None
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    console.print(out["instance"])
    t = Table("quantity", "value")
    for k, v in out["norms"].items():
        t.add_row(f"norm {k}", f"{v:.4g}")
    for k, v in out.get("max_rel_err", {}).items():
        t.add_row(f"rel err {k}", f"{v:.2e}")
    t.add_row("exact (s)", f"{out['exact_seconds']:.4f}")
    if "autograd_seconds" in out:
        t.add_row("autograd (s)", f"{out['autograd_seconds']:.4f}")
    console.print(t)


def _print_checks(df, as_json: bool) -> None:
    if as_json:
        typer.echo(df.drop(columns=["error"]).to_json(orient="records", indent=2))
        return
    t = Table("id", "verdict", "measured", "s")
    for row in df.itertuples():
        t.add_row(row.id, f"[{_VERDICT_STYLE[row.verdict]}]{row.verdict}[/]", row.summary, f"{row.seconds:.1f}")
    console.print(t)


@app.command()
def check(
    claim: Optional[list[str]] = typer.Option(None, "--claim", help="Claim id (repeatable); default all."),
    full: bool = typer.Option(False, "--full", help="Paper-scale configuration instead of the quick one."),
    as_json: bool = typer.Option(False, "--json"),
    list_only: bool = typer.Option(False, "--list", help="List the claims without running them."),
    controls: bool = typer.Option(False, "--controls", help="Run the claims' negative controls instead: claim, control, verdict under control, caught."),
) -> None:
    """Run claim checks and print a table (exit code 1 if a claim fails or errors; with --controls, if a control is not caught)."""
    from .claims import all_claims, run_checks

    if list_only:
        t = Table("id", "statement", "reference")
        for c in all_claims():
            t.add_row(c.id, c.statement, c.reference)
        console.print(t)
        return
    if controls:
        _check_controls(claim, full, as_json)
        return
    try:
        with console.status("checking...") as status:
            df = run_checks(claim, quick=not full, progress=lambda cid: status.update(f"checking {cid}"))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--claim") from None
    _print_checks(df, as_json)
    raise typer.Exit(0 if (df.verdict == "holds").all() else 1)


def _check_controls(claim: Optional[list[str]], full: bool, as_json: bool) -> None:
    """``check --controls``: every negative control of the selected claims; exit 1 unless all are caught."""
    from .claims import all_claims, get_claim, run_controls

    try:
        ids = None if not claim else [get_claim(c).id for c in claim]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--claim") from None
    with console.status("running controls...") as status:
        df = run_controls(ids, quick=not full, progress=lambda what: status.update(f"control {what}"))
    if as_json:
        typer.echo(df[["id", "control", "description", "expect", "verdict", "caught", "summary", "seconds"]].to_json(orient="records", indent=2))
    else:
        t = Table("claim", "control", "verdict under control", "caught", "s")
        for row in df.itertuples():
            caught = "[green]yes[/]" if row.caught else "[red]NO[/]"
            t.add_row(row.id, row.control + (" (positive)" if row.expect == "holds" else ""),
                      f"[{_VERDICT_STYLE.get(row.verdict, 'yellow')}]{row.verdict}[/]", caught, f"{row.seconds:.1f}")
        console.print(t)
        no_ctl = [c.id for c in (all_claims() if ids is None else map(get_claim, ids)) if not c.controls]
        console.print(f"controls caught: {int(df.caught.sum())} of {len(df)}" + (f"; claims without a control: {', '.join(no_ctl)}" if no_ctl else ""))
    raise typer.Exit(0 if bool(df.caught.all()) else 1)


@app.command()
def reproduce(
    out: Path = typer.Option(Path("results"), "--out", help="Output folder for report.md, results.json, figures/."),
    quick: bool = typer.Option(True, "--quick/--full", help="Minutes on 2 cores (default) or paper scale."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes for the claim checks."),
    executor: str = typer.Option("inprocess", "--executor", help="'inprocess', 'process', 'dask-local' or 'dask://HOST:PORT'."),
    claim: Optional[list[str]] = typer.Option(None, "--claim", help="Only these claim ids (repeatable; default: all)."),
    figure: Optional[list[str]] = typer.Option(None, "--figure", help="Only these figures (repeatable; default: all)."),
) -> None:
    """Run every claim check and figure, and write OUT/report.md and OUT/results.json (resumes from OUT/store.sqlite)."""
    from .report import reproduce as _reproduce

    if not (executor in ("inprocess", "process", "dask-local") or executor.startswith("dask://")):
        raise typer.BadParameter(f"expected 'inprocess', 'process', 'dask-local' or 'dask://HOST:PORT', got {executor!r}", param_hint="--executor")
    with console.status("reproducing...") as status:
        try:
            df, report = _reproduce(out, quick=quick, progress=lambda msg: status.update(msg), jobs=jobs, claims=claim or None, figures=figure or None,
                                    executor="process" if jobs > 1 and executor == "inprocess" else executor)
        except ValueError as e:  # an unknown claim or figure, bad --jobs, a foreign OUT/store.sqlite
            raise typer.BadParameter(str(e)) from None
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what finished is in the store
            console.print(f"interrupted: finished checks and figures are in {out / 'store.sqlite'}; run the same command again to resume")
            raise typer.Exit(130) from None
    _print_checks(df, as_json=False)
    console.print(f"report: {report}")
    raise typer.Exit(0 if (df.verdict != "error").all() else 1)


@app.command()
def figures(
    name: Optional[list[str]] = typer.Argument(None, help="Figure names (default: all)."),
    out: Path = typer.Option(Path("figures"), "--out", help="Folder for NAME.png and NAME.csv."),
    full: bool = typer.Option(False, "--full", help="Paper-scale sweeps."),
    from_dir: Optional[Path] = typer.Option(None, "--from", help="Redraw without recomputing: a folder of NAME.csv files or a reproduce store (OUT/store.sqlite)."),
    list_only: bool = typer.Option(False, "--list"),
) -> None:
    """Regenerate figures (compute + plot), or redraw them from stored tables."""
    import pandas as pd

    from .studies import all_figures, get_figure, render

    if list_only:
        for spec in all_figures():
            console.print(f"[bold]{spec.name}[/]: {spec.description} ({', '.join(spec.claims)})")
        return
    names = name or [s.name for s in all_figures()]
    for n in names:
        try:
            get_figure(n)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="NAME") from None
        data = None
        if from_dir is not None and from_dir.is_file():  # a reproduce store: redraw from its tables
            from .report import stored_figure_tables

            try:
                tables = stored_figure_tables(from_dir)
            except ValueError as e:
                raise typer.BadParameter(str(e), param_hint="--from") from None
            if n not in tables:
                raise typer.BadParameter(f"expected a stored table for {n!r} in {from_dir}, found {sorted(tables)}", param_hint="--from")
            data = tables[n]
        elif from_dir is not None:
            csv = from_dir / f"{n}.csv"
            if not csv.exists():
                raise typer.BadParameter(f"expected {csv} to exist", param_hint="--from")
            data = pd.read_csv(csv)
        with console.status(f"figure {n}..."):
            paths = render(n, out, quick=not full, data=data)
        console.print(f"{n}: {paths['png']}")

sweep_app = typer.Typer(no_args_is_help=True, help="Parameter sweeps that write each finished point to disk and resume.")
app.add_typer(sweep_app, name="sweep")


@sweep_app.command("norms")
def sweep_norms(
    L: list[int] = typer.Option([256, 1024], "--L", help="Sequence lengths (repeatable)."),
    gamma: list[float] = typer.Option([0.5, 1.0, 2.0, 3.0], "--gamma", help="Norm bounds Gamma (repeatable)."),
    kind: list[str] = typer.Option(["random", "hard"], "--kind", help="'random' and/or 'hard' instances."),
    d: int = typer.Option(4, "--d"),
    degree: int = typer.Option(8, "--degree", help="Fixed polynomial degree budget."),
    seeds: int = typer.Option(1, "--seeds"),
    adapt: str = typer.Option("qv", "--adapt"),
    store: Path = typer.Option(Path("norms.sqlite"), "--store", help="SQLite results store: each finished point is committed; a re-run skips them."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also export the sweep's table (CSV or Parquet)."),
) -> None:
    """Gradient error of the polynomial method at a fixed degree vs Gamma (limits.thm4.1_regime), through the sweep engine."""
    from .limits.norm_sweeps import approx_error
    from .sweeps import ResultStore, grid, run_sweep

    for k in kind:
        if k not in ("random", "hard"):
            raise typer.BadParameter(f"expected 'random' or 'hard', got {k!r}", param_hint="--kind")
    if seeds < 1:
        raise typer.BadParameter(f"expected an integer >= 1, got {seeds}", param_hint="--seeds")
    points = grid(kind=list(kind), L=list(L), gamma=[float(g) for g in gamma], seed=list(range(seeds)), d=[d], degree=[degree], adapt=[adapt])
    try:
        counts = run_sweep(approx_error, points, store, name="norms", jobs=jobs, executor="process" if jobs > 1 else "inprocess")
        with ResultStore(store, readonly=True) as st:
            df = st.load("norms")
            if out is not None:
                console.print(f"wrote {st.export(out, 'norms')}")
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    t = Table("kind", "L", "Gamma", "R", "valid", "rel err")
    for r in df.sort_values(["kind", "L", "gamma"]).itertuples():
        t.add_row(str(r.kind), str(r.L), f"{r.gamma:g}", f"{r.R:.3g}", str(r.valid), f"{r.rel_err:.2e}")
    console.print(t)
    console.print(counts)
    raise typer.Exit(130 if counts.get("interrupted") else 0)


@sweep_app.command("run")
def sweep_run(
    file: Path = typer.Argument(..., help="TOML sweep file: name, function = 'module:attr', [grid] axes."),
    store: Path = typer.Option(Path("sweeps.sqlite"), "--store", help="SQLite results store (created if missing)."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes."),
    executor: str = typer.Option("process", "--executor", help="'process', 'inprocess', 'dask-local' or 'dask://HOST:PORT'."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-run points stored with an error."),
) -> None:
    """Run a sweep durably: finished points are skipped, each new one is committed as it finishes."""
    from .sweeps import load_toml, run_sweep

    try:
        spec = load_toml(file)
        counts = run_sweep(spec.fn, spec.points, store, name=spec.name, jobs=jobs, executor=executor, seed=spec.seed, retry_failed=retry_failed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    console.print(counts)
    raise typer.Exit(130 if counts.get("interrupted") else 0)


@sweep_app.command("status")
def sweep_status(store: Path = typer.Argument(..., help="SQLite results store.")) -> None:
    """Points per sweep in a store: done and failed."""
    from .sweeps import ResultStore

    try:
        with ResultStore(store, readonly=True) as st:
            df = st.sweeps()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    t = Table("sweep", "points", "failed", "compute s", "last finished (UTC)")
    for r in df.itertuples():
        t.add_row(str(r.sweep), str(r.points), str(int(r.failed)), f"{r.seconds:.1f}", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.last)))
    console.print(t)


@sweep_app.command("export")
def sweep_export(store: Path = typer.Argument(...), out: Path = typer.Argument(..., help="NAME.csv or NAME.parquet"),
                 sweep: Optional[str] = typer.Option(None, "--sweep")) -> None:
    """Export a store (or one sweep of it) as CSV or Parquet."""
    from .sweeps import ResultStore

    try:
        with ResultStore(store, readonly=True) as st:
            console.print(f"wrote {st.export(out, sweep)}")
    except (ValueError, ImportError) as e:
        raise typer.BadParameter(str(e)) from None


audit_app = typer.Typer(no_args_is_help=True, help="Audit third-party implementations against the papers' theorems.")
app.add_typer(audit_app, name="audit")


@audit_app.command("lora-ga")
def audit_lora_ga_cmd(
    implementation: list[str] = typer.Option(["peft", "lora_theory"], "--implementation", help="'peft' and/or 'lora_theory'."),
    r: int = typer.Option(8, "--r"),
    alpha: float = typer.Option(16.0, "--alpha"),
    batches: int = typer.Option(2, "--batches", help="Batches for the gradient estimate."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the per-layer table as CSV."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """LoRA-GA on MiniLM (q, v): alignment with G_2r, stable scale and output change, per direction and scale."""
    from .finetune.tasks import teacher_student_task
    from .lora.pretrained import embed, load_minilm, token_batches
    from .lora_ga.audit import audit_lora_ga

    try:
        import pandas as pd

        model = load_minilm()
        task = teacher_student_task(model)
        data = token_batches(batches, 4, 16)
        df = pd.concat([audit_lora_ga(impl, model, data, task.loss, embed, ["query", "value"], r=r, alpha=alpha) for impl in implementation])
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if out is not None:
        df.to_csv(out, index=False)
    cols = ["rel_residual", "multiple_over_zeta", "cosine", "eckart_young", "fwd_moment", "output_change"]
    summary = df.groupby(["implementation", "direction", "scale"], as_index=False)[cols].median()
    if as_json:
        typer.echo(summary.to_json(orient="records", indent=2))
        return
    t = Table("impl", "direction", "scale", "residual to zeta G_2r", "s*/zeta", "cos(step, G)", "EY optimum", "E|eta B A x|^2/m", "output change")
    for row in summary.itertuples():
        t.add_row(row.implementation, row.direction, row.scale, f"{row.rel_residual:.2e}", f"{row.multiple_over_zeta:.3g}", f"{row.cosine:.4f}",
                  f"{row.eckart_young:.4f}", f"{row.fwd_moment:.3g}", f"{row.output_change:.1e}")
    console.print(t)
    console.print("medians over layers; stable-scale prediction alpha^2/gamma^2 = " + f"{alpha**2 / 16**2:g}")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
