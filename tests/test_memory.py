"""lora_theory._memory: the peak-memory probe runs isolated from the caller's folder; available memory."""
from __future__ import annotations

import pytest

from lora_theory._memory import peak_memory_bytes


def test_probe_ignores_modules_in_the_working_folder(tmp_path, monkeypatch):
    """A user's inspect.py / json.py in the folder where lora-theory runs is never imported by the probe.

    Fails before the fix: the probe ran `python -c` in the current folder, so `import inspect` (inside torch) ran the
    user's file (here: it writes a marker and breaks the probe)."""
    marker = tmp_path / "imported.txt"
    for name in ("inspect", "json"):
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name}\\n')\nraise SystemExit('user {name}.py imported')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # even when the user's folder is on PYTHONPATH
    out = peak_memory_bytes("import torch", "x = torch.ones(2_000_000, dtype=torch.float64)")
    assert not marker.exists()
    assert out["peak_bytes"] > 8_000_000 and out["seconds"] >= 0  # 16 MB allocated: measured, not zero


def test_probe_failure_is_a_runtime_error_with_its_stderr():
    with pytest.raises(RuntimeError, match=r"(?s)memory probe failed .*ZeroDivisionError"):
        peak_memory_bytes("", "1 / 0")


def test_available_bytes_and_fmt():
    from lora_theory._memory import available_bytes, fmt_bytes

    avail = available_bytes()
    assert avail is None or 0 < avail < 1 << 60
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.5 KiB" and fmt_bytes(34 * 2**30) == "34 GiB"
