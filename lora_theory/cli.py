"""The ``lora-theory`` command line (typer). ``lora-theory --help`` lists the commands.

Every command says what happened through its exit status, the same everywhere:

- 0: done, and the toolkit's own promises held: for ``reproduce`` (and ``check`` without
  ``--claim``) every ``toolkit.*`` claim holds, every negative control was caught and nothing
  errored, while a claim of a paper or an audit that fails is a *finding* shown in the report and
  the summary (``--strict``: exit 1 for it too); for ``check --claim ID`` every claim asked about
  holds. An "inconclusive" paper claim is not a failure: the check ran and could not decide;
- 1: done, and a promise is broken: a ``toolkit.*`` claim does not hold, a control was not caught,
  or a claim asked about with ``check --claim`` fails (with ``--strict``: any claim fails);
- 2: bad usage or input: an unknown option or value, an argument out of range, a size that cannot
  fit in memory, a path that cannot be read or written, a foreign or read-only store, an output
  file the toolkit did not write (pass ``--force``). Nothing is computed;
- 3: something errored: a check crashed, sweep points failed (raised, worker died, timeout), a
  figure could not be made, or an unexpected error;
- 130: interrupted (Ctrl-C, SIGTERM); ``reproduce`` and ``sweep`` store what finished and the same
  command resumes; ``grad`` and ``check`` store nothing (the message says which).

Long runs show their progress on stderr (:class:`JobProgress`, :class:`RowProgress`): a live
display on a terminal, plain lines otherwise. Commands write only where told (``--out``,
``--csv``, ``--figure``, ``--store``); ``reproduce`` and ``figures`` without ``--out`` write into a
fresh folder of the working folder.

Errors are one line on stderr that names the argument, the expected and the actual value; the
traceback is printed only with ``lora-theory --debug COMMAND`` (or ``LORA_THEORY_DEBUG=1``).
``--json`` output is strict JSON: non-finite numbers are null, listed under ``"nonfinite"``.
Files: the toolkit overwrites only files it wrote itself (and that nobody changed since); any
other existing file is refused unless ``--force`` (see :mod:`lora_theory._outputs`).
"""
from __future__ import annotations

import functools
import math
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from . import _json
from ._validate import InvalidArgumentError

EXIT_OK, EXIT_FAILS, EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

console = Console()
_STATE = {"debug": False}

_VERDICT_STYLE = {"holds": "green", "fails": "red", "inconclusive": "yellow", "error": "magenta"}


def _debug() -> bool:
    return _STATE["debug"] or os.environ.get("LORA_THEORY_DEBUG", "") not in ("", "0")


def _classify(e: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that escaped a command."""
    try:
        from .limits.lowrank import ApproximationError
    except ImportError:  # pragma: no cover - the toolkit is importable if this module is
        ApproximationError = InvalidArgumentError
    msg = str(e).strip()
    if isinstance(e, InvalidArgumentError | ApproximationError):  # StoreError and OutputExistsError are InvalidArgumentErrors
        return EXIT_USAGE, msg or type(e).__name__
    if isinstance(e, OSError):
        what = f"{e.filename}: " if e.filename else ""
        return EXIT_USAGE, f"{what}expected a path that can be read or written, got {e.strerror or msg or type(e).__name__}"
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in msg or "out of memory" in msg.lower():
        return EXIT_USAGE, f"not enough memory for the sizes asked for ({type(e).__name__}: {msg.splitlines()[0][:300] if msg else ''}); use smaller sizes"
    if isinstance(e, ImportError):
        return EXIT_USAGE, f"a missing optional dependency: {msg}"
    first = msg.splitlines()[0] if msg else ""
    return EXIT_ERROR, f"{type(e).__name__}: {first}".rstrip(": ") + " (an unexpected error; `lora-theory --debug ...` shows the traceback)"


def _click_modules() -> list:
    """click itself, and the copy that newer typer versions vendor (typer._click), where present."""
    mods = [click]
    try:
        import typer._click as vendored  # optional: typer >= 0.22 ships its own click

        mods.append(vendored)
    except ImportError:
        pass
    return mods


#: exceptions that already carry an exit status: typer.Exit / Abort and click's usage errors (exit 2, printed by click)
_PASSTHROUGH = (typer.Exit, typer.Abort, *(getattr(m.exceptions, n) for m in _click_modules() for n in ("Exit", "ClickException", "Abort")
                                            if hasattr(m.exceptions, n)))


def _current_context():
    for m in _click_modules():
        ctx = m.globals.get_current_context(silent=True)
        if ctx is not None:
            return ctx
    return None


#: argument names of the library that a command's option carries under another name (issue 21, case 9)
_ALIASES = {"n_batches": ("batches",), "from": ("from_dir",), "name": ("figure", "claim"), "path": ("store", "file", "out", "text", "model")}


def _as_typed(param) -> str:
    """How the user typed a parameter: its first flag (--L), or its metavar for a positional argument (STORE)."""
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.name).upper()  # how --help shows a positional argument
    return param.opts[0]


def _flag_names(msg: str) -> str:
    """"L: expected ..." -> "--L: expected ..." when L is an option of the running command (or an alias of one:
    the library's ``n_batches`` is ``--batches``, ``path`` the command's path argument)."""
    ctx = _current_context()
    head, sep, rest = msg.partition(":")
    if ctx is None or not sep or not head.isidentifier():
        return msg
    params = {p.name: p for p in ctx.command.params if p.opts}
    for name in (head, *_ALIASES.get(head, ())):
        if name in params and (name == head or ctx.params.get(name) is not None):
            return f"{_as_typed(params[name])}:{rest}"
    return msg


#: the widest integer any option reaches (torch seeds, sizes): a Python int beyond it is bad input, not an overflow later
_INT_MAX = 2**63 - 1


def _check_numbers(kwargs: dict) -> None:
    """Every integer option within 64 bits and every float option finite, before anything runs (exit 2 naming it)."""
    ctx = _current_context()
    params = {p.name: p for p in ctx.command.params} if ctx is not None else {}
    for name, value in kwargs.items():
        vals = value if isinstance(value, list | tuple) else [value]
        for v in vals:
            bad = None
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _INT_MAX:
                bad = f"expected an integer of at most 64 bits (|value| <= {_INT_MAX}), got {v}"
            elif isinstance(v, float) and not math.isfinite(v):
                bad = f"expected a finite number, got {v}"
            if bad:
                flag = _as_typed(params[name]) if name in params else name
                _fail(EXIT_USAGE, f"{flag}: {bad}")


def _fail(code: int, msg: str) -> None:
    """Print one error line on stderr (and the traceback with --debug), then exit with ``code``."""
    if _debug():
        traceback.print_exc()
    typer.echo(f"error: {_flag_names(msg)}", err=True)
    raise typer.Exit(code)


#: what Ctrl-C leaves behind, per command (by function name); the commands that store nothing say so
_INTERRUPTED_NOTHING_STORED = "nothing was stored; run the command again to start over"
_INTERRUPTED = {
    "reproduce": "what finished is stored; run the same command with the same --out again to resume",
    "sweep_norms": "what finished is stored; run the same command again to resume",
    "sweep_run": "what finished is stored; run the same command again to resume",
    "figures": "the figures finished so far are written; the others were not made (run the command again for them)",
    "grad": "grad stores nothing and does not resume: the gradients were not finished; run it again to start over "
            "(smaller --L, or --method auto / approx, is faster)",
}


def guarded(fn):
    """Run a command so that any error becomes an exit status and one line (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            _check_numbers(kwargs)
            return fn(*args, **kwargs)
        except _PASSTHROUGH:
            raise
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {_INTERRUPTED.get(fn.__name__, _INTERRUPTED_NOTHING_STORED)}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 (every error of a command ends in an exit status and one line)
            code, msg = _classify(e)
            _fail(code, msg)

    return wrapper


class _App(typer.Typer):
    """A Typer whose commands all run :func:`guarded` (so commands added later get the same error handling)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def deco(fn):
            register(guarded(fn))
            return fn

        return deco


app = _App(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
           help="LoRA theory as executable, measured checks.\n\nExit status: 0 done and the toolkit's own promises held (a paper or "
                "audit claim that fails is a finding in the report; check --claim: the claims asked about hold), 1 a promise broken "
                "(a toolkit.* claim, an uncaught control, a claim asked about; --strict: any claim fails), 2 bad usage or input "
                "(nothing computed), 3 something errored (a check crashed, points or figures failed), 130 interrupted.")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Print the full traceback of an error (also: LORA_THEORY_DEBUG=1).")) -> None:
    """LoRA theory as executable, measured checks. Exit status: 0 done, 1 a promise broken (see --help), 2 bad usage or input, 3 errored."""
    _STATE["debug"] = debug


class JobProgress:
    """Progress of a long job: a live display on a terminal, one plain line per finished item otherwise (on stderr).

    ``plan(kind, total, already)`` announces ``total`` items of a kind ("claims", "controls",
    "figures", "row blocks"), ``already`` of them done before (a resumed run);
    ``done(kind, name, status, seconds)`` records one finished item. The live display (rich) shows
    each kind's done / total, the elapsed time and an estimate of the time left (elapsed time per
    item finished by this invocation, times the items left); without a terminal each finished item
    prints ``[done/total elapsed, ~left] kind name: status (seconds)``.
    """

    def __init__(self, out: Console | None = None, *, live: bool | None = None, header: str = "") -> None:
        self.console = out or Console(stderr=True)
        self.header = header  # printed with the first plan, i.e. once the job's arguments were all accepted
        self.live = self.console.is_terminal if live is None else live
        self.totals: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.fresh = 0  # items finished by this invocation (the estimate's rate)
        self.t0 = time.perf_counter()
        self._bar = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> JobProgress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[last]}"), console=self.console, transient=False)
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _left(self) -> str:
        left = sum(self.totals.values()) - sum(self.counts.values())
        if not self.fresh or left <= 0:
            return ""
        return f"~{_duration((time.perf_counter() - self.t0) / self.fresh * left)} left"

    def plan(self, kind: str, total: int, already: int = 0) -> None:
        if self.header:
            self.console.print(self.header, highlight=False, markup=False, soft_wrap=True)
            self.header = ""
        self.totals[kind], self.counts[kind] = total, min(already, total)
        if self._bar is not None:
            if kind not in self._tasks:
                self._tasks[kind] = self._bar.add_task(kind, total=total, completed=self.counts[kind], eta="", last="")
            else:
                self._bar.update(self._tasks[kind], total=total, completed=self.counts[kind])

    def done(self, kind: str, name: str, status: str, seconds: float) -> None:
        self.counts[kind] = min(self.counts.get(kind, 0) + 1, self.totals.get(kind, 1 << 60))
        self.fresh += 1
        if self._bar is not None:
            left = self._left()
            for k, t in self._tasks.items():
                self._bar.update(t, completed=self.counts[k], eta=left if k == kind else "", last=f"{name}: {status}" if k == kind else "")
            return
        total = sum(self.totals.values())
        where = f"{sum(self.counts.values())}/{total}" if total else str(self.fresh)
        left = self._left()
        self.console.print(f"[{where} {_duration(time.perf_counter() - self.t0)}{', ' + left if left else ''}] {kind} {name}: {status} "
                           f"({seconds:.1f} s)", highlight=False, markup=False, soft_wrap=True)


class RowProgress:
    """Row blocks done of a long gradient pass (``grad``), on stderr: a live bar on a terminal, else a line about every
    10% of the rows (or minute): ``[elapsed] exact: rows done / L (percent), ~left``. Fed by :func:`lora_theory._progress.listen`."""

    def __init__(self, *, enabled: bool = True, out: Console | None = None, live: bool | None = None) -> None:
        self.enabled = enabled
        self.console = out or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.t0 = time.perf_counter()
        self._bar, self._task, self._next, self._last_print = None, None, 0.1, 0.0
        self.blocks = 0

    def __enter__(self) -> RowProgress:
        if self.enabled and self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[blocks]} row blocks, {task.percentage:>3.0f}%"),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=self.console)
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, what: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        self.blocks += done < total
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(what, total=total, blocks=0)
            self._bar.update(self._task, completed=done, total=total, description=what, blocks=self.blocks)
            return
        now = time.perf_counter() - self.t0
        frac = done / max(total, 1)
        if done and ((frac >= self._next and now - self._last_print >= 5) or now - self._last_print >= 60 or done >= total):
            left = f", ~{_duration(now / frac * (1 - frac))} left" if done < total else ""
            self.console.print(f"[{_duration(now)}] {what}: {done}/{total} rows in {self.blocks} row blocks ({frac:.0%}){left}",
                               highlight=False, markup=False, soft_wrap=True)
            self._next = math.floor(frac * 10 + 1) / 10
            self._last_print = now


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _echo_json(obj) -> None:
    typer.echo(_json.dumps(obj))


def _dtype(name: str):
    import torch

    table = {"float64": torch.float64, "float32": torch.float32}
    if name not in table:
        raise InvalidArgumentError(f"dtype: expected one of {', '.join(table)}, got {name!r}")
    return table[name]


def _device(name: str | None):
    """--device: a torch device that exists here (None: cpu)."""
    if name is None:
        return None
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(f"device: expected a torch device such as 'cpu' or 'cuda:0', got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device: expected an available device, got {name!r} (CUDA is not available here)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidArgumentError(f"device: expected a CUDA index < {torch.cuda.device_count()}, got {name!r}")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"device: expected 'cpu' or 'cuda[:N]', got {name!r}")
    return dev


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
        _echo_json(facts)
        return
    t = Table(show_header=False)
    for k, v in facts.items():
        t.add_row(k, str(v))
    console.print(t)


def _grad_memory(L: int, d: int, r: int, n_adapt: int, cross: bool, itemsize: int) -> tuple[int, int]:
    """(bytes for the instance and its exact gradients, bytes for the dense autograd reference), estimated up front.

    Instance: 3 d^2 weights, 2-3 L d inputs and targets, 2 r d per adapted matrix, drawn in float64
    and then cast (x2 for the transient copy). Exact gradients: row blocks of about 2^18 entries
    (``exact.default_block_size``), a few at a time, plus O(L d). The autograd reference forms
    L x L matrices: measured 3.0-3.9 L^2 entries at L = 2^10..2^12 (scores, probabilities and
    their gradients), so 4 L^2 here.
    """
    inst = 2 * 8 * (3 * d * d + (3 if cross else 2) * L * d + 2 * n_adapt * r * d)
    block = min(L, max(16, (1 << 18) // L))
    exact = itemsize * (4 * block * L + 8 * L * d + 2 * d * d)
    return inst + exact, itemsize * (4 * L * L + 8 * L * d)


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
    method: str = typer.Option("exact", "--method", help="exact (closed form), approx (polynomial method, certified to --eps) or auto "
                               "(the faster predicted method that can certify --eps)."),
    eps: float = typer.Option(1e-3, "--eps", help="Target relative error of exp for --method approx / auto."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """LoRA-attention gradients of one instance: norms, R, the plan, max error vs autograd, times.

    Memory is estimated before anything is allocated: sizes whose instance cannot fit are refused
    (exit 2); the plan (degree, k, bytes and predicted seconds of both methods) is computed before
    either runs and printed before long runs; an approximation that cannot be certified is refused
    (exit 2, with what would fit); the dense autograd reference (about 4 L^2 numbers) is skipped,
    with a message, when it cannot fit.
    """
    import torch

    from . import approx_gradients, approx_plan, autograd_gradients, exact_gradients, make_instance, max_rel_error, norm_bounds
    from ._memory import available_bytes, fmt_bytes
    from ._validate import check_choice, check_int
    from .limits.instance import parse_adapt

    check_choice("method", method, ("exact", "approx", "auto"))
    L, d = check_int("L", L, low=1), check_int("d", d, low=1)
    dt = _dtype(dtype)
    dev = _device(device)
    itemsize = torch.finfo(dt).bits // 8
    need, ref_need = _grad_memory(L, d, max(1, min(r, d)), len(parse_adapt(adapt)), attention == "cross", itemsize)
    avail = available_bytes()
    if avail is not None and need > avail:
        raise InvalidArgumentError(f"L, d: expected sizes whose instance fits in memory, got L={L}, d={d}: about {fmt_bytes(need)} "
                                   f"(3 d^2 weights, L d inputs), {fmt_bytes(avail)} available; lower --L or --d")
    inst = make_instance(L, d, r, adapt=adapt, attention=attention, bound=bound, beta=beta, seed=seed, dtype=dt, device=dev)
    sync = torch.cuda.synchronize if inst.device.type == "cuda" else (lambda: None)
    plan = approx_plan(inst, eps)  # degree, k, bytes and predicted seconds of both methods, nothing allocated
    chosen = plan.faster if method == "auto" else method
    long_run = max(plan.approx_seconds if chosen == "approx" else plan.exact_seconds, 0) > 2.0
    if not as_json and (method == "auto" or long_run):
        console.print(f"plan: {plan.summary()} -> {chosen}")  # before a long run (and before the O(L^2 d) norms), say what it will cost
    out: dict = {"instance": repr(inst), "norms": norm_bounds(inst), "method": chosen, "plan": {
        "degree": plan.degree, "k": plan.k, "certifiable": plan.certifiable, "approx_bytes": plan.approx_bytes, "exact_bytes": plan.exact_bytes,
        "approx_seconds_predicted": plan.approx_seconds, "exact_seconds_predicted": plan.exact_seconds, "cost_model": plan.model}}
    from ._progress import listen

    t0 = time.perf_counter()
    with RowProgress(enabled=long_run) as rows, listen(rows.update):
        if chosen == "approx":
            g, info = approx_gradients(inst, eps=eps)  # ApproximationError (exit 2) when eps cannot be certified
            out["error_bound"] = info.error_bound
            out["degree"], out["k"] = info.degree, info.rank
        else:
            g = exact_gradients(inst, block_size=block_size)
    sync()
    out[f"{chosen}_seconds"] = time.perf_counter() - t0
    if not no_autograd:
        room = available_bytes() if inst.device.type == "cpu" else torch.cuda.mem_get_info(inst.device)[0]
        if room is not None and ref_need > 0.8 * room:  # 0.8: leave room for the process itself and the allocator's slack
            out["autograd_skipped"] = (f"the dense autograd reference needs about {fmt_bytes(ref_need)} (4 L^2 numbers at L={L}), "
                                       f"more than 80% of the {fmt_bytes(room)} available")
        else:
            t0 = time.perf_counter()
            ref = autograd_gradients(inst)
            sync()
            out["autograd_seconds"] = time.perf_counter() - t0
            out["max_rel_err"] = {k: max_rel_error(g[k], ref[k]) for k in g}
    out["grad_norms"] = {k: float(v.norm()) for k, v in g.items()}
    if as_json:
        _echo_json(out)
        return
    console.print(out["instance"])
    t = Table("quantity", "value")
    for k, v in out["norms"].items():
        t.add_row(f"norm {k}", _num(v, ".4g"))
    for k, v in out.get("max_rel_err", {}).items():
        t.add_row(f"rel err {k}", _num(v, ".2e"))
    for k, v in out.get("error_bound", {}).items():
        t.add_row(f"certified bound {k}", _num(v, ".2e"))
    t.add_row(f"{chosen} (s)", f"{out[f'{chosen}_seconds']:.4f}")
    if "autograd_seconds" in out:
        t.add_row("autograd (s)", f"{out['autograd_seconds']:.4f}")
    console.print(t)
    if "autograd_skipped" in out:
        console.print(f"autograd reference skipped: {out['autograd_skipped']}")


def _num(v: object, spec: str) -> str:
    from .plotting import fmt

    return fmt(v, spec, missing=f"{v} (not finite)")


def _print_checks(df, as_json: bool) -> None:
    if as_json:
        _echo_json(df.drop(columns=["error"]).to_dict("records"))
        return
    _print_table(["id", "verdict", "measured", "s"],
                 [[row.id, f"[{_VERDICT_STYLE.get(row.verdict, 'white')}]{row.verdict}[/]", str(row.summary), f"{row.seconds:.1f}"]
                  for row in df.itertuples()], keys=1)


def _print_table(columns: list[str], rows: list[list[str]], *, keys: int = 1, plain: bool = False) -> None:
    """A table whose first ``keys`` columns (ids, names) are printed in full at any width: never cut or folded, so they can
    be copied; the other columns wrap. ``plain``, or a terminal too narrow for the keys beside 20 columns of the rest: one
    tab-separated line per row (markup removed) instead."""
    from rich.text import Text

    widths = [max([len(Text.from_markup(str(r[i])).plain) for r in rows] + [len(columns[i])]) for i in range(keys)]
    if plain or sum(widths) + 3 * len(columns) + 20 > console.width:
        for r in rows:
            typer.echo("\t".join(Text.from_markup(str(v)).plain for v in r))
        return
    t = Table(*columns)
    for i, col in enumerate(t.columns):
        if i < keys:
            col.no_wrap, col.min_width = True, widths[i]
        else:
            col.overflow = "fold"
    for r in rows:
        t.add_row(*r)
    console.print(t)


_EXPERIMENTS = typer.Option(None, "--experiments/--no-experiments",
                            help="Also run the fine-tuning claims (and figures): about 30 CPU-minutes on 2 cores for the quick budget, "
                                 "stored and resumable. Default: only with --full.")


@app.command()
def check(
    claim: Optional[list[str]] = typer.Option(None, "--claim", help="Claim id (repeatable); default all."),
    full: bool = typer.Option(False, "--full", help="Paper-scale configuration instead of the quick one."),
    as_json: bool = typer.Option(False, "--json"),
    list_only: bool = typer.Option(False, "--list", help="List the claims without running them."),
    controls: bool = typer.Option(False, "--controls", help="Run the claims' negative controls instead: claim, control, verdict under control, caught."),
    experiments: Optional[bool] = _EXPERIMENTS,
    strict: bool = typer.Option(False, "--strict", help="Without --claim: exit 1 when any claim fails (default: only a toolkit.* claim "
                                "that does not hold; the papers' and audits' fails are findings, as in reproduce)."),
    plain: bool = typer.Option(False, "--plain", help="With --list: one 'id<TAB>statement<TAB>reference' line per claim, no table."),
) -> None:
    """Run claim checks and print a table (exit 1 if a claim asked for with --claim fails, 3 if a check errored; inconclusive is not a failure).

    Without --claim every claim runs and the exit status follows reproduce's rule: 1 only when a toolkit.* claim does not
    hold (--strict: when any claim fails). With --controls: run the claims' negative controls instead (exit 1 unless every
    control is caught). Without --claim, the fine-tuning claims run only with --experiments (or --full).
    """
    from .claims import all_claims, get_claim, run_checks

    if list_only:
        if as_json:
            _echo_json([{"id": c.id, "statement": c.statement, "reference": c.reference} for c in all_claims()])
            return
        _print_table(["id", "statement", "reference"], [[c.id, c.statement, c.reference] for c in all_claims()], keys=1, plain=plain)
        return
    asked = bool(claim)
    for c in claim or []:
        get_claim(c)  # an unknown id is bad input (exit 2) before anything runs
    if not claim:
        claim = _default_claims(full if experiments is None else experiments)
    if controls:
        _check_controls(claim, full, as_json)
        return
    from ._memory import reuse_freed_memory

    reuse_freed_memory()  # the page faults of freed tensors' memory are most of a check's system time (see _memory)
    with console.status("checking...") as status:
        df = run_checks(claim, quick=not full, progress=lambda cid: status.update(f"checking {cid}"))
    _print_checks(df, as_json)
    raise typer.Exit(_checks_exit(df, strict=asked or strict))


def _default_claims(experiments: bool) -> list[str]:
    """Every claim id, less the fine-tuning experiment's unless ``experiments`` (named on stderr when skipped)."""
    from .report import select

    ids, _, skipped = select(None, [], experiments)
    if skipped["claims"]:
        typer.echo(f"note: skipping {len(skipped['claims'])} fine-tuning claims ({', '.join(skipped['claims'])}); --experiments runs them", err=True)
    return ids


def _checks_exit(df, figure_errors: dict | None = None, *, controls=None, strict: bool = True) -> int:
    """exit_status of a table of checks; errored checks and figures are also named on stderr."""
    from .report import exit_status

    code = exit_status(df, figure_errors, controls=controls, strict=strict)
    errored = list(df.id[df.verdict == "error"])
    if errored:
        typer.echo(f"error: {len(errored)} check(s) errored: {', '.join(errored)} (the table and report say why; a re-run runs them again)", err=True)
    if figure_errors:
        typer.echo(f"error: {len(figure_errors)} figure(s) failed: {', '.join(figure_errors)} (--retry-failed re-runs them)", err=True)
    return code


def _sweep_options(max_retries: int, point_timeout: Optional[float]) -> dict:
    from ._validate import check_int, check_positive

    return {"max_retries": check_int("max_retries", max_retries, low=0),
            "point_timeout": None if point_timeout is None else check_positive("point_timeout", point_timeout)}


_MAX_RETRIES = typer.Option(2, "--max-retries", help="Re-runs of a point whose worker died (SIGKILL, out of memory) before it is stored as failed.")
_POINT_TIMEOUT = typer.Option(None, "--point-timeout", help="Seconds after which a running point is killed and stored as failed ('timeout'); uses worker processes.")
_FORCE = typer.Option(False, "--force", help="Overwrite existing output files even if lora-theory did not write them.")


def _check_controls(claim: Optional[list[str]], full: bool, as_json: bool) -> None:
    """``check --controls``: every negative control of the selected claims; exit 1 unless all are caught."""
    from .claims import all_claims, get_claim, run_controls

    from ._memory import reuse_freed_memory

    ids = None if not claim else [get_claim(c).id for c in claim]
    reuse_freed_memory()  # see check
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


def _cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _fresh_folder(stem: str) -> Path:
    """A folder name in the working folder that does not exist yet: STEM-YYYYmmdd-HHMMSS (-2, -3, ... if taken)."""
    base = Path(f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


@app.command()
def reproduce(
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for report.md, results.json, figures/ and store.sqlite "
                                       "(default: a fresh folder results-DATE-TIME here). The same --out again resumes."),
    quick: bool = typer.Option(True, "--quick/--full", help="About two minutes on 2 cores (default) or paper scale."),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="Worker processes for the checks, controls and figures (default: this machine's cores)."),
    executor: str = typer.Option("inprocess", "--executor", help="'inprocess', 'process', 'dask-local' or 'dask://HOST:PORT' "
                                 "(with --jobs > 1, 'inprocess' means a local process pool)."),
    claim: Optional[list[str]] = typer.Option(None, "--claim", help="Only these claim ids (repeatable; default: all)."),
    figure: Optional[list[str]] = typer.Option(None, "--figure", help="Only these figures (repeatable; default: all)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also re-run failed points (worker died, timeout, a figure that raised); "
                                      "errored checks are always re-run."),
    max_retries: int = _MAX_RETRIES,
    point_timeout: Optional[float] = _POINT_TIMEOUT,
    force: bool = _FORCE,
    controls: bool = typer.Option(True, "--controls/--no-controls", help="Also run every claim's negative controls (the report says 'controls caught: k of n')."),
    experiments: Optional[bool] = _EXPERIMENTS,
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any claim fails, including the papers' and the audits' (findings)."),
) -> None:
    """Run every claim check, its negative controls and every figure, and write OUT/report.md and OUT/results.json (resumes from OUT/store.sqlite).

    Exit 0 when the job ran and the toolkit's own promises held: every toolkit.* claim holds, every negative control was
    caught, nothing errored. A claim of a paper or an audit that fails is a finding, shown in the report and the summary,
    not an exit status (--strict: exit 1 for it too). Exit 1 when a toolkit.* claim does not hold or a control was not
    caught, 3 when a check or figure errored; the report is written in each of these cases. Progress: a live display on a
    terminal, one line per finished item on stderr otherwise.
    """
    from ._validate import check_int
    from .report import reproduce as _reproduce
    from .sweeps.executors import check_executor

    jobs = _cores() if jobs is None else check_int("jobs", jobs, low=1)
    check_executor(executor)
    opts = _sweep_options(max_retries, point_timeout)
    if out is None:
        out = _fresh_folder("results")
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):  # the model loads' own bars would break the progress lines
        os.environ.setdefault(var, "1")
    header = f"reproduce: {'quick' if quick else 'full'}, {jobs} job(s), writing to {out}/"
    try:
        with JobProgress(Console(stderr=True), header=header) as tracker:
            df, report = _reproduce(out, quick=quick, progress=None, jobs=jobs, claims=claim or None, figures=figure or None,
                                    executor="process" if jobs > 1 and executor == "inprocess" else executor, retry_failed=retry_failed,
                                    force=force, controls=controls, experiments=experiments, strict=strict, tracker=tracker, **opts)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: what finished is stored in {out}/store.sqlite; run the same command again to resume "
                   f"(with --out {out})", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _print_checks(df, as_json=False)
    for name, e in df.attrs.get("figure_errors", {}).items():
        console.print(f"[magenta]figure {name} failed[/]: {e}")
    _print_summary(report)
    raise typer.Exit(_checks_exit(df, df.attrs.get("figure_errors"), controls=df.attrs.get("controls"), strict=strict))


def _print_summary(report: Path) -> None:
    """The report's summary and exit-status lines (the same words as the report), then where it is."""
    lines = report.read_text().splitlines()
    for ln in lines:
        if ln.startswith("**") and "claims hold" in ln or ln.startswith("Exit status") or ln.startswith("Time: "):
            console.print(ln.replace("**", ""), highlight=False, markup=False, soft_wrap=True)
    console.print(f"report: {report}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def figures(
    name: Optional[list[str]] = typer.Argument(None, help="Figure names (default: all)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for NAME.png and NAME.csv (default: a fresh folder figures-DATE-TIME here)."),
    full: bool = typer.Option(False, "--full", help="Paper-scale sweeps."),
    from_dir: Optional[Path] = typer.Option(None, "--from", help="Redraw without recomputing: a folder of NAME.csv files or a reproduce store (OUT/store.sqlite)."),
    list_only: bool = typer.Option(False, "--list"),
    force: bool = _FORCE,
) -> None:
    """Regenerate figures (compute + plot), or redraw them from stored tables (exit 3 if a figure could not be made)."""
    import pandas as pd

    from ._outputs import check_folder, check_output, record_output
    from .studies import all_figures, get_figure, render

    if list_only:
        for spec in all_figures():
            console.print(f"[bold]{spec.name}[/]: {spec.description} ({', '.join(spec.claims)})")
        return
    names = name or [s.name for s in all_figures()]
    for n in names:
        get_figure(n)  # unknown names are bad input before anything is computed
    tables = None
    if from_dir is not None:
        if from_dir.is_file():  # a reproduce store: redraw from its tables
            from .report import stored_figure_tables

            tables = stored_figure_tables(from_dir)
        elif not from_dir.is_dir():
            raise InvalidArgumentError(f"from: expected a folder of NAME.csv files or a reproduce store, got {from_dir} (does not exist)")
        if not name:  # no names asked for: redraw every figure whose table is there (a quick reproduce stores no fine-tuning tables)
            names = [n for n in names if (n in tables if tables is not None else (from_dir / f"{n}.csv").is_file())]
            if not names:
                raise InvalidArgumentError(f"from: expected stored figure tables in {from_dir}, found none")
        for n in names:
            if tables is not None and n not in tables:
                raise InvalidArgumentError(f"from: expected a stored table for {n!r} in {from_dir}, found {sorted(tables)}")
            if tables is None and not (from_dir / f"{n}.csv").is_file():
                raise InvalidArgumentError(f"from: expected {from_dir / f'{n}.csv'} to exist")
    if out is None:
        out = _fresh_folder("figures")
    check_folder(out, what="out")
    for n in names:
        for ext in ("csv", "png"):
            check_output(out / f"{n}.{ext}", force=force, what="out")
    failed = 0
    for n in names:
        data = None if from_dir is None else (tables[n] if tables is not None else pd.read_csv(from_dir / f"{n}.csv"))
        try:
            with console.status(f"figure {n}..."):
                paths = render(n, out, quick=not full, data=data)
        except Exception as e:  # noqa: BLE001 (one failing figure is reported; the others are still made)
            if _debug():
                traceback.print_exc()
            typer.echo(f"error: figure {n}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", err=True)
            failed += 1
            continue
        for path in paths.values():
            record_output(path)
        console.print(f"{n}: {paths['png']}")
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)

@app.command()
def regime(
    model: str = typer.Option("minilm", "--model", help="'minilm' (the offline pretrained MiniLM) or a local Hugging Face model folder."),
    text: Optional[Path] = typer.Option(None, "--text", help="A text file of real text (default: CPython's Language Reference prose)."),
    L: int = typer.Option(256, "--L", help="Tokens per sequence (including special tokens)."),
    sequences: int = typer.Option(8, "--sequences", help="Sequences of L tokens (consecutive windows of the text)."),
    eps: float = typer.Option(1e-3, "--eps", help="Target relative error of the exp polynomial (degree and rank k)."),
    dtype: str = typer.Option("float32", "--dtype", help="Model dtype: float32, bfloat16 or float64 (the report is float64)."),
    as_json: bool = typer.Option(False, "--json", help="Print the per-head table as JSON."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the per-head table to this CSV file."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write the phase-diagram PNG (R vs L, sqrt(ln L), R / sqrt(ln L) per layer) "
                                          "to this file; without it no figure is written."),
    no_figure: bool = typer.Option(False, "--no-figure", help="Do not draw the figure (the default unless --figure is given)."),
    plain: bool = typer.Option(False, "--plain", help="Tab-separated lines instead of the table."),
    force: bool = typer.Option(False, "--force", help="Overwrite --csv / --figure files the toolkit did not write."),
) -> None:
    """Where a model's attention heads sit on the phase diagram: R = max |S_ij| per head on real text, vs sqrt(ln L) (issue 13)."""
    import math

    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
    if dtype not in dtypes:
        raise InvalidArgumentError(f"--dtype: expected one of {', '.join(dtypes)}, got {dtype!r}")
    for name, value, low in (("--L", L, 3), ("--sequences", sequences, 1)):
        if value < low:
            raise InvalidArgumentError(f"{name}: expected an integer >= {low}, got {value}")
    if not 0 < eps < 1:
        raise InvalidArgumentError(f"--eps: expected a number in (0, 1), got {eps}")
    if model != "minilm" and not Path(model).is_dir():
        raise InvalidArgumentError(f"--model: expected 'minilm' or a local model folder, got {model!r}")
    if model != "minilm" and not (Path(model) / "config.json").is_file():  # before loading anything (issue 21, case 8)
        raise InvalidArgumentError(f"--model: expected a Hugging Face model folder (with a config.json), got {model!r}")
    from ._outputs import check_output, write_output

    draw = figure is not None and not no_figure
    for path in ([csv] if csv is not None else []) + ([figure] if draw else []):
        flag = "--csv" if path == csv else "--figure"
        check_output(path, force=force, what=flag)  # before computing
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):  # an unwritable folder: refuse before measuring (case 9)
            raise InvalidArgumentError(f"{flag}: expected a file in a writable folder, got {str(path)!r} ({str(folder)!r} "
                                       f"{'is not writable' if folder.is_dir() else 'does not exist'})")
    import json

    from .lora.pretrained import minilm_path

    try:  # the model's positions, from its config alone (before any weight is loaded; issue 21, case 8)
        cfg = json.loads(((minilm_path() if model == "minilm" else Path(model)) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"--model: expected a model folder with a readable config.json, got {model!r} ({e})") from None
    max_pos = cfg.get("max_position_embeddings") if isinstance(cfg, dict) else None
    if isinstance(max_pos, int) and L > max_pos:
        raise InvalidArgumentError(f"--L: expected at most the model's {max_pos} positions, got {L}")
    from .limits.regime import attention_regime, regime_summary
    from .lora.text import load_text, load_tokenizer, text_batches, text_fingerprint

    body = load_text(text)
    with console.status(f"loading {model}..."):
        if model == "minilm":
            from .lora.pretrained import load_minilm

            net, tok = load_minilm(dtypes[dtype]), load_tokenizer()
        else:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModel  # heavy

            try:
                net, tok = AutoModel.from_pretrained(model, dtype=dtypes[dtype]).eval(), load_tokenizer(model)
            except (OSError, ValueError, KeyError) as e:  # a folder that is not a model transformers can load
                raise InvalidArgumentError(f"--model: expected a model folder transformers can load, got {model!r} "
                                           f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    batches = text_batches(tok, L, batch_size=sequences, text=body)
    with console.status("measuring every head..."):
        df = attention_regime(net, batches, eps=eps)
    df["text"] = text_fingerprint(body)
    if csv is not None:
        write_output(csv, lambda tmp: df.to_csv(tmp, index=False), force=force, what="--csv")
    if draw:
        import matplotlib  # heavy

        matplotlib.use("Agg")
        from .plotting.limits import plot_real_heads

        fig = plot_real_heads(df)
        write_output(figure, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"), force=force, what="--figure")
    if as_json:
        _echo_json(df.assign(k=df["k"].map(str)).to_dict(orient="records"))
        return
    summary = regime_summary(df)
    _print_table(["layer", "R min", "R med", "R max", "ratio med", "ratio max", "lin", "<=lnL", "G<=", "degree"],
                 [[str(r.layer), f"{r.R_min:.3g}", f"{r.R_median:.3g}", f"{r.R_max:.3g}", f"{r.ratio_median:.2f}", f"{r.ratio_max:.2f}",
                   f"{r.frac_almost_linear:.0%}", f"{r.frac_R_below_ln_L:.0%}", f"{r.frac_Gamma_below_sqrt_ln_L:.0%}", f"{r.degree_min}..{r.degree_max}"]
                  for r in summary.itertuples()], keys=1, plain=plain)
    console.print(f"{model}: {len(df)} heads, {sequences} x {L} tokens of {'the Language Reference' if text is None else text} (text {text_fingerprint(body)}); "
                  f"R = max |S_ij| per head; ratio = R / sqrt(ln L), sqrt(ln L) = {math.sqrt(math.log(L)):.3f}; lin: the fraction of heads in the "
                  f"almost-linear regime (R <= sqrt(ln L)); <=lnL: with R <= ln L; G<=: with max(gamma_q, gamma_k) <= sqrt(ln L) (the entry bound); "
                  f"degree: of the exp polynomial at eps = {eps:g}"
                  + (f"; figure: {figure}" if draw else ""))



sweep_app = _App(no_args_is_help=True, help="Parameter sweeps that write each finished point to disk and resume.")
app.add_typer(sweep_app, name="sweep")


def _sweep_exit(counts: dict, failed_in_store: int, name: str, store: Path) -> int:
    """130 when interrupted; 3 when a point of the sweep is stored as failed (now or by an earlier run; said on stderr); else 0."""
    if counts.get("interrupted"):
        return EXIT_INTERRUPTED
    if counts.get("failed") or failed_in_store:
        typer.echo(f"error: {failed_in_store} point(s) of sweep {name!r} are stored as failed in {store} (their errors: "
                   f"`lora-theory sweep export {store} FILE.csv --sweep {name}`, column _error; --retry-failed re-runs them)", err=True)
        return EXIT_ERROR
    return EXIT_OK


def _failed_points(store: Path, name: str, points: list[dict], seed: Optional[int]) -> int:
    from .sweeps import ResultStore, point_hash

    hashes = {point_hash(name, p, seed) for p in points}
    with ResultStore(store, readonly=True) as st:
        df = st.load(name)
    return int(df[df._hash.isin(hashes)]._error.notna().sum()) if len(df) else 0


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
    max_retries: int = _MAX_RETRIES,
    point_timeout: Optional[float] = _POINT_TIMEOUT,
    force: bool = _FORCE,
) -> None:
    """Gradient error of the polynomial method at a fixed degree vs Gamma (limits.thm4.1_regime), through the sweep engine.

    Exit 3 when a point failed (see the store's errors), 0 otherwise.
    """
    import math

    from ._outputs import check_output
    from ._validate import check_int
    from .limits.norm_sweeps import approx_error
    from .sweeps import ResultStore, grid, run_sweep

    for k in kind:
        if k not in ("random", "hard"):
            raise InvalidArgumentError(f"kind: expected 'random' or 'hard', got {k!r}")
    seeds = check_int("seeds", seeds, low=1)
    jobs = check_int("jobs", jobs, low=1)
    for g in gamma:
        if not math.isfinite(g) or g <= 0:
            raise InvalidArgumentError(f"gamma: expected finite numbers > 0, got {g!r}")
    if out is not None:
        if out.suffix not in (".csv", ".parquet"):
            raise InvalidArgumentError(f"out: expected a .csv or .parquet file name, got {out.name!r}")
        check_output(out, force=force, what="out")  # before computing: never write into a file we did not create
    opts = _sweep_options(max_retries, point_timeout)
    points = grid(kind=list(kind), L=list(L), gamma=[float(g) for g in gamma], seed=list(range(seeds)), d=[d], degree=[degree], adapt=[adapt])
    counts = run_sweep(approx_error, points, store, name="norms", jobs=jobs, executor="process" if jobs > 1 or point_timeout else "inprocess", **opts)
    with ResultStore(store, readonly=True) as st:
        df = st.load("norms")
        if out is not None and len(df):
            console.print(f"wrote {st.export(out, 'norms', force=force)}")
    t = Table("kind", "L", "Gamma", "R", "valid", "rel err")
    if len(df) and "R" in df:
        for r in df.sort_values(["kind", "L", "gamma"]).to_dict("records"):
            t.add_row(str(r["kind"]), str(r["L"]), f"{r['gamma']:g}", _num(r.get("R"), ".3g"), str(r.get("valid")), _num(r.get("rel_err"), ".2e"))
    console.print(t)
    console.print(counts)
    raise typer.Exit(_sweep_exit(counts, _failed_points(store, "norms", points, 0), "norms", store))


@sweep_app.command("run")
def sweep_run(
    file: Path = typer.Argument(..., help="TOML sweep file: name, function = 'module:attr', [grid] axes."),
    store: Path = typer.Option(Path("sweeps.sqlite"), "--store", help="SQLite results store (created if missing)."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes."),
    executor: str = typer.Option("process", "--executor", help="'process', 'inprocess', 'dask-local' or 'dask://HOST:PORT'."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-run points stored with an error."),
    max_retries: int = _MAX_RETRIES,
    point_timeout: Optional[float] = _POINT_TIMEOUT,
) -> None:
    """Run a sweep durably: finished points are skipped, each new one is committed as it finishes.

    Several `sweep run` processes on one store share the points (each is leased before it runs). Exit 3 when a point of
    the sweep is stored as failed (by this run or an earlier one; --retry-failed re-runs them), 0 when all are done.
    """
    from .sweeps import load_toml, run_sweep

    spec = load_toml(file)
    opts = _sweep_options(max_retries, point_timeout)
    counts = run_sweep(spec.fn, spec.points, store, name=spec.name, jobs=jobs, executor=executor, seed=spec.seed, retry_failed=retry_failed, **opts)
    console.print(counts)
    raise typer.Exit(_sweep_exit(counts, _failed_points(store, spec.name, spec.points, spec.seed), spec.name, store))


@sweep_app.command("status")
def sweep_status(store: Path = typer.Argument(..., help="SQLite results store."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Points per sweep in a store: done, failed and running (leased by a live run)."""
    from .sweeps import ResultStore

    with ResultStore(store, readonly=True) as st:
        df = st.sweeps()
    if as_json:
        _echo_json(df.to_dict("records"))
        return
    t = Table("sweep", "points", "failed", "running", "compute s", "last finished (UTC)")
    for r in df.itertuples():
        t.add_row(str(r.sweep), str(r.points), str(int(r.failed)), str(r.running), f"{r.seconds:.1f}", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.last)))
    console.print(t)


@sweep_app.command("export")
def sweep_export(store: Path = typer.Argument(...), out: Path = typer.Argument(..., help="NAME.csv or NAME.parquet"),
                 sweep: Optional[str] = typer.Option(None, "--sweep"), force: bool = _FORCE) -> None:
    """Export a store (or one sweep of it) as CSV or Parquet (an unknown sweep is an error and creates nothing)."""
    from .sweeps import ResultStore

    with ResultStore(store, readonly=True) as st:
        console.print(f"wrote {st.export(out, sweep, force=force)}")


audit_app = _App(no_args_is_help=True, help="Audit third-party implementations against the papers' theorems.")
app.add_typer(audit_app, name="audit")


@audit_app.command("lora-ga")
def audit_lora_ga_cmd(
    implementation: list[str] = typer.Option(["peft", "lora_theory"], "--implementation", help="'peft' and/or 'lora_theory'."),
    r: int = typer.Option(8, "--r"),
    alpha: float = typer.Option(16.0, "--alpha"),
    batches: int = typer.Option(2, "--batches", help="Batches for the gradient estimate."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the per-layer table as CSV."),
    as_json: bool = typer.Option(False, "--json"),
    force: bool = _FORCE,
) -> None:
    """LoRA-GA on MiniLM (q, v): alignment with G_2r, stable scale and output change, per direction and scale."""
    import pandas as pd

    from ._outputs import check_output, write_output
    from .finetune.tasks import teacher_student_task
    from .lora.pretrained import embed, load_minilm, token_batches
    from .lora_ga.audit import audit_lora_ga

    if r < 1 or r > 384:  # MiniLM's hidden size is 384: a rank beyond it has no meaning (issue 21, case 8)
        raise InvalidArgumentError(f"--r: expected an integer in [1, 384] (MiniLM's hidden size), got {r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise InvalidArgumentError(f"--alpha: expected a positive number, got {alpha}")
    if batches < 1:
        raise InvalidArgumentError(f"--batches: expected an integer >= 1, got {batches}")
    if out is not None:
        check_output(out, force=force, what="--out")  # before the audit runs
    model = load_minilm()
    task = teacher_student_task(model)
    data = token_batches(batches, 4, 16)
    df = pd.concat([audit_lora_ga(impl, model, data, task.loss, embed, ["query", "value"], r=r, alpha=alpha) for impl in implementation])
    if out is not None:
        write_output(out, lambda tmp: df.to_csv(tmp, index=False), force=force, what="out")
    cols = ["rel_residual", "multiple_over_zeta", "cosine", "eckart_young", "fwd_moment", "output_change"]
    summary = df.groupby(["implementation", "direction", "scale"], as_index=False)[cols].median()
    if as_json:
        _echo_json(summary.to_dict("records"))
        return
    t = Table("impl", "direction", "scale", "residual to zeta G_2r", "s*/zeta", "cos(step, G)", "EY optimum", "E|eta B A x|^2/m", "output change")
    for row in summary.itertuples():
        t.add_row(row.implementation, row.direction, row.scale, f"{row.rel_residual:.2e}", f"{row.multiple_over_zeta:.3g}", f"{row.cosine:.4f}",
                  f"{row.eckart_young:.4f}", f"{row.fwd_moment:.3g}", f"{row.output_change:.1e}")
    console.print(t)
    console.print("medians over layers; stable-scale prediction alpha^2/gamma^2 = " + f"{alpha**2 / 16**2:g}")


@app.command()
def notes(
    write: bool = typer.Option(False, "--write", help="Rewrite the stale generated spans in place (default: only check)."),
    root: Optional[Path] = typer.Option(None, "--root", help="The checkout whose README.md and paper_notes/ to sync (default: this package's)."),
) -> None:
    """Check (or --write) the generated numbers in README.md and paper_notes/*.md against the stored results; exit 1 when stale."""
    from .docs_sync import main as docs_sync_main  # the one home of the mechanism; this is its command-line face

    raise typer.Exit(docs_sync_main((["--write"] if write else ["--check"]) + (["--root", str(root)] if root else [])))


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
