"""The README opens with exactly two set-up commands, and .ci/run runs the second one."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL)
    assert block and text.index(block.group(0)) < 200, "README must open with the command block"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "lora-theory reproduce" in cmds[0] and "pip install" in cmds[0]
    assert "pytest" in cmds[1] and "pip install" in cmds[1]
    for c in cmds:
        assert "torch==2.13.0" in c


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_python_blocks_run(tmp_path):
    """Every ```python block of the README runs as written (in a fresh interpreter, outside the repo)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    for code in blocks:
        res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_bash_blocks_run(tmp_path):
    """Every command of the README's bash blocks after the set-up block exits 0, in an empty folder.

    Substitutions, said here: the ``reproduce`` lines (the whole quick job, minutes) run on one claim and one
    figure instead, which still gives ``results/store.sqlite`` to the ``figures --from`` line; the toml
    block is written to ``norms.toml`` first. Fails when a documented command or flag stops working (seen:
    ``figures --from STORE`` after a quick reproduce).
    """
    import shlex

    text = (ROOT / "README.md").read_text()
    (tmp_path / "norms.toml").write_text(re.search(r"```toml\n(.*?)```", text, re.DOTALL).group(1))
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)[1:]  # the first block is the set-up
    cmds = [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines()]
    cmds = [c for c in cmds if c]
    assert any(c.startswith("lora-theory reproduce") for c in cmds) and any("--from results/store.sqlite" in c for c in cmds)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    for c in cmds:
        argv = shlex.split(c)
        if argv[:2] == ["lora-theory", "reproduce"]:
            argv = [*argv, "--claim", "limits.lemma3.2", "--figure", "degree_vs_range", "--no-controls"]
        if argv[0] == "lora-theory":
            argv = [sys.executable, "-m", "lora_theory", *argv[1:]]
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{c}: exit {res.returncode}\n{res.stderr[-2000:]}"


def test_readme_documents_exit_statuses_and_the_users_own_sweep():
    """The exit-status table says that a paper or audit claim that fails is a finding (exit 0) and --strict makes it 1;
    the "Your own sweep" section names everything a user needed the source for (issue 22)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Exit statuses"):]
    table = table[:table.index("\n\n", table.index("| 130"))]
    assert "every `toolkit.*` claim holds, every negative control was caught" in table and "--strict" in table and "findings" in table
    own = text[text.index("## Your own sweep"):text.index("## Command line")]
    for name in ("degree=", 'on_invalid="flag"', "hard_instance(", "bound=", "info.times", "info.reason", "info.error_bound", "absolute",
                 "relative", 'norm_bounds(inst)["R"]', "Cauchy-Schwarz", "warm-up", "(385, 4)", "examples/gamma_sweep.py"):
        assert name in own, name


def test_readme_commands_never_write_into_tracked_files():
    """No README command overwrites files of this repository: every --out / --csv / --figure / --store target is not
    tracked by git, and no command needs --force (`figures ... --out figures --force` overwrote three committed files)."""
    import shlex

    text = (ROOT / "README.md").read_text()
    cmds = [ln.split("#")[0].strip() for b in re.findall(r"```bash\n(.*?)```", text, re.DOTALL) for ln in b.splitlines()]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    tops = {t.split("/")[0] for t in tracked}
    for c in filter(None, cmds):
        argv = shlex.split(c)
        assert "--force" not in argv, c
        for flag in ("--out", "--csv", "--figure", "--store"):
            if flag in argv:
                target = argv[argv.index(flag) + 1].rstrip("/")
                assert target not in tracked and target.split("/")[0] not in tops, (c, target)


def test_example_gamma_sweep_runs_and_shows_the_explosion(tmp_path):
    """examples/gamma_sweep.py runs as documented (small sizes) and, at a fixed degree, its error grows with Gamma by
    orders of magnitude on random and hard instances, flagged invalid instead of raising."""
    import pandas as pd

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "gamma_sweep.py"), "--L", "128", "--gamma", "0.5", "--gamma", "3",
                          "--degree", "6", "--out", str(tmp_path / "sweep")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_csv(tmp_path / "sweep" / "gamma_sweep.csv")
    assert (tmp_path / "sweep" / "gamma_sweep.png").stat().st_size > 1000
    for kind in ("random", "hard"):
        part = df[df.kind == kind].set_index("gamma")
        assert part.rel_err[3.0] > 1e3 * part.rel_err[0.5], part
        assert bool(part.valid[0.5]) and not bool(part.valid[3.0]) and isinstance(part.reason[3.0], str)
    assert (df.R_covered >= df.R_true - 1e-9).all()  # the plan's Cauchy-Schwarz R never below the true range
