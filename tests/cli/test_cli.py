"""Tests for the lora-theory command line: commands, exit statuses (0 holds, 1 fails, 2 bad usage or input, 3 errored),
strict JSON, one-line errors without tracebacks (unless --debug), memory estimates before work, --force."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from typer.testing import CliRunner

from lora_theory.cli import app

runner = CliRunner()


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (what strict parsers such as jq and JavaScript do)."""
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=bad)


def one_line_error(res) -> str:
    """The error line of a failed command: exactly one line starting with "error:", and no traceback."""
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_info_json():
    res = runner.invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.output
    facts = json.loads(res.output)
    assert {"torch", "torch_threads", "cuda_available"} <= set(facts)


def test_grad_json():
    res = runner.invoke(app, ["grad", "--L", "64", "--d", "4", "--r", "2", "--adapt", "qkv", "--bound", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert abs(out["norms"]["Gamma"] - 2.0) < 1e-12
    assert max(out["max_rel_err"].values()) < 1e-10
    assert set(out["max_rel_err"]) == {"A_q", "B_q", "A_k", "B_k", "A_v", "B_v"}


def test_grad_bad_input_names_argument():
    res = runner.invoke(app, ["grad", "--L", "8", "--d", "4", "--r", "9"])
    assert res.exit_code != 0
    assert "r: expected an integer <= 4, got 9" in res.output


def test_check_one_claim_json():
    res = runner.invoke(app, ["check", "--claim", "limits.lemma3.2", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[0]["id"] == "limits.lemma3.2" and rows[0]["verdict"] == "holds"


def test_check_unknown_claim():
    res = runner.invoke(app, ["check", "--claim", "limits.nope"])
    assert res.exit_code != 0 and "limits.nope" in res.output


def test_figures_list_and_render(tmp_path):
    res = runner.invoke(app, ["figures", "--list"])
    assert res.exit_code == 0 and "limits_grad_closed_form" in res.output
    res = runner.invoke(app, ["figures", "limits_grad_closed_form", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "limits_grad_closed_form.png").stat().st_size > 1000
    res = runner.invoke(app, ["figures", "limits_grad_closed_form", "--out", str(tmp_path / "redraw"), "--from", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "redraw" / "limits_grad_closed_form.png").exists()


def test_sweep_norms_resumes(tmp_path):
    """sweep norms is an engine sweep: points are committed to --store and skipped on a re-run; --out exports."""
    out, store = tmp_path / "norms.csv", tmp_path / "norms.sqlite"
    args = ["sweep", "norms", "--L", "32", "--gamma", "0.5", "--gamma", "3", "--kind", "hard", "--store", str(store)]
    res = runner.invoke(app, args + ["--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "'done': 2" in res.output and len(out.read_text().strip().splitlines()) == 3  # header + 2 points
    res = runner.invoke(app, args + ["--gamma", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "'skipped': 2" in res.output and "'done': 1" in res.output  # only the new point was run
    assert len(out.read_text().strip().splitlines()) == 4
    res = runner.invoke(app, ["sweep", "norms", "--kind", "easy", "--store", str(store)])
    assert res.exit_code != 0 and "easy" in res.output


def test_sweep_run_status_export(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0, 2.0, -1.0]\n')
    store = tmp_path / "s.sqlite"
    res = runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"])
    assert res.exit_code == 3, res.output  # a point failed: "something errored" (was exit 0)
    assert "'done': 2" in res.output and "'failed': 1" in res.output
    res = runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"])
    assert "'skipped': 3" in res.output and res.exit_code == 3  # still a failed point in the sweep
    f.write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0, 2.0]\n')
    res = runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"])
    assert res.exit_code == 0, res.output  # this grid's points are all done
    res = runner.invoke(app, ["sweep", "status", str(store)])
    assert res.exit_code == 0 and "sq" in res.output
    res = runner.invoke(app, ["sweep", "export", str(store), str(tmp_path / "out.csv")])
    assert res.exit_code == 0 and (tmp_path / "out.csv").exists()
    res = runner.invoke(app, ["sweep", "status", str(tmp_path / "missing.sqlite")])
    assert res.exit_code != 0 and "missing" in res.output


# --- strict JSON, memory estimates, clean errors (issue 11, section 2) ---------------------------------------------


def test_grad_json_is_strict_when_gradients_overflow():
    """`grad --bound 1e6 --json` printed Infinity/NaN (not JSON); now null with the reason under "nonfinite"."""
    res = runner.invoke(app, ["grad", "--L", "32", "--d", "4", "--bound", "1e6", "--json"])
    assert res.exit_code == 0, res.output
    out = strict_json(res.stdout)
    assert out["nonfinite"] and all(v in ("inf", "-inf", "nan") for v in out["nonfinite"].values())
    for path in out["nonfinite"]:
        section, key = path.split(".")
        assert out[section][key] is None


def test_grad_refuses_sizes_that_cannot_fit_before_allocating():
    """`grad --d 100000` ended in a traceback from an 80 GB allocation; now exit 2 at once, naming --L / --d and the sizes."""
    res = runner.invoke(app, ["grad", "--L", "8", "--d", "100000"])
    assert res.exit_code == 2
    line = one_line_error(res)
    assert "d=100000" in line and "lower --L or --d" in line and "available" in line


def test_grad_skips_the_autograd_reference_that_cannot_fit(monkeypatch):
    """With little memory the dense reference (4 L^2 numbers) is skipped with a message; the exact gradients still come.

    Fails before the fix: the reference always ran (at L = 65536 it crashed starting a 34 GB allocation)."""
    import lora_theory._memory as mem

    monkeypatch.setattr(mem, "available_bytes", lambda: 40 * 2**20)  # 40 MiB: the reference at L = 1024 needs 32 MiB > 80% of it
    res = runner.invoke(app, ["grad", "--L", "1024", "--d", "4", "--json"])
    assert res.exit_code == 0, res.output
    out = strict_json(res.stdout)
    assert "needs about 32.2 MiB (4 L^2 numbers at L=1024)" in out["autograd_skipped"] and "max_rel_err" not in out and len(out["grad_norms"]) == 4
    res = runner.invoke(app, ["grad", "--L", "1024", "--d", "4"])
    assert res.exit_code == 0 and "autograd reference skipped" in " ".join(res.stdout.split())


def test_errors_name_the_option_and_tracebacks_need_debug(monkeypatch):
    res = runner.invoke(app, ["grad", "--L", "8", "--d", "4", "--r", "9"])
    assert res.exit_code == 2 and one_line_error(res) == "error: --r: expected an integer <= 4, got 9"
    res = runner.invoke(app, ["grad", "--dtype", "float16"])
    assert res.exit_code == 2 and "--dtype: expected one of float64, float32, got 'float16'" in one_line_error(res)
    res = runner.invoke(app, ["grad", "--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["grad", "--device", "tpu"])
    assert res.exit_code == 2 and "--device: expected" in one_line_error(res)

    import lora_theory

    def boom(*a, **k):
        raise RuntimeError("a bug in the code")

    monkeypatch.setattr(lora_theory, "exact_gradients", boom)
    res = runner.invoke(app, ["grad", "--L", "8", "--d", "4"])
    assert res.exit_code == 3 and one_line_error(res).startswith("error: RuntimeError: a bug in the code")
    res = runner.invoke(app, ["--debug", "grad", "--L", "8", "--d", "4"])
    assert res.exit_code == 3 and "Traceback" in res.stderr and "a bug in the code" in res.stderr


def test_unknown_options_are_usage_errors():
    for args in (["grad", "--nope"], ["check", "--claim"], ["sweep", "run"], ["no-such-command"], ["grad", "--L", "many"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "Traceback" not in res.output, args


# --- exit statuses of check and reproduce -------------------------------------------------------------------------


def _failing():
    from lora_theory.claims import get_claim

    return next(c for c in get_claim("limits.lemma3.2").controls if c.name == "scale_squared").apply()


def _crashing():
    from lora_theory.claims import patch

    def crash(*a, **k):
        raise RuntimeError("the chain rule crashed")

    return patch("lora_theory.limits.exact", "lora_chain", crash)


def test_check_exit_statuses():
    """0 holds, 1 fails (a corrupted chain rule), 3 a check crashed (was 1, like a failure)."""
    res = runner.invoke(app, ["check", "--claim", "limits.lemma3.2"])
    assert res.exit_code == 0, res.output
    with _failing():
        res = runner.invoke(app, ["check", "--claim", "limits.lemma3.2", "--json"])
    assert res.exit_code == 1 and strict_json(res.stdout)[0]["verdict"] == "fails"
    with _crashing():
        res = runner.invoke(app, ["check", "--claim", "limits.lemma3.2"])
    assert res.exit_code == 3 and "error" in res.stdout


def test_reproduce_exit_statuses_write_the_report_and_rerun_errored_checks(tmp_path):
    """A paper claim that fails is a finding: reproduce exits 0 and says so (was 1: the main job looked broken), 1 with
    --strict; 3 when a check errored, writing the report each time; the next invocation re-runs the errored check (was:
    cached forever) but not the finished ones."""
    args = ["reproduce", "--out", str(tmp_path), "--claim", "limits.lemma3.2", "--claim", "limits.rank_count", "--figure", "degree_vs_range",
            "--jobs", "1"]
    with _failing():
        res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = tmp_path / "report.md"
    assert "findings (claims of the papers or audits that fail): limits.lemma3.2" in report.read_text()
    res = runner.invoke(app, [*args, "--strict"])  # resumes: the stored verdict, now under the strict rule
    assert res.exit_code == 1, res.output
    assert "Exit status 1 (`--strict`)" in report.read_text()
    results = strict_json((tmp_path / "results.json").read_text())
    assert {c["id"]: c["verdict"] for c in results["claims"]} == {"limits.lemma3.2": "fails", "limits.rank_count": "holds"}

    out2 = tmp_path / "second"
    with _crashing():
        res = runner.invoke(app, [*args[:2], str(out2), *args[3:]])
    assert res.exit_code == 3, res.output
    assert "error: limits.lemma3.2" in (out2 / "report.md").read_text()
    from lora_theory.sweeps import ResultStore

    with ResultStore(out2 / "store.sqlite") as st:
        before = st.load("claims-quick").set_index("claim")
    res = runner.invoke(app, [*args[:2], str(out2), *args[3:]])  # the crash is gone: the errored check runs again
    assert res.exit_code == 0, res.output
    with ResultStore(out2 / "store.sqlite") as st:
        after = st.load("claims-quick").set_index("claim")
    assert after.loc["limits.lemma3.2", "verdict"] == "holds"
    assert after.loc["limits.rank_count", "_finished"] == before.loc["limits.rank_count", "_finished"]  # not redone


def test_reproduce_retry_failed_reruns_failed_figure_points(tmp_path, monkeypatch):
    """A figure whose study raised is a failed point: kept (exit 3) until --retry-failed re-runs it."""
    from lora_theory import report

    real = report.figure_point

    def broken(figure, quick):
        raise RuntimeError("study crashed")

    args = ["reproduce", "--out", str(tmp_path), "--claim", "limits.rank_count", "--figure", "degree_vs_range", "--jobs", "1"]  # in process: the patch
    monkeypatch.setattr(report, "figure_point", broken)
    res = runner.invoke(app, args)
    assert res.exit_code == 3 and "study crashed" in (tmp_path / "report.md").read_text()
    monkeypatch.setattr(report, "figure_point", real)
    res = runner.invoke(app, args)
    assert res.exit_code == 3  # a failed point stays failed without --retry-failed
    res = runner.invoke(app, [*args, "--retry-failed"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "figures" / "degree_vs_range.png").exists()


# --- outputs: never write into a file the toolkit did not create ----------------------------------------------------


def test_sweep_norms_out_refuses_an_unrelated_file_unless_force(tmp_path):
    """`sweep norms --out FILE` treated an unrelated CSV as its own (rows appended, or a traceback)."""
    out, store = tmp_path / "mine.csv", tmp_path / "n.sqlite"
    out.write_text("name,score\nalice,3\n")
    args = ["sweep", "norms", "--L", "32", "--gamma", "0.5", "--kind", "hard", "--store", str(store), "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "pass --force to overwrite it" in one_line_error(res)
    assert out.read_text() == "name,score\nalice,3\n" and not store.exists()  # nothing computed, nothing written
    res = runner.invoke(app, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert "_hash" in out.read_text().splitlines()[0]
    res = runner.invoke(app, [*args, "--gamma", "1"])  # ours now: overwritten without --force
    assert res.exit_code == 0 and len(out.read_text().strip().splitlines()) == 3


def test_sweep_export_unknown_sweep_is_an_error_and_creates_nothing(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0]\n')
    store = tmp_path / "s.sqlite"
    assert runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"]).exit_code == 0
    res = runner.invoke(app, ["sweep", "export", str(store), str(tmp_path / "x.csv"), "--sweep", "nosuch"])
    assert res.exit_code == 2 and "sweep: expected one of the store's sweeps ['sq'], got 'nosuch'" in one_line_error(res)
    assert not (tmp_path / "x.csv").exists()
    res = runner.invoke(app, ["sweep", "status", str(store), "--json"])
    assert res.exit_code == 0 and strict_json(res.stdout)[0]["points"] == 1


def test_reproduce_and_figures_refuse_foreign_files_before_computing(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    res = runner.invoke(app, ["reproduce", "--out", str(out), "--claim", "limits.rank_count", "--figure", "degree_vs_range"])
    assert res.exit_code == 2 and "report.md" in one_line_error(res)
    assert (out / "report.md").read_text() == "my notes" and not (out / "store.sqlite").exists()
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "degree_vs_range.png").write_bytes(b"my picture")
    res = runner.invoke(app, ["figures", "degree_vs_range", "--out", str(figs)])
    assert res.exit_code == 2 and "degree_vs_range.png" in one_line_error(res)
    assert (figs / "degree_vs_range.png").read_bytes() == b"my picture"
    res = runner.invoke(app, ["figures", "degree_vs_range", "--out", str(figs), "--force"])
    assert res.exit_code == 0 and (figs / "degree_vs_range.png").read_bytes() != b"my picture"
    res = runner.invoke(app, ["figures", "degree_vs_range", "--out", str(figs)])  # ours now
    assert res.exit_code == 0, res.output


def test_unwritable_out_and_read_only_store_are_bad_input(tmp_path, monkeypatch):
    """An --out that cannot be created, a folder that cannot be written and a read-only store: exit 2 with one line
    (were: tracebacks, and "not a readable SQLite store")."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["reproduce", "--out", str(blocker / "sub"), "--claim", "limits.rank_count"])
    assert res.exit_code == 2 and "--out: expected a folder that can be created" in one_line_error(res)
    res = runner.invoke(app, ["figures", "degree_vs_range", "--out", str(blocker)])
    assert res.exit_code == 2 and "--out: expected a folder, got the file" in one_line_error(res)
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro and mode & os.W_OK else real(p, mode, **k))
    res = runner.invoke(app, ["figures", "degree_vs_range", "--out", str(ro)])
    assert res.exit_code == 2 and "expected a writable folder" in one_line_error(res)
    f = tmp_path / "s.toml"
    f.write_text('name = "sq"\nfunction = "tests.sweeps.probes:sleepy_square"\n[grid]\nx = [1.0]\n')
    store = tmp_path / "s.sqlite"
    assert runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"]).exit_code == 0
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == store and mode & os.W_OK else real(p, mode, **k))
    res = runner.invoke(app, ["sweep", "run", str(f), "--store", str(store), "--executor", "inprocess"])
    assert res.exit_code == 2 and "expected a writable store" in one_line_error(res)
    res = runner.invoke(app, ["sweep", "status", str(store)])  # reading a read-only store is fine
    assert res.exit_code == 0 and "sq" in res.stdout


def test_check_without_claims_skips_the_fine_tuning_experiment_and_says_so(capsys):
    """`check` with no --claim runs every claim but the fine-tuning ones (tens of CPU-minutes) unless --experiments."""
    from lora_theory.claims import all_claims
    from lora_theory.cli import _default_claims

    ids = _default_claims(False)
    assert "lora_ga.speedup" not in ids and "limits.thm3.1" in ids
    assert set(ids) == {c.id for c in all_claims() if not c.experiment}
    assert "lora_ga.speedup" in capsys.readouterr().err
    assert set(_default_claims(True)) == {c.id for c in all_claims()}


# --- the real `lora-theory` executable (issue 22): exit status, progress, names, output folders ------------------------

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, timeout: float = 900, env: dict | None = None):
    """Run the installed `lora-theory` console script on this worktree's code (PYTHONPATH), not a terminal."""
    import shutil
    import subprocess

    exe = shutil.which("lora-theory")
    assert exe, "the lora-theory console script is not installed (pip install -e .)"
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p), "COLUMNS": "80",
                **(env or {})}
    return subprocess.run([exe, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_reproduce_exits_0_on_a_finding_shows_progress_and_strict_restores_1(tmp_path):
    """The README's main job with an audit that fails by design: exit 0, the finding in the summary; one plain progress
    line per finished item on stderr (not a terminal); --strict on the same folder (resumed, nothing recomputed) exits 1."""
    out = tmp_path / "res"
    args = ["reproduce", "--out", str(out), "--claim", "audit.peft_lora_ga", "--claim", "limits.rank_count", "--figure", "degree_vs_range"]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "findings (claims of the papers or audits that fail): audit.peft_lora_ga" in res.stdout
    assert "Exit status 0: the toolkit's own guarantees hold and every negative control was caught" in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("[")]
    assert any("claims audit.peft_lora_ga: fails" in ln for ln in lines) and any("figures degree_vs_range: done" in ln for ln in lines)
    assert any("controls audit.peft_lora_ga/toolkit_in_place_of_peft: holds, caught" in ln for ln in lines)
    n = 2 + 1 + len(__import__("lora_theory.claims", fromlist=["get_claim"]).get_claim("limits.rank_count").controls) + 1
    assert len(lines) == n and lines[-1].startswith(f"[{n}/{n} "), lines  # one line per item, counted against the total
    report = (out / "report.md").read_text()
    assert "Time: the work behind this report" in report and "this invocation" in report
    res = cli(*args, "--strict", cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-2000:]
    assert not [ln for ln in res.stderr.splitlines() if ln.startswith("[")]  # everything was stored: nothing re-ran


def test_check_list_prints_ids_in_full_at_80_columns_and_plain(tmp_path):
    """`check --list` at 80 columns cut the ids ("toolkit.poly_vs_random…"); now every id is whole on one line."""
    from lora_theory.claims import all_claims

    res = cli("check", "--list", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for c in all_claims():
        assert re.search(rf"(^|\s){re.escape(c.id)}(\s|$)", res.stdout, re.M), c.id
    assert "…" not in "".join(ln.split("│")[1] for ln in res.stdout.splitlines() if ln.count("│") > 1)
    res = cli("check", "--list", "--plain", cwd=tmp_path)
    assert [ln.split("\t")[0] for ln in res.stdout.splitlines()] == [c.id for c in all_claims()]
    res = cli("check", "--list", cwd=tmp_path, env={"COLUMNS": "30"})  # too narrow for a table: plain lines, ids whole
    assert [ln.split("\t")[0] for ln in res.stdout.splitlines()] == [c.id for c in all_claims()]


def test_misspelled_claim_and_figure_names_suggest_the_nearest(tmp_path):
    res = cli("check", "--claim", "limits.thm31", cwd=tmp_path)
    assert res.returncode == 2 and "did you mean 'limits.thm3.1'" in res.stderr and "Traceback" not in res.stderr
    res = cli("figures", "degree_vs_rang", cwd=tmp_path)
    assert res.returncode == 2 and "did you mean 'degree_vs_range'" in res.stderr
    res = cli("reproduce", "--claim", "toolkit.grad_blockd", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert res.returncode == 2 and "did you mean 'toolkit.grad_blocked'" in res.stderr and not (tmp_path / "r").exists()


def test_commands_write_only_under_out_default_a_fresh_folder(tmp_path):
    """`figures NAME` without --out writes into a fresh figures-DATE-TIME folder (was: ./figures, in the repository the
    committed figures); `regime --json` writes no regime.png unless --figure is given."""
    res = cli("figures", "degree_vs_range", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    made = [p for p in tmp_path.iterdir()]
    assert len(made) == 1 and made[0].name.startswith("figures-") and (made[0] / "degree_vs_range.png").exists()
    res = cli("regime", "--L", "12", "--sequences", "1", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [made[0].name]  # nothing new
    res = cli("regime", "--L", "12", "--sequences", "1", "--plain", "--figure", "r.png", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "r.png").exists() and res.stdout.splitlines()[0].split("\t")[0] == "0"


def test_grad_ctrl_c_says_it_does_not_resume(tmp_path):
    """Ctrl-C during a long `grad` said "what finished is stored; run the same command again to resume", untrue for grad.
    The plan is printed first (before the O(L^2 d) norms), so the interrupt lands inside the command."""
    import queue
    import shutil
    import signal
    import subprocess
    import threading

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([shutil.which("lora-theory"), "grad", "--L", "32768", "--d", "8", "--no-autograd"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        while not lines.get(timeout=300).startswith("plan:"):  # the plan is printed before a long run
            pass
    finally:
        proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, err
    assert "grad stores nothing and does not resume" in err and "run the same command again to resume" not in err and "Traceback" not in err


def test_row_progress_reports_blocks_of_the_exact_and_approximate_passes():
    """grad's progress is fed by the row-blocked loops themselves: every block of exact_gradients and approx_gradients
    reports, ending at L of L; the plain display prints a few lines, not one per block."""
    import io

    from rich.console import Console

    import lora_theory as lt
    from lora_theory._progress import listen
    from lora_theory.cli import RowProgress

    inst = lt.make_instance(512, 4, 2, bound=1.0)
    seen = []
    with listen(lambda what, done, total: seen.append((what, done, total))):
        lt.exact_gradients(inst, block_size=64)
        lt.approx_gradients(inst, eps=1e-3, block_size=128)
    exact = [s for s in seen if s[0] == "exact"]
    assert [d for _, d, _ in exact] == [*range(0, 512, 64), 512] and all(t == 512 for *_, t in exact)
    assert [d for w, d, _ in seen if w == "approx"][:4] == [0, 128, 256, 384]
    buf = io.StringIO()
    rows = RowProgress(out=Console(file=buf, width=200), live=False)
    rows._last_print = -10.0
    with rows, listen(rows.update):
        lt.exact_gradients(inst, block_size=16)
    text = buf.getvalue()
    assert "exact: 512/512 rows in 32 row blocks (100%)" in text and len(text.splitlines()) <= 12


def test_job_progress_plain_lines_and_estimate():
    import io

    from rich.console import Console

    from lora_theory.cli import JobProgress

    buf = io.StringIO()
    with JobProgress(Console(file=buf, width=200), live=False) as p:
        p.plan("claims", 2, 0)
        p.plan("controls", 3, 1)
        p.done("claims", "limits.x", "holds", 1.5)
        p.done("controls", "limits.x/a", "fails, caught", 0.2)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[2/5 ") and "left] claims limits.x: holds (1.5 s)" in lines[0]
    assert lines[1].startswith("[3/5 ") and "controls limits.x/a: fails, caught (0.2 s)" in lines[1]
