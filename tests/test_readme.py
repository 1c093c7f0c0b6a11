"""The README opens with exactly two set-up commands, and .ci/run runs the second one."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
