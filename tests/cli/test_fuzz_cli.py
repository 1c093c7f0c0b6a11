"""Fuzz the command line (issue 11, section 2): random and malformed arguments through typer's CliRunner.

Every invocation must end with a documented exit status (0 holds / 1 fails / 2 bad usage or input / 3 errored), print
no traceback, say what went wrong on stderr when it fails, print strict JSON (no NaN / Infinity tokens) on stdout when
``--json`` is given and it succeeds, and finish within 60 s (a guard against sizes the CLI should have refused).

Arguments are drawn per command from valid values, edge values (0, negatives, 2^62, 1e308, inf, nan, empty strings),
junk text and paths of every kind (missing, a folder, a file under a file, a foreign CSV, a foreign SQLite file, garbage
bytes, a real store, a sweep file). Expensive paths are kept cheap: only the two fastest claims and the cheapest figure
are named, and every ``reproduce`` / ``figures`` call names them (their defaults would run everything).

Before this change it failed at once: e.g. ``grad --bound 1e6 --json`` printed Infinity, ``grad --d 100000`` ended in a
traceback, ``sweep export --sweep nosuch`` exited 0, and a failed sweep point exited 0 where 3 is documented.
"""
from __future__ import annotations

import collections
import json
import signal
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lora_theory.cli import app

runner = CliRunner()
#: what the fuzz saw: exit status -> invocations (printed at the end of the module, see the report)
SEEN: collections.Counter = collections.Counter()

_BASE = settings.default.max_examples
CHEAP = settings(max_examples=4 * _BASE, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
COSTLY = settings(max_examples=_BASE, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

CHEAP_CLAIMS = ["limits.rank_count", "limits.degree_bound"]
CHEAP_FIGURE = "degree_vs_range"


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Commands drawn without --out write a fresh folder into the working folder: never the repository's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def paths():
    """A zoo of paths, made once per module (hypothesis calls the test many times)."""
    root = Path(tempfile.mkdtemp(prefix="lora-theory-cli-fuzz-"))
    (root / "dir").mkdir()
    (root / "file.txt").write_text("not a folder")
    (root / "foreign.csv").write_text("name,score\nalice,3\n")
    (root / "garbage.sqlite").write_bytes(b"\x00garbage" * 50)
    with sqlite3.connect(root / "foreign.sqlite") as c:
        c.execute("CREATE TABLE t (a)")
    (root / "sweep.toml").write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0, -1.0]\n')
    (root / "bad.toml").write_text('name = "sq"\nfunction = "no.such:thing"\n[grid]\nx = [1]\n')
    (root / "junk.toml").write_text("this is [not toml")
    res = runner.invoke(app, ["sweep", "run", str(root / "sweep.toml"), "--store", str(root / "store.sqlite"), "--executor", "inprocess"])
    assert res.exit_code == 3, res.output  # one point raises: a store with a done and a failed point
    yield {
        "missing": root / "missing" / "x.csv", "missing_file": root / "nothing.sqlite", "dir": root / "dir", "file": root / "file.txt",
        "under_file": root / "file.txt" / "sub", "foreign_csv": root / "foreign.csv", "garbage": root / "garbage.sqlite",
        "foreign_db": root / "foreign.sqlite", "store": root / "store.sqlite", "toml": root / "sweep.toml", "bad_toml": root / "bad.toml",
        "junk_toml": root / "junk.toml", "new_csv": root / "out.csv", "new_parquet": root / "out.parquet", "new_dir": root / "outdir",
        "bad_suffix": root / "out.xlsx", "proc": Path("/proc/lora-theory-nope/x"),
    }
    counts = dict(sorted(SEEN.items()))
    print(f"\nCLI fuzz: {sum(SEEN.values())} invocations, by exit status {counts}")


INTS = st.sampled_from(["-9223372036854775808", "-1", "0", "1", "2", "3", "4", "8", "17", "64", "2147483648", "4611686018427387904",
                        "1000000000000000000000000000000", "1.5", "x", ""])
SMALL = st.sampled_from(["1", "2", "3", "4", "8", "16", "32", "64"])
NUMBERS = st.sampled_from(["0", "-1", "1e-300", "0.5", "1", "2", "3", "1e6", "1e308", "inf", "-inf", "nan", "abc", ""])
TEXT = st.one_of(st.sampled_from(["qv", "qkv", "kv", "v", "q", "self", "cross", "general", "", "random", "hard", "easy"]), st.text(max_size=5))
EXECUTORS = st.sampled_from(["inprocess", "process", "spark", "dask://", "dask://:1", ""])


def _opt(flag: str, value: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just([]), value.map(lambda v: [flag, str(v)]))


def _path(paths, keys=None) -> st.SearchStrategy:
    return st.sampled_from(sorted(paths) if keys is None else keys).map(lambda k: str(paths[k]))


def _args(*parts) -> st.SearchStrategy:
    """Concatenate option lists; sometimes add an unknown option or drop the last value (a dangling flag)."""
    return st.tuples(*parts, st.sampled_from([[], [], [], ["--zzz"], ["--json"], ["extra"]]), st.booleans()).map(
        lambda t: [x for p in t[:-2] for x in p] + t[-2] if not t[-1] else ([x for p in t[:-2] for x in p] + t[-2])[:-1] or ["--help"])


_VALUED = {"--out", "--from", "--claim", "--figure", "--store", "--sweep", "--L", "--d", "--r", "--jobs", "--executor"}


def _bounded(args: list[str]) -> list[str]:
    """Never let a draw fall back to a default that runs everything: `check` without --claim runs every claim, `figures`
    without a name draws every figure, `sweep norms` without --L runs L = 256, 1024 (minutes each)."""
    if args[:1] == ["check"] and "--claim" not in args and "--list" not in args:
        return [*args, "--list"]
    if args[:1] == ["figures"] and "--list" not in args:
        names = [a for i, a in enumerate(args[1:], 1) if not a.startswith("--") and args[i - 1] not in _VALUED]
        if not names:
            return [*args, "--list"]
    if args[:1] == ["reproduce"] and not ("--claim" in args and "--figure" in args):
        return [*args, "--claim", CHEAP_CLAIMS[0], "--figure", CHEAP_FIGURE]
    if args[:2] == ["sweep", "norms"] and "--L" not in args:
        return [*args, "--L", "8"]
    return args


def _invoke(args: list[str]):
    """Run one command; check the documented behaviour; return the result."""
    args = _bounded(args)
    def hang(signum, frame):
        raise AssertionError(f"lora-theory {' '.join(args)} ran for more than 60 s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        res = runner.invoke(app, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    SEEN[res.exit_code] += 1
    where = f"lora-theory {' '.join(args)} -> exit {res.exit_code}\n{res.output[-3000:]}"
    assert res.exit_code in (0, 1, 2, 3), where
    assert res.exception is None or isinstance(res.exception, SystemExit), f"{where}\nescaped: {res.exception!r}"
    assert "Traceback" not in res.output, where
    if res.exit_code in (2, 3):
        assert res.stderr.strip(), f"{where}\n(a failure with nothing on stderr)"
    if "--json" in args and res.exit_code in (0, 1) and "--help" not in args and res.stdout.strip():
        def bad(token):
            raise AssertionError(f"{where}\nnon-standard JSON token {token}")
        json.loads(res.stdout, parse_constant=bad)
    return res


@CHEAP
@given(data=st.data())
def test_fuzz_grad_and_info(paths, data):
    args = data.draw(st.one_of(
        _args(st.just(["info"]), _opt("--json", st.just("")).map(lambda o: o[:1])),
        _args(st.just(["grad"]), _opt("--L", st.one_of(SMALL, INTS)), _opt("--d", st.one_of(SMALL, INTS)), _opt("--r", st.one_of(SMALL, INTS)),
              _opt("--adapt", TEXT), _opt("--attention", TEXT), _opt("--bound", NUMBERS), _opt("--beta", NUMBERS), _opt("--seed", INTS),
              _opt("--dtype", st.sampled_from(["float64", "float32", "float16", "int8", ""])),
              _opt("--device", st.sampled_from(["cpu", "cuda", "cuda:3", "tpu", "meta", "", "cpu:0"])), _opt("--block-size", INTS),
              st.sampled_from([[], ["--no-autograd"]]), st.sampled_from([[], ["--json"]])),
    ))
    _invoke(args)


@CHEAP
@given(data=st.data())
def test_fuzz_sweep_status_export_and_lists(paths, data):
    args = data.draw(st.one_of(
        _args(st.just(["sweep", "status"]), _path(paths).map(lambda p: [p]), st.sampled_from([[], ["--json"]])),
        _args(st.just(["sweep", "export"]), _path(paths).map(lambda p: [p]), _path(paths).map(lambda p: [p]),
              _opt("--sweep", st.sampled_from(["sq", "nosuch", ""])), st.sampled_from([[], ["--force"]])),
        _args(st.just(["check", "--list"]), st.sampled_from([[], ["--json"]])),
        _args(st.just(["figures", "--list"])),
        _args(st.just(["check"]), _opt("--claim", st.sampled_from(["no.such", "", "limits.", "LIMITS.RANK_COUNT"])), st.sampled_from([[], ["--json"]])),
        _args(st.just(["figures"]), st.sampled_from([["nope"], ["", CHEAP_FIGURE], ["nope", CHEAP_FIGURE]]), _opt("--out", _path(paths)),
              _opt("--from", _path(paths))),
    ))
    _invoke(args)


@COSTLY
@given(data=st.data())
def test_fuzz_costly_commands(paths, data):
    """check / reproduce / figures / sweep run / sweep norms with arguments that may be valid (then they really run)."""
    out = _path(paths, ["new_dir", "dir", "file", "under_file", "proc", "missing"])
    args = data.draw(st.one_of(
        _args(st.just(["check"]), st.sampled_from(CHEAP_CLAIMS).map(lambda c: ["--claim", c]), st.sampled_from([[], ["--json"]])),
        _args(st.just(["reproduce"]), out.map(lambda p: ["--out", p]), st.sampled_from(CHEAP_CLAIMS + ["no.such"]).map(lambda c: ["--claim", c]),
              st.sampled_from([CHEAP_FIGURE, "nope"]).map(lambda f: ["--figure", f]), _opt("--jobs", st.sampled_from(["1", "2", "0", "-3"])),
              _opt("--executor", EXECUTORS), _opt("--max-retries", INTS), _opt("--point-timeout", NUMBERS),
              st.sampled_from([[], ["--force"], ["--retry-failed"]])),
        _args(st.just(["figures", CHEAP_FIGURE]), out.map(lambda p: ["--out", p]), st.sampled_from([[], ["--force"]])),
        _args(st.just(["sweep", "run"]), _path(paths, ["toml", "bad_toml", "junk_toml", "missing_file", "dir"]).map(lambda p: [p]),
              _path(paths, ["store", "missing_file", "foreign_db", "garbage", "dir", "under_file"]).map(lambda p: ["--store", p]),
              _opt("--jobs", st.sampled_from(["1", "2", "0"])), _opt("--executor", EXECUTORS), _opt("--max-retries", INTS),
              _opt("--point-timeout", NUMBERS), st.sampled_from([[], ["--retry-failed"]])),
        _args(st.just(["sweep", "norms"]), _opt("--L", st.sampled_from(["8", "16", "0", "-4", "x"])), _opt("--gamma", NUMBERS),
              _opt("--kind", TEXT), _opt("--d", st.sampled_from(["1", "2", "4", "0", "-1"])), _opt("--degree", st.sampled_from(["0", "2", "4", "-1"])),
              _opt("--seeds", st.sampled_from(["1", "0", "2"])), _opt("--adapt", TEXT),
              _path(paths, ["store", "missing_file", "foreign_db", "garbage"]).map(lambda p: ["--store", p]),
              _opt("--out", _path(paths, ["new_csv", "new_parquet", "foreign_csv", "bad_suffix", "dir", "under_file"])),
              st.sampled_from([[], ["--force"]])),
    ))
    _invoke(args)


# -- issue 21, cases 8 and 9: every input error is exit 2 with one line naming the option as typed -------------------

def _one_line_exit_2(args: list[str], flag: str) -> str:
    """exit 2, one non-empty stderr line, naming ``flag`` as the user typed it, no traceback, no internal names."""
    res = runner.invoke(app, args)
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    where = f"lora-theory {' '.join(args)} -> exit {res.exit_code}\n{res.output[-2000:]}"
    assert res.exit_code == 2, where
    assert len(err) == 1 and flag in err[0], where
    assert "Traceback" not in res.output and "unexpected error" not in res.output, where
    for internal in ("n_batches:", "from:", "path:", "name:"):
        assert not err[0].startswith(f"error: {internal}"), where
    return err[0]


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue21")
    (root / "empty_module.toml").write_text('name = "x"\nfunction = ":f"\n[grid]\na = [1]\n')
    (root / "latin1.toml").write_bytes(b'name = "caf\xe9"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0]\n')
    (root / "sweep.toml").write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0, 2.0]\n')
    (root / "notamodel").mkdir()
    (root / "notamodel" / "weights.txt").write_text("not a model")
    store = root / "damaged.sqlite"
    res = runner.invoke(app, ["sweep", "run", str(root / "sweep.toml"), "--store", str(store), "--executor", "inprocess"])
    assert res.exit_code == 0, res.output
    with sqlite3.connect(store) as c:  # one row's parameters damaged (a torn write by another program, a bit flip)
        c.execute("UPDATE points SET params = '{\"x\": 1.0,' WHERE rowid = (SELECT MIN(rowid) FROM points)")
    return root


def test_case8_seed_beyond_64_bits():
    _one_line_exit_2(["grad", "--L", "8", "--d", "2", "--seed", str(2**64)], "--seed")
    _one_line_exit_2(["grad", "--L", "8", "--d", "2", "--seed", "99999999999999999999999"], "--seed")


def test_case8_bound_1e80_is_not_an_unexpected_error():
    """--bound 1e80: approx_plan raised OverflowError (exit 3); now the plan is finite (inf bytes) and the exact
    gradient runs (exit 0), or, for --method approx, the documented refusal (exit 2, one line)."""
    res = runner.invoke(app, ["grad", "--L", "8", "--d", "2", "--bound", "1e80", "--no-autograd", "--json"])
    assert res.exit_code == 0, res.output
    _one_line_exit_2(["grad", "--L", "8", "--d", "2", "--bound", "1e80", "--method", "approx"], "score range")


def test_case8_sweep_toml_with_an_empty_module_and_non_utf8(edge_files):
    _one_line_exit_2(["sweep", "run", str(edge_files / "empty_module.toml"), "--store", str(edge_files / "a.sqlite")], "function")
    line = _one_line_exit_2(["sweep", "run", str(edge_files / "latin1.toml"), "--store", str(edge_files / "b.sqlite")], "latin1.toml")
    assert "UTF-8" in line


def test_case8_regime_L_beyond_the_models_positions():
    _one_line_exit_2(["regime", "--L", "600", "--sequences", "1", "--no-figure"], "--L")


def test_case8_regime_model_folder_that_is_not_a_model(edge_files):
    _one_line_exit_2(["regime", "--model", str(edge_files / "notamodel"), "--L", "8", "--sequences", "1", "--no-figure"], "--model")


@pytest.mark.parametrize("r", ["0", "-3", "385"])
def test_case8_audit_lora_ga_rank(r):
    _one_line_exit_2(["audit", "lora-ga", "--r", r], "--r")


def test_case8_store_with_a_damaged_json_row(edge_files):
    """sweep export and sweep run raised JSONDecodeError (exit 3); now the store's error, exit 2, naming the store."""
    store = str(edge_files / "damaged.sqlite")
    _one_line_exit_2(["sweep", "export", store, str(edge_files / "out.csv")], "damaged row")
    _one_line_exit_2(["sweep", "run", str(edge_files / "sweep.toml"), "--store", store, "--executor", "inprocess"], "damaged row")


def test_case9_regime_figure_unwritable_is_refused_before_loading(monkeypatch):
    """--figure in a folder that does not exist: refused before the model is loaded (it measured every head first)."""
    import lora_theory.lora.pretrained as pretrained

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before --figure was validated")

    monkeypatch.setattr(pretrained, "load_minilm", no_load)
    line = _one_line_exit_2(["regime", "--L", "8", "--sequences", "1", "--figure", "/proc/lora-theory-nope/regime.png"], "--figure")
    assert ".tmp" not in line


def test_case9_messages_name_the_option_not_the_internal_argument(paths):
    _one_line_exit_2(["figures", CHEAP_FIGURE, "--from", str(paths["missing"])], "--from")
    _one_line_exit_2(["sweep", "status", str(paths["dir"])], "STORE")


EDGE_INTS = st.sampled_from(["9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
                             str(2**200), "0", "-1", "1"])
EDGE_FLOATS = st.sampled_from(["1e80", "1.7976931348623157e308", "2e308", "-0.0", "4.9e-324", "1e-320", "nan", "inf", "0x10", "1_0"])
ENCODINGS = st.sampled_from(["caf\xe9", "\u00e9\u00e8", "\x00", "\ufeffqv", "\u202eqv", "q\tv"])


@COSTLY
@given(data=st.data())
def test_fuzz_every_command_at_the_number_edges(paths, edge_files, data):
    """Every command and option with integers at the 64-bit edges, floats at the float64 edges and odd encodings
    (issue 21): a documented exit status and no traceback (``_invoke``), and never an "unexpected error" (exit 3) for a
    bad value. Examples: the profile's max_examples (ci: 15, derandomized; dev: 30; thorough: 300)."""
    toml = _path({**paths, "latin1": edge_files / "latin1.toml", "empty_module": edge_files / "empty_module.toml"},
                 ["toml", "bad_toml", "junk_toml", "latin1", "empty_module"])
    args = data.draw(st.one_of(
        _args(st.just(["grad", "--L", "8", "--d", "2", "--no-autograd"]), _opt("--seed", EDGE_INTS), _opt("--bound", EDGE_FLOATS),
              _opt("--beta", EDGE_FLOATS), _opt("--eps", EDGE_FLOATS), _opt("--r", EDGE_INTS), _opt("--block-size", EDGE_INTS),
              _opt("--adapt", ENCODINGS), _opt("--method", st.sampled_from(["exact", "approx", "auto", "\xe9"]))),
        _args(st.just(["audit", "lora-ga"]), st.sampled_from([["--r", "0"], ["--r", "-3"], ["--r", str(2**64)], ["--batches", "0"],
                                                               ["--alpha", "nan"], ["--alpha", "-1"], ["--batches", "9223372036854775808"]])),
        _args(st.just(["regime", "--sequences", "1", "--no-figure"]),
              st.sampled_from([["--L", "600"], ["--L", "2"], ["--L", str(2**64)], ["--eps", "inf"], ["--eps", "1e-320"], ["--dtype", "\xe9"],
                               ["--model", str(edge_files / "notamodel")], ["--sequences", "0"], ["--text", str(edge_files / "missing.txt")]])),
        _args(st.just(["sweep", "run"]), toml.map(lambda p: [p]), _opt("--jobs", EDGE_INTS), _opt("--max-retries", EDGE_INTS),
              _opt("--point-timeout", EDGE_FLOATS), st.just(["--store", str(edge_files / "fuzz.sqlite"), "--executor", "inprocess"])),
        _args(st.just(["sweep", "norms", "--L", "8"]), _opt("--gamma", EDGE_FLOATS), _opt("--seeds", EDGE_INTS), _opt("--d", EDGE_INTS),
              _opt("--degree", EDGE_INTS), st.just(["--store", str(edge_files / "norms.sqlite")])),
        _args(st.just(["check"]), st.sampled_from(CHEAP_CLAIMS).map(lambda c: ["--claim", c]), _opt("--jobs", EDGE_INTS)),
    ))
    res = _invoke(args)
    # exit 3 only for what is documented as 3 (a sweep point stored as failed), never an "unexpected error"
    assert "unexpected error" not in res.output, f"lora-theory {' '.join(args)} -> exit {res.exit_code}\n{res.output[-2000:]}"
